"""Orchestration overhead of one agent turn, next to its floor, and turns per second.

    .venv/bin/python bench/turn_overhead.py [--turns 100] [--throughput-turns 200] [--conversations 20]

What it measures, all in one run against real processes (the Procfile's `web:` and `worker:`):

* turn latency: a person's message POSTed over REST -> the agent's reply arrives as a `message`
  event on a Socket.IO client, with the LLM stub answering at once (so what remains is MCC:
  HTTP, commit, RQ enqueue, worker fork, turn bookkeeping, the stub round trip, ledger, publish
  through the Socket.IO Redis queue, emit). p50/p99 over --turns sequential turns.
* the floor of that path, measured in the same run, interleaved with the turns: the same path
  with no product logic (bench/floor_server.py `POST /turn`): POST -> insert -> commit -> RQ job
  -> insert -> commit -> Socket.IO emit through the Redis queue -> the client's `message` event,
  on a gunicorn process of the Procfile's line, with the job module preloaded in the worker, on
  two workers: a forking `rq.Worker` (the issue's floor) and the greenlet pool MCC's worker runs
  (bench/floor_worker.py). Ratios are turn p50 / floor p50 of the same run.
* throughput: --throughput-turns turns spread over --conversations conversations (one agent
  each), with 1 and then 2 workers: turns per second from the first POST to the last reply event.

Self-contained: its own database (created, migrated, dropped), Redis database 12 (flushed before
and after; refuses to run while a test run holds it), its own LLM stub on loopback.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis as redis_lib  # noqa: E402
import requests  # noqa: E402
import socketio  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench._common import WebProcess, with_app  # noqa: E402
from bench.floor_jobs import TABLE_DDL, database_url  # noqa: E402
from tests.live import Process, procfile, start_web  # noqa: E402
from tests.stubs.llm import LLMStub, Step  # noqa: E402

ADMIN_DB_URL = os.environ.get("MCC_BENCH_ADMIN_DB", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MCC_BENCH_REDIS", "redis://127.0.0.1:6379") + "/12"
LOCK_KEY = "mcc-test-run-lock"  # what test runs use to claim a Redis database
PASSWORD = "bench-password-1234"


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def ms(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(pct(values, 50) * 1000, 1), "p99_ms": round(pct(values, 99) * 1000, 1),
            "mean_ms": round(statistics.mean(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


# --- resources ----------------------------------------------------------------------------------

class Resources:
    """A throwaway database and Redis database 12, released whatever happens."""

    def __init__(self):
        url = make_url(ADMIN_DB_URL)
        self.admin = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                                      password=url.password, dbname=url.database or "postgres")
        self.admin.autocommit = True
        self.db_name = f"mcc_bench_{uuid.uuid4().hex[:10]}"
        self.redis = redis_lib.Redis.from_url(REDIS_URL)
        if self.redis.exists(LOCK_KEY) and self.redis.get(LOCK_KEY) != b"bench":
            raise SystemExit(f"{REDIS_URL} is claimed by a test run; try again when it is done")
        self.redis.flushdb()
        self.redis.set(LOCK_KEY, "bench", ex=3600)  # keeps test runs off this database meanwhile
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.db_name}"')
        self.instance = tempfile.mkdtemp(prefix="mcc-bench-")
        self.env = {
            "DATABASE_URL": url.set(database=self.db_name).render_as_string(hide_password=False),
            "REDIS_URL": REDIS_URL, "MCC_SECRET_KEY": "bench-" + uuid.uuid4().hex * 2,
            "MCC_INSTANCE_PATH": self.instance, "MCC_ENV": "development", "MCC_LOG_LEVEL": "INFO",
            "MCC_RATE_LIMIT": "1000000 per minute", "MCC_LOGIN_RATE_LIMIT": "1000 per minute",
        }

    def close(self):
        self.redis.flushdb()
        with self.admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        self.admin.close()


def setup_data(env: dict, conversations: int) -> list[dict]:
    """Migrate, create an operator and ``conversations`` conversations with one agent each."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from flask_migrate import upgrade

        from mcc import create_app
        from mcc.extensions import db
        from mcc.services.agents import create_agent
        from mcc.services.conversations import create_conversation
        from mcc.services.projects import create_project
        from mcc.services.users import create_user

        app = create_app({}, env=env)
        with app.app_context():
            upgrade()
            create_user("bench", PASSWORD, "operator")
            project = create_project({"name": "Bench", "github_repo": "octo/bench"})
            teams = []
            for i in range(conversations):
                agent = create_agent(project.id, {"name": f"Agent{i}", "type": "coder", "model_config": {
                    "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})
                conversation = create_conversation(project.id, None, {"title": f"Bench {i}", "agent_ids": [agent.id]})
                teams.append({"project": str(project.id), "conversation": str(conversation.id)})
            db.session.commit()
            db.engine.dispose()
        return teams
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- the socket side ------------------------------------------------------------------------------

class Replies:
    """A Socket.IO client in every conversation room; signals each agent `message` event."""

    def __init__(self, base: str, token: str | None, conversations: list[str], join_event: str = "join_conversation",
                 join_key: str = "conversation_id", author_key: str = "author_type"):
        self.client = socketio.Client(reconnection=False)
        self.cond = threading.Condition()
        self.count = 0
        self.last_at = 0.0
        self.author_key = author_key
        self.client.on("message", self._on_message)
        self.client.connect(base, transports=["websocket"], auth={"token": token} if token else None, wait_timeout=10)
        for conversation in conversations:
            assert self.client.call(join_event, {join_key: conversation}, timeout=10)["ok"]

    def _on_message(self, data):
        if data.get(self.author_key) == "agent":
            with self.cond:
                self.count += 1
                self.last_at = time.perf_counter()
                self.cond.notify_all()

    def wait_count(self, target: int, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.count < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"only {self.count} of {target} replies within {timeout} s")
                self.cond.wait(left)
            return self.last_at

    def close(self):
        self.client.disconnect()


# --- measurements ---------------------------------------------------------------------------------

def turn_latencies(session, base, team, replies: Replies, n: int) -> list[float]:
    url = f"{base}/api/v1/projects/{team['project']}/conversations/{team['conversation']}/messages"
    out = []
    for i in range(n):
        expected = replies.count + 1
        started = time.perf_counter()
        response = session.post(url, json={"content": f"turn {i}"}, timeout=10)
        assert response.status_code == 201, response.text
        arrived = replies.wait_count(expected, timeout=30)
        out.append(arrived - started)
    return out


def floor_latencies(floor_base: str, room: str, replies: Replies, n: int) -> list[float]:
    """The floor's round trips: POST /turn -> insert, RQ job on the room's worker -> insert, emit ->
    this client's `message` event."""
    out = []
    for i in range(n):
        expected = replies.count + 1
        started = time.perf_counter()
        response = requests.post(f"{floor_base}/turn", json={"room": room, "queue": room, "content": f"turn {i}"},
                                 timeout=10)
        assert response.status_code == 201, response.text
        arrived = replies.wait_count(expected, timeout=30)
        out.append(arrived - started)
    return out


class Floor:
    """The floor server and its two workers (a forking rq.Worker, the greenlet pool), one queue each."""

    KINDS = ("fork", "pool")

    def __init__(self, env: dict, workdir: Path, processes: list):
        import sqlalchemy

        engine = sqlalchemy.create_engine(database_url(env["DATABASE_URL"]))
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(TABLE_DDL))
        engine.dispose()
        floor_env = {**env, "MCC_SOCKETIO_ASYNC_MODE": "gevent"}
        self.web = WebProcess(with_app(procfile()["web"], "bench.floor_server:app"), floor_env,
                              workdir / "floor-web.log", "floor")
        processes.append(self.web)
        for kind in self.KINDS:
            processes.append(Process(f"python bench/floor_worker.py {kind} floor-{kind}", floor_env,
                                     workdir / f"floor-worker-{kind}.log"))
        self.replies = Replies(self.web.base, None, [f"floor-{kind}" for kind in self.KINDS], join_event="join",
                               join_key="room", author_key="author")

    def latencies(self, kind: str, n: int) -> list[float]:
        return floor_latencies(self.web.base, f"floor-{kind}", self.replies, n)


def throughput(session, base, teams, replies: Replies, total: int) -> dict:
    per = total // len(teams)
    urls = [f"{base}/api/v1/projects/{t['project']}/conversations/{t['conversation']}/messages" for t in teams]
    jobs = [urls[c] for _ in range(per) for c in range(len(teams))]  # round robin over conversations
    target = replies.count + len(jobs)
    started = time.perf_counter()

    def post(url):
        response = session.post(url, json={"content": "throughput"}, timeout=30)
        assert response.status_code == 201, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(post, jobs))
    posted = time.perf_counter() - started
    finished = replies.wait_count(target, timeout=600)
    elapsed = finished - started
    return {"turns": len(jobs), "seconds": round(elapsed, 2), "turns_per_second": round(len(jobs) / elapsed, 1),
            "posting_seconds": round(posted, 2)}


def start_stack(resources: Resources, stub: LLMStub, conversations: int, workdir: Path,
                processes: list) -> tuple[dict, list[dict], str]:
    """Data for ``conversations`` conversations and the Procfile's web process (into ``processes``)."""
    env = {**resources.env, "MCC_LLM_BASE_URL": stub.base_url, "MCC_LLM_API_KEY": "bench"}
    teams = setup_data(env, conversations)
    web, base = start_web(env, workdir / "web.log")
    processes.append(web)
    return env, teams, base


def login(base: str, connections: int = 10) -> tuple[requests.Session, str]:
    """A session logged in as the bench operator, and its access token."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=connections))
    token = session.post(f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD},
                         timeout=10).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session, token


def tear_down(replies, processes: list, stub: LLMStub, resources: Resources) -> None:
    if replies is not None:
        replies.close()
    for process in reversed(processes):
        process.stop()
    stub.close()
    resources.close()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
        except Exception:
            return "?"
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gb": round(int(mem) / 1024 / 1024, 1),
            "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
            "postgres": version(["psql", "-V"]),
            "redis": version(["redis-server", "--version"]), "kernel": platform.release()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="sequential turns for p50/p99")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--throughput-turns", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--skip-throughput", action="store_true", help="latency and floor only")
    args = parser.parse_args()

    resources = Resources()
    stub = LLMStub()
    stub.default = Step(content="done", usage={"prompt_tokens": 1000, "completion_tokens": 500})
    processes: list[Process] = []
    replies = floor = None
    workdir = Path(tempfile.mkdtemp(prefix="mcc-bench-logs-"))
    try:
        env, teams, base = start_stack(resources, stub, args.conversations, workdir, processes)

        def start_workers(count: int) -> list[Process]:
            started = [Process(procfile()["worker"], env, workdir / f"worker-{uuid.uuid4().hex[:6]}.log")
                       for _ in range(count)]
            deadline = time.monotonic() + 30
            while len(resources.redis.smembers("rq:workers:agent")) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not register")
                time.sleep(0.1)
            processes.extend(started)
            return started

        def stop_workers(workers: list[Process]):
            for worker in workers:
                worker.stop()
                processes.remove(worker)
            time.sleep(0.5)

        session, token = login(base)
        replies = Replies(base, token, [t["conversation"] for t in teams])

        workers = start_workers(1)
        floor = Floor(env, workdir, processes)
        log("warm-up")
        turn_latencies(session, base, teams[0], replies, args.warmup)
        for kind in Floor.KINDS:
            floor.latencies(kind, args.warmup)
        log(f"{args.turns} sequential turns and {args.turns} round trips of each floor, interleaved in blocks of 10")
        turns, floors = [], {kind: [] for kind in Floor.KINDS}
        for start in range(0, args.turns, 10):
            block = min(10, args.turns - start)
            turns += turn_latencies(session, base, teams[0], replies, block)
            for kind in Floor.KINDS:
                floors[kind] += floor.latencies(kind, block)
        llm_calls = len(stub.calls)

        one = two = None
        if not args.skip_throughput:
            log(f"throughput with 1 worker: {args.throughput_turns} turns over {len(teams)} conversations")
            one = throughput(session, base, teams, replies, args.throughput_turns)
            stop_workers(workers)
            workers = start_workers(2)
            log("throughput with 2 workers")
            two = throughput(session, base, teams, replies, args.throughput_turns)

        turn_ms = ms(turns)
        floor_ms = {kind: ms(values) for kind, values in floors.items()}
        report = {
            "machine": machine(),
            "command": " ".join([".venv/bin/python", "bench/turn_overhead.py", *sys.argv[1:]]),
            "turn_post_to_message_event": turn_ms,
            "floor_forking_worker": floor_ms["fork"],
            "floor_greenlet_pool": floor_ms["pool"],
            "ratio_p50_to_forking_floor": round(turn_ms["p50_ms"] / floor_ms["fork"]["p50_ms"], 2),
            "ratio_p50_to_pool_floor": round(turn_ms["p50_ms"] / floor_ms["pool"]["p50_ms"], 2),
            "throughput_1_worker": one,
            "throughput_2_workers": two,
            "llm_calls_in_latency_phase": llm_calls,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if floor is not None:
            floor.replies.close()
        tear_down(replies, processes, stub, resources)


if __name__ == "__main__":
    sys.exit(main())
