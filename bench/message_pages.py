"""Message page latency at 1k vs 1M messages in one conversation, in the same run.

Usage (from the repository root):
    .venv/bin/python bench/message_pages.py [--requests 200] [--big 1000000] [--small 1000]

What it does, all by itself:
  1. creates a throwaway PostgreSQL database (mcc_bench_<random>), runs `flask --app wsgi db upgrade`,
     claims a private Redis database (13 if free) and flushes it;
  2. creates an admin user (mcc.services.users.create_user), a project, an agent and six conversations
     through the services, then bulk-loads messages with one INSERT ... SELECT FROM generate_series:
     `big` (1M) messages in one conversation, `small` (1k) in another, and 4 x big/20 in four others,
     interleaved in seq order so every conversation's rows are spread over the whole table;
  3. times the exact SQL the product runs for a page (captured from SQLAlchemy while calling
     mcc.services.conversations.message_page) over a plain psycopg2 connection, and prints
     EXPLAIN (ANALYZE, BUFFERS) for each;
  4. starts the Procfile `web:` line (real gunicorn), logs in, and times, interleaved, N requests each of
       GET /healthz                                    floor: same server and HTTP path, no product logic
       GET /api/v1/auth/me                             API floor: auth + rate limiter + one user lookup
       GET .../conversations/{c}/messages?limit=50     newest page, 1k and 1M conversations
       GET ...?limit=50&before=<middle message id>     deep page, 1k and 1M conversations
  5. prints a table and a one-line JSON summary (stdout), then drops the database and flushes Redis.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (ADMIN_PASSWORD, ADMIN_USER, WebProcess, bench_env, log, login, machine,  # noqa: E402
                           make_app, migrate, pg_connect, private_redis, procfile_web, ratio, summary_ms,
                           throwaway_database, workdir, redis_server, exit_on_sigterm)

OTHER_CONVERSATIONS = 4


# --- data -------------------------------------------------------------------------------------

def seed(env: dict) -> dict:
    """Users, project, agent and conversations through the product's services (committed)."""
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project
    from mcc.services.users import create_user

    app = make_app(env)
    with app.app_context():
        user = create_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        project = create_project({"name": "Bench", "github_repo": "bench-org/pages"})
        agent = create_agent(project.id, {"name": "Benchy", "type": "coder", "model_config": {
            "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})
        conversations = [create_conversation(project.id, user.id, {"title": title})
                         for title in ["small", "big"] + [f"other {i}" for i in range(OTHER_CONVERSATIONS)]]
        db.session.commit()
        ids = {"user": user.id, "project": project.id, "agent": agent.id,
               "small": conversations[0].id, "big": conversations[1].id,
               "others": [c.id for c in conversations[2:]]}
        db.session.remove()
        db.engine.dispose()
    return ids, app


def bulk_load(database_url: str, ids: dict, big: int, small: int) -> dict:
    """One INSERT ... SELECT FROM generate_series; rows of all conversations interleaved by seq."""
    others_each = max(1, big // 20)
    stream = big + OTHER_CONVERSATIONS * others_each  # rows that are not the small conversation's
    step = stream // small + 1                           # every step-th row belongs to `small`
    total = step * small
    sql = """
        INSERT INTO messages (id, conversation_id, author_type, agent_id, user_id, content,
                              tokens_in, tokens_out, cost_usd, created_at)
        SELECT gen_random_uuid(),
               CASE WHEN g.i %% %(step)s = 0 THEN %(small)s::uuid
                    WHEN g.j %% 6 <> 0 OR g.j > %(stream)s THEN %(big)s::uuid
                    ELSE (%(others)s::uuid[])[((g.j / 6) %% %(n_others)s) + 1] END,
               CASE WHEN g.i %% 3 = 0 THEN 'agent' ELSE 'user' END,
               CASE WHEN g.i %% 3 = 0 THEN %(agent)s::uuid END,
               CASE WHEN g.i %% 3 = 0 THEN NULL ELSE %(user)s::uuid END,
               'message ' || g.i || ': ' || repeat(md5(g.i::text), 3),
               CASE WHEN g.i %% 3 = 0 THEN 1200 ELSE 0 END,
               CASE WHEN g.i %% 3 = 0 THEN 350 ELSE 0 END,
               CASE WHEN g.i %% 3 = 0 THEN 0.004125 ELSE 0 END,
               now() - make_interval(secs => (%(total)s - g.i))
        FROM (SELECT i, i - i / %(step)s AS j FROM generate_series(1, %(total)s) AS i) AS g
        ORDER BY g.i
    """
    params = {"step": step, "stream": stream, "total": total, "n_others": OTHER_CONVERSATIONS,
              "small": str(ids["small"]), "big": str(ids["big"]), "agent": str(ids["agent"]),
              "user": str(ids["user"]), "others": [str(o) for o in ids["others"]]}
    conn = pg_connect(database_url, autocommit=True)
    started = time.monotonic()
    with conn.cursor() as cur:
        # Usual bulk-load practice: build the plain (non-constraint) indexes after the load, from their
        # own definitions, and skip the per-row FK trigger checks (the ids are valid by construction
        # and checked below). Primary key and unique constraints stay in place throughout.
        cur.execute("""
            SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'messages'::regclass
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)""")
        plain_indexes = cur.fetchall()
        cur.execute("BEGIN")
        for name, _ in plain_indexes:
            cur.execute(f'DROP INDEX "{name}"')
        cur.execute("ALTER TABLE messages DISABLE TRIGGER ALL")
        cur.execute(sql, params)
        inserted = cur.rowcount
        cur.execute("ALTER TABLE messages ENABLE TRIGGER ALL")
        cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for _, definition in plain_indexes:
            cur.execute(definition)
        cur.execute("COMMIT")
    load_s = time.monotonic() - started
    log(f"inserted {inserted:,} rows and rebuilt {[n for n, _ in plain_indexes]} in {load_s:.1f} s")
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE) messages")
        vacuum_s = time.monotonic() - started
        cur.execute("""SELECT count(*) FROM messages m WHERE NOT EXISTS
                       (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)
                       OR (m.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id))
                       OR (m.agent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = m.agent_id))""")
        orphans = cur.fetchone()[0]
        assert orphans == 0, f"{orphans} messages violate a foreign key"
        cur.execute("SELECT conversation_id, count(*) FROM messages GROUP BY 1")
        counts = {str(k): v for k, v in cur.fetchall()}
        cur.execute("SELECT pg_size_pretty(pg_total_relation_size('messages'))")
        size = cur.fetchone()[0]
    conn.close()
    result = {"rows": inserted, "insert_and_index_s": round(load_s, 1), "vacuum_analyze_s": round(vacuum_s, 1),
              "table_size": size, "small": counts[str(ids["small"])], "big": counts[str(ids["big"])],
              "others": [counts[str(o)] for o in ids["others"]]}
    log(f"bulk load: {result}")
    return result


def cursors(database_url: str, ids: dict, depth: dict | None = None) -> dict:
    """Newest id and a cursor (by default in the middle of history) for both conversations (setup only)."""
    conn = pg_connect(database_url)
    out = {}
    with conn.cursor() as cur:
        for name in ("small", "big"):
            cid = str(ids[name])
            cur.execute("SELECT count(*) FROM messages WHERE conversation_id = %s", (cid,))
            n = cur.fetchone()[0]
            cur.execute("SELECT id FROM messages WHERE conversation_id = %s ORDER BY seq DESC LIMIT 1", (cid,))
            newest = cur.fetchone()[0]
            cur.execute("SELECT id, seq FROM messages WHERE conversation_id = %s ORDER BY seq DESC "
                        "OFFSET %s LIMIT 1", (cid, (depth or {}).get(name, n // 2)))
            middle, middle_seq = cur.fetchone()
            cur.execute("SELECT id FROM messages WHERE conversation_id = %s AND seq < %s ORDER BY seq DESC "
                        "LIMIT 1", (cid, middle_seq))
            after_middle = cur.fetchone()[0]
            out[name] = {"count": n, "newest": str(newest), "middle": str(middle),
                         "first_before_middle": str(after_middle), "middle_depth": (depth or {}).get(name, n // 2)}
    conn.close()
    return out


# --- raw SQL ----------------------------------------------------------------------------------

def candidate_message_page(conversation_id: uuid.UUID, before: uuid.UUID | None, limit: int):
    """A candidate fix, timed next to the product (bench only; the product code is not changed).

    message_page with the conversation written as a range and ORDER BY (conversation_id, seq): the
    planner no longer folds the ORDER BY to `seq` alone, so only ix_messages_conversation_seq can
    return rows in that order, and it cannot pick pk_messages (a backward walk over every newer row
    of the whole table, filtering on conversation_id).
    """
    from sqlalchemy import select

    from mcc.extensions import db
    from mcc.models.conversation import Message

    query = select(Message).where(Message.conversation_id >= conversation_id,
                                  Message.conversation_id <= conversation_id)
    if before is not None:
        cursor = db.session.scalar(
            select(Message.seq).where(Message.id == before, Message.conversation_id == conversation_id))
        query = query.where(Message.seq < cursor)
    rows = list(db.session.scalars(query.order_by(Message.conversation_id.desc(), Message.seq.desc())
                                   .limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def captured_queries(app, conversation_id, before, page_function=None) -> list[tuple[str, dict]]:
    """The exact statements (and psycopg2 parameters) message_page sends for this page."""
    from sqlalchemy import event

    from mcc.extensions import db
    from mcc.services.conversations import message_page

    message_page = page_function or message_page
    seen: list[tuple[str, dict]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, dict(parameters or {})))

    with app.app_context():
        engine = db.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            items, has_more = message_page(uuid.UUID(str(conversation_id)),
                                           uuid.UUID(before) if before else None, 50)
            assert len(items) == 50 and has_more, (len(items), has_more)
        finally:
            event.remove(engine, "before_cursor_execute", record)
            db.session.remove()
            engine.dispose()
    return seen


def explain(conn, queries) -> list[str]:
    lines = []
    with conn.cursor() as cur:
        for statement, params in queries:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            for (line,) in cur.fetchall():
                lines.append(re.sub(r"\s*\(cost=[^)]*\)", "", line).rstrip())
    return lines


def time_raw(conn, cases: dict, n: int) -> dict:
    """Interleaved: each round runs every case's statements once (fetching all rows)."""
    times = {name: [] for name in cases}
    with conn.cursor() as cur:
        for _ in range(20):  # warm-up
            for queries in cases.values():
                for statement, params in queries:
                    cur.execute(statement, params)
                    cur.fetchall()
        conn.rollback()
        for _ in range(n):
            for name, queries in cases.items():
                started = time.perf_counter()
                for statement, params in queries:
                    cur.execute(statement, params)
                    cur.fetchall()
                times[name].append(time.perf_counter() - started)
            conn.rollback()
    return {name: summary_ms(t) for name, t in times.items()}


def append_tail(database_url: str, ids: dict, tail: int) -> dict:
    """Phase B: the big conversation goes idle while the others receive `tail` newer messages."""
    conn = pg_connect(database_url, autocommit=True)
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO messages (id, conversation_id, author_type, user_id, content, tokens_in, tokens_out,
                                  cost_usd, created_at)
            SELECT gen_random_uuid(), (%(others)s::uuid[])[(i %% %(n)s) + 1], 'user', %(user)s::uuid,
                   'later message ' || i || ': ' || repeat(md5(i::text), 3), 0, 0, 0,
                   now() + make_interval(secs => i)
            FROM generate_series(1, %(tail)s) AS i ORDER BY i""",
                    {"others": [str(o) for o in ids["others"]], "n": OTHER_CONVERSATIONS,
                     "user": str(ids["user"]), "tail": tail})
        cur.execute("VACUUM (ANALYZE) messages")
    conn.close()
    out = {"rows": tail, "insert_s": round(time.monotonic() - started, 1)}
    log(f"phase B tail: {out}")
    return out


def wake_big(database_url: str, ids: dict, n: int = 100) -> dict:
    """Phase C: the big conversation gets `n` new messages after the gap left by phase B."""
    conn = pg_connect(database_url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO messages (id, conversation_id, author_type, user_id, content, tokens_in, tokens_out,
                                  cost_usd, created_at)
            SELECT gen_random_uuid(), %(big)s::uuid, 'user', %(user)s::uuid, 'back again ' || i, 0, 0, 0,
                   now() + interval '30 days' + make_interval(secs => i)
            FROM generate_series(1, %(n)s) AS i ORDER BY i""",
                    {"big": str(ids["big"]), "user": str(ids["user"]), "n": n})
        cur.execute("VACUUM (ANALYZE) messages")
    conn.close()
    return {"rows": n}


def plan_summary(plans: dict) -> dict:
    """For each case, the scan on messages of the page query (the last statement)."""
    out = {}
    for name, lines in plans.items():
        scans = [re.sub(r"^[\s>-]*", "", line) for line in lines
                 if re.search(r"Scan.* on messages", line)]
        out[name] = re.sub(r"\s*\(actual.*", "", scans[-1]) if scans else "?"
        rows = [line for line in lines if "Rows Removed by Filter" in line]
        if rows:
            out[name] += f" ({rows[-1].strip()})"
    return out


def ratios(http: dict, sql: dict) -> dict:
    out = {}
    for kind in ("newest", "deep"):
        out[f"http {kind} p50"] = ratio(http[f"{kind} big"]["p50"], http[f"{kind} small"]["p50"])
        out[f"http {kind} p99"] = ratio(http[f"{kind} big"]["p99"], http[f"{kind} small"]["p99"])
        out[f"sql {kind} p50"] = ratio(sql[f"{kind} big"]["p50"], sql[f"{kind} small"]["p50"])
    return out


# --- HTTP -------------------------------------------------------------------------------------

def check_page(response, expect_first: str) -> None:
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body = response.json()
    assert len(body["items"]) == 50 and body["has_more"] is True, (len(body["items"]), body["has_more"])
    assert body["items"][0]["id"] == expect_first, (body["items"][0]["id"], expect_first)
    seqs = [item["created_at"] for item in body["items"]]
    assert seqs == sorted(seqs, reverse=True), "page is not newest first"


def time_http(base: str, token: str, ids: dict, marks: dict, n: int) -> dict:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    prefix = f"{base}/api/v1/projects/{ids['project']}/conversations"
    urls = {
        "healthz (floor)": f"{base}/healthz",
        "auth/me (API floor)": f"{base}/api/v1/auth/me",
    }
    for kind in ("newest", "deep"):
        for size in ("small", "big"):
            url = f"{prefix}/{ids[size]}/messages?limit=50"
            if kind == "deep":
                url += f"&before={marks[size]['middle']}"
            urls[f"{kind} {size}"] = url
    # correctness first: a fast wrong answer is not a result
    for size in ("small", "big"):
        check_page(session.get(urls[f"newest {size}"], timeout=30), marks[size]["newest"])
        check_page(session.get(urls[f"deep {size}"], timeout=30), marks[size]["first_before_middle"])
    assert session.get(urls["auth/me (API floor)"], timeout=30).status_code == 200
    for _ in range(20):  # warm-up
        for url in urls.values():
            session.get(url, timeout=30).raise_for_status()
    times = {name: [] for name in urls}
    for _ in range(n):
        for name, url in urls.items():
            started = time.perf_counter()
            response = session.get(url, timeout=30)
            _ = response.content
            times[name].append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {response.status_code} {response.text[:300]}")
    session.close()
    return {name: summary_ms(t) for name, t in times.items()}


# --- main -------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--big", type=int, default=1_000_000, help="messages in the big conversation")
    parser.add_argument("--small", type=int, default=1_000, help="messages in the small conversation")
    parser.add_argument("--tail", type=int, default=200_000,
                        help="phase B: newer messages appended to the other conversations (0: skip)")
    parser.add_argument("--redis", choices=["private", "shared"], default="private",
                        help="private: a redis-server of this run's own (default); shared: 127.0.0.1:6379, "
                             "whose pub/sub channels other processes share")
    args = parser.parse_args()
    exit_on_sigterm()

    result: dict = {"bench": "message_pages", "machine": machine(), "requests": args.requests, "redis": args.redis}
    with workdir() as tmp, throwaway_database() as database_url, redis_server(args.redis) as redis_base, \
            private_redis(base_url=redis_base) as redis_url:
        env = bench_env(database_url, redis_url, tmp / "instance")
        migrate(env)
        ids, app = seed(env)
        result["load"] = bulk_load(database_url, ids, args.big, args.small)
        marks = cursors(database_url, ids)
        result["cursor_depth"] = {k: v["middle_depth"] for k, v in marks.items()}
        cases, candidate = {}, {}

        def capture_all():
            for size in ("small", "big"):
                for kind, before in (("newest", None), ("deep", marks[size]["middle"])):
                    cases[f"{kind} {size}"] = captured_queries(app, ids[size], before)
                    candidate[f"{kind} {size}"] = captured_queries(app, ids[size], before, candidate_message_page)
        capture_all()
        print("-- SQL of the page query (captured from message_page):\n" + cases["deep big"][-1][0].strip())

        web = WebProcess(procfile_web(), env, tmp / "web.log", "web (Procfile)")
        try:
            token = login(web.base)
            phases = [("A", "interleaved: the big conversation's messages run to the newest row")]
            if args.tail:
                phases.append(("B", f"idle: then {args.tail:,} newer messages in the other conversations"))
                phases.append(("C", "back: then 100 new messages in the big conversation; its deep cursor is "
                                    "its 60th newest message, so that page spans the gap"))
            for phase, description in phases:
                if phase == "B":
                    result["tail"] = append_tail(database_url, ids, args.tail)
                if phase == "C":
                    wake_big(database_url, ids, 100)
                    marks = cursors(database_url, ids, depth={"big": 59})
                    capture_all()
                print(f"\n== phase {phase} ({description}): EXPLAIN (ANALYZE, BUFFERS) of message_page's SQL ==")
                conn = pg_connect(database_url)
                plans = {}
                for name, queries in cases.items():
                    plans[name] = explain(conn, queries)
                    conn.rollback()
                    print(f"-- {name} ({len(queries)} statement(s))")
                    print("\n".join(plans[name]))
                log(f"phase {phase}: timing raw SQL")
                sql = time_raw(conn, cases, args.requests)
                candidate_plans = {}
                for name, queries in candidate.items():
                    candidate_plans[name] = explain(conn, queries)
                    conn.rollback()
                candidate_sql = time_raw(conn, candidate, args.requests)
                conn.close()
                log(f"phase {phase}: timing HTTP")
                http = time_http(web.base, token, ids, marks, args.requests)
                result[f"phase_{phase}"] = {"description": description, "plan": plan_summary(plans),
                                            "sql_ms": sql, "http_ms": http, "ratios_1M_over_1k": ratios(http, sql),
                                            "candidate_fix": {"plan": plan_summary(candidate_plans),
                                                              "sql_ms": candidate_sql}}
            result["web_log_errors"] = web.errors()
        finally:
            web.stop()
        result["web_command"] = web.command

    for phase in ("A", "B", "C"):
        data = result.get(f"phase_{phase}")
        if not data:
            continue
        http, sql = data["http_ms"], data["sql_ms"]
        print(f"\n== phase {phase}: {data['description']}; {result['load']['small']:,} vs "
              f"{result['load']['big']:,} messages, {args.requests} requests each, ms ==")
        print(f"{'case':<24}{'HTTP p50':>10}{'HTTP p99':>10}{'SQL p50':>10}{'SQL p99':>10}  plan (scan on messages)")
        for name, stats in http.items():
            s = sql.get(name)
            print(f"{name:<24}{stats['p50']:>10.2f}{stats['p99']:>10.2f}"
                  + (f"{s['p50']:>10.3f}{s['p99']:>10.3f}  {data['plan'].get(name, '')}" if s else ""))
        print("ratios 1M/1k:", json.dumps(data["ratios_1M_over_1k"]))
        fix = data["candidate_fix"]
        print("candidate fix (bench only: range on conversation_id + ORDER BY conversation_id, seq), raw SQL ms:")
        for name, st in fix["sql_ms"].items():
            print(f"  {name:<22}{st['p50']:>10.3f}{st['p99']:>10.3f}  {fix['plan'][name]}")
        floor = http["healthz (floor)"]["p50"]
        print(f"newest big p50 = {ratio(http['newest big']['p50'], floor)}x the floor "
              f"(page - floor = {http['newest big']['p50'] - floor:.2f} ms)")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
