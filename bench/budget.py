"""Budget benchmark: the per-call budget check, and the budget reports at 10k and 1M ledger rows.

    .venv/bin/python bench/budget.py                  # ~5 min on a 2-core machine
    .venv/bin/python bench/budget.py --calls 5000 --requests 200 --rows 10000,1000000

Like the others it uses bench/_common.py: it creates its own PostgreSQL database
(``mcc_bench_<random>``, migrated with ``flask --app wsgi db upgrade``, dropped at the end),
uses database 11 of the machine's Redis (refusing to run if someone else holds it; flushed before
and after), starts the Procfile ``web:`` line, and cleans up on exit, Ctrl-C or SIGTERM.

1. Budget check latency per LLM call, in-process against real Redis: ``acquire_llm_call`` with 3
   covering block limits (global, project, agent; the reservation is one Lua script), then
   ``settle_budget`` (one Lua script), then ``release_llm_call``; next to one ``PING`` measured in
   the same loop (same connection pool, same moment).
2. The reports over HTTP (one keep-alive client, requests interleaved round-robin): summary,
   by-project and by-agent (default: this month; and over the whole year), timeline (a year by
   day), analytics/agents; with ``/healthz`` (HTTP floor) and ``/auth/me`` (auth + rate limiter +
   user lookup: the floor of any API call) measured in the same rounds. At each ledger size the ledger is bulk
   loaded with INSERT ... SELECT FROM generate_series (365 days, 20 projects, 100 agents) and
   ``cost_daily`` is rebuilt from it with one INSERT ... SELECT ... GROUP BY, so the rollup the
   reports read is exactly the ledger summed per day, project and agent.

Progress goes to stderr; a table and then one JSON line (every figure) go to stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import redis as redis_lib
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (REDIS_BASE_URL, VENV_BIN, free_port, log, machine, pg_connect,  # noqa: E402
                           throwaway_database)
from bench._common import REDIS_LOCK_KEY as LOCK_KEY  # noqa: E402
from bench._common import summary_ms as stats_ms  # noqa: E402

REDIS_DB = 11
ADMIN_USER, ADMIN_PASSWORD = "budgetbench", "bench-password-123"
PROJECTS, AGENTS = 20, 100
SONNET = "anthropic/claude-3.5-sonnet"


@contextlib.contextmanager
def redis_db():
    url = f"{REDIS_BASE_URL}/{REDIS_DB}"
    client = redis_lib.Redis.from_url(url)
    mine = f"budget-bench-{uuid.uuid4().hex}"
    if not client.set(LOCK_KEY, mine, nx=True, ex=3600):
        raise SystemExit(f"Redis database {REDIS_DB} is held by someone else ({LOCK_KEY}="
                         f"{client.get(LOCK_KEY)!r}); not flushing it. Try again later.")
    client.flushdb()
    client.set(LOCK_KEY, mine, ex=3600)
    log(f"using Redis database {REDIS_DB} (flushed)")
    try:
        yield url
    finally:
        if client.get(LOCK_KEY) == mine.encode():
            client.flushdb()
            log(f"flushed Redis database {REDIS_DB}")
        client.close()


@contextlib.contextmanager
def web_process(env: dict, log_path: Path):
    command = next(line.split(":", 1)[1].strip() for line in (ROOT / "Procfile").read_text().splitlines()
                   if line.startswith("web:"))
    port = free_port()
    out = open(log_path, "wb")
    proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **env, "PORT": str(port),
                                 "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web process did not start:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        log(f"web up on {base}: {command}")
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this script started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        out.close()


# --- seed ------------------------------------------------------------------------------------------

def seed(app) -> dict:
    """An admin, 20 projects of 5 agents, limits of every scope, and 5,000 finished tasks."""
    from mcc.extensions import db
    from mcc.models.agent import Agent
    from mcc.models.project import Project
    from mcc.services import budget
    from mcc.services.users import create_user

    with app.app_context():
        create_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        projects = [Project(name=f"Project {i:02d}", github_repo=f"bench/budget-{i:02d}", is_active=True)
                    for i in range(PROJECTS)]
        db.session.add_all(projects)
        db.session.flush()
        agents = [Agent(project_id=projects[i % PROJECTS].id, name=f"Agent {i:03d}",
                        type=("orchestrator", "architect", "coder", "tester", "reviewer")[i // PROJECTS],
                        model=SONNET, temperature=0.2, max_tokens=4096) for i in range(AGENTS)]
        db.session.add_all(agents)
        db.session.flush()
        limits = []

        def limit(name, scope_type, scope_id, amount, period, action="warn"):
            limits.append(budget.create_limit({"name": name, "scope_type": scope_type, "scope_id": scope_id,
                                               "amount_usd": Decimal(amount), "period": period,
                                               "alert_threshold": 0.8, "action_on_exceed": action}))

        for period, amount in (("daily", "400"), ("weekly", "2500"), ("monthly", "10000")):
            limit(f"global {period}", "global", None, amount, period)
        for i, project in enumerate(projects):
            limit(f"{project.name} daily", "project", project.id, "20" if i % 2 else "500", "daily")
        for agent in agents[:20]:
            limit(f"{agent.name} monthly", "agent", agent.id, "50", "monthly", "block")
        db.session.commit()
        db.session.execute(db.text("""
            INSERT INTO tasks (id, project_id, title, status, priority, assigned_agent_id, progress, attempts,
                               created_at, updated_at)
            SELECT gen_random_uuid(), a.project_id, 'task ' || g,
                   (ARRAY['completed', 'completed', 'completed', 'failed', 'in_progress'])[1 + g % 5], 'medium',
                   a.id, 0, 0, now(), now()
            FROM generate_series(1, 5000) g
            JOIN (SELECT id, project_id, row_number() OVER (ORDER BY name) - 1 AS idx FROM agents) a
              ON a.idx = g % :agents"""), {"agents": AGENTS})
        db.session.commit()
        return {"projects": [p.id for p in projects], "agents": [a.id for a in agents], "limits": len(limits)}


def load_ledger(database_url: str, rows: int, offset: int) -> dict:
    """Append ``rows`` ledger rows over the last 365 days, then rebuild cost_daily from the ledger."""
    conn = pg_connect(database_url)
    timings = {}
    with conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")  # skip FK triggers: the ids are valid
        cur.execute("SELECT setseed(%s)", (0.42 if offset == 0 else 0.24,))
        started = time.monotonic()
        # Agents are not equally busy (idx skewed towards 0); calls are spread over the year,
        # somewhat denser lately; every other call is the first of a turn (an agent reply).
        cur.execute("""
            WITH a AS (SELECT id, project_id, row_number() OVER (ORDER BY name) - 1 AS idx FROM agents),
                 g AS (SELECT n, floor(power(random(), 1.5) * %(agents)s)::int AS idx,
                              now() - power(random(), 1.2) * interval '365 days' AS at,
                              200 + floor(random() * 8000)::int AS tin, 50 + floor(random() * 2000)::int AS tout
                       FROM generate_series(%(first)s, %(last)s) n)
            INSERT INTO cost_ledger (id, turn_id, attempt, call_index, project_id, agent_id, conversation_id,
                                     task_id, model, tokens_in, tokens_out, cost_usd, price_known, cost_source,
                                     simulated, created_at)
            SELECT gen_random_uuid(), NULL, 1, n %% 2, a.project_id, a.id, NULL, NULL, %(model)s, g.tin, g.tout,
                   round((g.tin * 3 + g.tout * 15) / 1000000.0, 6), true, 'price_table', false, g.at
            FROM g JOIN a ON a.idx = g.idx""",
                    {"agents": AGENTS, "first": offset + 1, "last": offset + rows, "model": SONNET})
        timings["ledger_insert_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        cur.execute("TRUNCATE cost_daily")
        cur.execute("""
            INSERT INTO cost_daily (day, project_id, agent_id, cost_usd, tokens_in, tokens_out, calls, messages)
            SELECT (created_at AT TIME ZONE 'UTC')::date, project_id, agent_id, sum(cost_usd), sum(tokens_in),
                   sum(tokens_out), count(*), count(*) FILTER (WHERE call_index = 0)
            FROM cost_ledger GROUP BY 1, 2, 3""")
        timings["rollup_build_s"] = round(time.monotonic() - started, 1)
        cur.execute("SET session_replication_role = DEFAULT")
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        started = time.monotonic()
        cur.execute("VACUUM ANALYZE cost_ledger")
        cur.execute("VACUUM ANALYZE cost_daily")
        timings["analyze_s"] = round(time.monotonic() - started, 1)
        cur.execute("SELECT count(*), sum(cost_usd) FROM cost_ledger")
        ledger_rows, ledger_sum = cur.fetchone()
        cur.execute("SELECT count(*), sum(cost_usd), sum(calls) FROM cost_daily")
        rollup_rows, rollup_sum, rollup_calls = cur.fetchone()
        cur.execute("SELECT pg_size_pretty(pg_total_relation_size('cost_ledger')), "
                    "pg_size_pretty(pg_total_relation_size('cost_daily'))")
        ledger_size, rollup_size = cur.fetchone()
    conn.close()
    assert ledger_sum == rollup_sum and ledger_rows == rollup_calls, (ledger_sum, rollup_sum)
    return {"ledger_rows": ledger_rows, "ledger_sum_usd": float(ledger_sum), "rollup_rows": rollup_rows,
            "ledger_size": ledger_size, "rollup_size": rollup_size, **timings}


# --- 1. the budget check per call ---------------------------------------------------------------------

def bench_check(app, ids: dict, calls: int) -> dict:
    from mcc.extensions import db
    from mcc.redis_store import get_redis
    from mcc.services import budget, emergency
    from mcc.runtime import gate

    with app.app_context():
        # The last agent: no seeded block limit covers it, only the three added here.
        agent_id = ids["agents"][-1]
        project_id = ids["projects"][(AGENTS - 1) % PROJECTS]
        for scope_type, scope_id in (("global", None), ("project", project_id), ("agent", agent_id)):
            budget.create_limit({"name": f"check {scope_type}", "scope_type": scope_type, "scope_id": scope_id,
                                 "amount_usd": Decimal("90000000"), "period": "daily", "alert_threshold": 1,
                                 "action_on_exceed": "block"})
        db.session.commit()
        messages = [{"role": "system", "content": "You are a coder. " * 200},
                    {"role": "user", "content": "Please fix the failing test. " * 40}]
        reservation, checks = budget.plan_reservation(project_id, agent_id, SONNET, messages, 4096)
        block_checks = [(key, limit, amount) for key, limit, amount, _, _ in checks]
        covering = [key for key, _, _, _, _ in checks]
        assert len(block_checks) == 3, block_checks
        # The rebuild callbacks read the rollup; they run once per counter (the first call).
        rebuild = [lambda i=i: budget.to_micro(budget.spent_from_rollup(checks[i][3], checks[i][4]))
                   for i in range(len(checks))]
        redis = get_redis()
        cost = reservation.amount_micro // 3
        samples = {"ping": [], "acquire": [], "settle": [], "release": [], "per_call": []}
        for n in range(calls + 200):
            t0 = time.perf_counter()
            redis.ping()
            t1 = time.perf_counter()
            call = gate.acquire_llm_call(emergency.state_from_database, block_checks, lambda i: rebuild[i]())
            t2 = time.perf_counter()
            gate.settle_budget(reservation.keys, reservation.amount_micro, covering, cost,
                               lambda i: rebuild[i]())
            t3 = time.perf_counter()
            gate.release_llm_call(call)
            t4 = time.perf_counter()
            if n >= 200:  # warm-up: counters rebuilt, connections pooled
                samples["ping"].append(t1 - t0)
                samples["acquire"].append(t2 - t1)
                samples["settle"].append(t3 - t2)
                samples["release"].append(t4 - t3)
                samples["per_call"].append(t4 - t1)
        # The database side of the same call (not Redis): plan_reservation reads the covering limits.
        plan = []
        for _ in range(min(calls, 1000)):
            t0 = time.perf_counter()
            budget.plan_reservation(project_id, agent_id, SONNET, messages, 4096)
            plan.append(time.perf_counter() - t0)
        db.session.rollback()
        spent = redis.hget(checks[0][0], "spent")
        result = {name: stats_ms(values) for name, values in samples.items()}
        result["plan_reservation (DB)"] = stats_ms(plan)
        result["block_limits_checked"] = len(block_checks)
        result["counter_spent_micro"] = int(spent)
        # Clean up so the reports see only the bulk-loaded data.
        for limit in [c[3] for c in checks if c[3].name.startswith("check ")]:
            db.session.delete(db.session.get(type(limit), limit.id))
        db.session.commit()
        return result


# --- 2. the reports over HTTP ----------------------------------------------------------------------

def report_paths(today: date) -> dict:
    year_ago = today - timedelta(days=364)
    year = f"start_date={year_ago.isoformat()}&end_date={today.isoformat()}"
    return {
        "/healthz (floor)": "/healthz",
        "/auth/me (API floor)": "/api/v1/auth/me",
        "summary": "/api/v1/budget/summary",
        "by-project (month)": "/api/v1/budget/by-project",
        "by-project (year)": f"/api/v1/budget/by-project?{year}",
        "by-agent (month)": "/api/v1/budget/by-agent",
        "by-agent (year)": f"/api/v1/budget/by-agent?{year}&limit=100",
        "timeline (year by day)": f"/api/v1/budget/timeline?{year}&granularity=day",
        "analytics/agents": "/api/v1/analytics/agents?limit=100",
    }


def bench_reports(base: str, requests_per_path: int) -> dict:
    session = requests.Session()
    token = session.post(f"{base}/api/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                         timeout=10).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    paths = report_paths(datetime.now(timezone.utc).date())
    samples = {name: [] for name in paths}
    sizes = {}
    for round_ in range(requests_per_path + 10):
        for name, path in paths.items():
            t0 = time.perf_counter()
            response = session.get(f"{base}{path}", timeout=30)
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            if round_ >= 10:  # warm-up
                samples[name].append(elapsed)
            sizes[name] = len(response.content)
    return {name: {**stats_ms(values), "bytes": sizes[name]} for name, values in samples.items()}


def check_numbers(base: str, database_url: str) -> dict:
    """The reports agree with the ledger itself (summed here in SQL)."""
    session = requests.Session()
    token = session.post(f"{base}/api/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                         timeout=10).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    today = datetime.now(timezone.utc).date()
    year_ago = today - timedelta(days=364)
    timeline = session.get(f"{base}/api/v1/budget/timeline?start_date={year_ago}&end_date={today}",
                           timeout=30).json()["points"]
    month = session.get(f"{base}/api/v1/budget/summary", timeout=30).json()["month"]["spent"]
    conn = pg_connect(database_url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(cost_usd), 0) FROM cost_ledger WHERE (created_at AT TIME ZONE 'UTC')::date "
                    "BETWEEN %s AND %s", (year_ago, today))
        year_sum = cur.fetchone()[0]
        cur.execute("SELECT coalesce(sum(cost_usd), 0) FROM cost_ledger WHERE (created_at AT TIME ZONE 'UTC')::date "
                    ">= %s", (today.replace(day=1),))
        month_sum = cur.fetchone()[0]
    conn.close()
    timeline_sum = sum(Decimal(str(p["spent"])) for p in timeline)
    assert abs(timeline_sum - year_sum) < Decimal("0.001") * len(timeline), (timeline_sum, year_sum)
    assert abs(Decimal(str(month)) - month_sum) < Decimal("0.000001"), (month, month_sum)
    return {"timeline_points": len(timeline), "timeline_sum": float(timeline_sum), "ledger_year_sum": float(year_sum),
            "summary_month": month, "ledger_month_sum": float(month_sum)}


# --- main ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="budget checks measured (after 200 warm-up)")
    parser.add_argument("--requests", type=int, default=200, help="requests per report per ledger size")
    parser.add_argument("--rows", default="10000,1000000", help="ledger sizes, ascending, comma-separated")
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_sigterm)

    info = machine()
    log(f"machine: {info}")
    results: dict = {"machine": info, "command": " ".join([Path(sys.executable).name, *sys.argv]), "reports": {}}
    workdir = Path(tempfile.mkdtemp(prefix="mcc-budget-bench-"))
    try:
        with throwaway_database() as database_url, redis_db() as redis_url:
            env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "MCC_ENV": "production",
                   "MCC_SECRET_KEY": secrets.token_urlsafe(48), "MCC_INSTANCE_PATH": str(workdir),
                   "MCC_RATE_LIMIT": "10000000 per minute", "MCC_ACCESS_TOKEN_SECONDS": "7200",
                   "MCC_LOG_LEVEL": "WARNING"}
            subprocess.run([f"{VENV_BIN}/flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, check=True,
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            from mcc import create_app

            app = create_app(env=env)
            ids = seed(app)
            log(f"seeded {PROJECTS} projects, {AGENTS} agents, {ids['limits']} limits, 5000 tasks")

            log(f"1. budget check: {args.calls} calls")
            results["check"] = bench_check(app, ids, args.calls)

            with web_process(env, workdir / "web.log") as base:
                loaded = 0
                for size in sizes:
                    log(f"2. loading the ledger up to {size:,} rows")
                    data = load_ledger(database_url, size - loaded, loaded)
                    loaded = size
                    log(f"   {data}")
                    numbers = check_numbers(base, database_url)
                    log(f"   reports match the ledger: {numbers}")
                    log(f"   {args.requests} requests per report")
                    results["reports"][str(size)] = {"data": data, "numbers": numbers,
                                                     "latency": bench_reports(base, args.requests)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n1. Budget check per LLM call (in-process, real Redis), ms")
    print(f"{'step':<26}{'p50':>9}{'p99':>9}{'mean':>9}")
    for name, value in results["check"].items():
        if isinstance(value, dict):
            print(f"{name:<26}{value['p50']:>9.3f}{value['p99']:>9.3f}{value['mean']:>9.3f}")
    print("\n2. Reports over HTTP, ms")
    header = "".join(f"{f'{int(s):,} p50':>14}{'p99':>9}" for s in results["reports"])
    print(f"{'report':<26}{header}")
    for name in report_paths(date.today()):
        row = "".join(f"{r['latency'][name]['p50']:>14.1f}{r['latency'][name]['p99']:>9.1f}"
                      for r in results["reports"].values())
        print(f"{name:<26}{row}")
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
