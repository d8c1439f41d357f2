"""One message fanned out to N connected Socket.IO clients: delivery latency, product vs floor.

Usage (from the repository root):
    .venv/bin/python bench/socket_fanout.py --mode gevent [--clients 500] [--rounds 20]      # the Procfile line
    .venv/bin/python bench/socket_fanout.py --mode threading [--threads 1000] [--clients 500] [--rounds 20]

What it does, all by itself:
  1. throwaway PostgreSQL database + `flask --app wsgi db upgrade`, a private Redis database (13 if
     free, flushed before and after); an admin user, a project and a conversation with no agents
     (so posting queues no agent turn), created through the services;
  2. starts two servers with the same gunicorn worker class and async mode:
       product: MCC (`wsgi:app`; for gevent the Procfile `web:` line, psycopg2 patched by MCC itself;
                for threading the former line, `gunicorn --worker-class gthread --threads N ...`)
       floor:   bench/floor_server.py, a bare Flask-SocketIO app with the same Redis message queue
                whose POST /emit emits its body to one room (no DB, no auth)
  3. this process (the load generator, separate from both servers) connects N python-socketio
     AsyncClients (websocket transport) to each server; product clients authenticate with an
     access token and `join_conversation`, floor clients `join`;
  4. each round, for each server (order alternating): t0 just before the POST (product: REST
     POST .../messages; floor: POST /emit with the same payload), then each client's receipt of the
     `message` event; latency = receipt - t0. Also the servers' CPU seconds during the rounds;
  5. a blocking probe on the product: while a GET of the conversation waits on a PostgreSQL lock
     (held by this script for 2 s), how long does GET /healthz take? (shows whether psycopg2 blocks
     a gevent worker);
  6. prints a table and a one-line JSON summary (last line of stdout) and cleans everything up.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import socketio  # noqa: E402

from bench._common import (ADMIN_PASSWORD, ADMIN_USER, WebProcess, bench_env, log, login, machine,  # noqa: E402
                           make_app, migrate, pct, pg_connect, private_redis, procfile_web, ratio, summary_ms,
                           throwaway_database, with_app, with_threads, workdir, redis_server,
                           exit_on_sigterm, group_status)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def seed(env: dict) -> dict:
    from mcc.extensions import db
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project
    from mcc.services.users import create_user

    app = make_app(env)
    with app.app_context():
        user = create_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        project = create_project({"name": "Fanout", "github_repo": "bench-org/fanout"})
        conversation = create_conversation(project.id, user.id, {"title": "Fan-out"})
        db.session.commit()
        ids = {"project": str(project.id), "conversation": str(conversation.id)}
        db.session.remove()
        db.engine.dispose()
    return ids


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (gunicorn master and worker)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is state; pgrp is the 5th field of stat
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


GTHREAD_LINE = ("gunicorn --worker-class gthread --workers 1 --threads 1000 --worker-connections 2000 "
                "--bind 0.0.0.0:$PORT wsgi:app")


def server_command(mode: str, threads: int, app: str) -> tuple[str, dict]:
    if mode == "threading":
        return with_app(with_threads(GTHREAD_LINE, threads), app), {"MCC_SOCKETIO_ASYNC_MODE": "threading"}
    return with_app(procfile_web(), app), {"MCC_SOCKETIO_ASYNC_MODE": "gevent"}


class Fleet:
    """N AsyncClients connected to one server, all in one room, recording `message` receipts."""

    def __init__(self, name: str, base: str, n: int, auth: dict | None, join: tuple[str, dict]):
        self.name, self.base, self.n, self.auth, self.join = name, base, n, auth, join
        self.clients: list[socketio.AsyncClient] = []
        self.failures: dict[str, int] = {}
        self.marker: str | None = None
        self.received: dict[int, float] = {}
        self.duplicates = 0
        self.done = asyncio.Event()
        self.expected = 0

    def _handler(self, index: int):
        async def on_message(data):
            now = time.perf_counter()
            if isinstance(data, dict) and data.get("content") == self.marker:
                if index in self.received:
                    self.duplicates += 1
                    return
                self.received[index] = now
                if len(self.received) >= self.expected:
                    self.done.set()
        return on_message

    async def connect(self, concurrency: int = 50, timeout: float = 15) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int):
            async with gate:
                if sum(self.failures.values()) >= 2 * concurrency:
                    # saturated (e.g. every gunicorn thread holds a WebSocket): do not wait out the rest
                    self.failures["skipped after repeated failures"] = \
                        self.failures.get("skipped after repeated failures", 0) + 1
                    return
                client = socketio.AsyncClient(reconnection=False, request_timeout=timeout)
                client.on("message", self._handler(index))
                try:
                    await asyncio.wait_for(client.connect(self.base, transports=["websocket"], auth=self.auth,
                                                          wait_timeout=timeout), timeout + 2)
                    ack = await client.call(self.join[0], self.join[1], timeout=timeout)
                    if not (isinstance(ack, dict) and ack.get("ok")):
                        raise RuntimeError(f"join refused: {ack}")
                except Exception as exc:  # record, do not hide: a refused client is a result
                    key = f"{type(exc).__name__}: {str(exc)[:80]}"
                    self.failures[key] = self.failures.get(key, 0) + 1
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 2)
                    return
                self.clients.append(client)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(self.n)))
        log(f"{self.name}: {len(self.clients)}/{self.n} connected and joined in "
            f"{time.monotonic() - started:.1f} s; failures {self.failures or 'none'}")

    async def close(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(c.disconnect(), 5) for c in self.clients), return_exceptions=True)

    def arm(self, marker: str) -> None:
        self.marker, self.received, self.done = marker, {}, asyncio.Event()
        self.expected = len(self.clients)


async def fan_out(fleet: Fleet, post, marker: str, timeout: float) -> dict:
    """One round: t0, POST, wait until every connected client has the event (or timeout)."""
    fleet.arm(marker)
    t0 = time.perf_counter()
    try:
        post_status = await asyncio.wait_for(post(marker), timeout)
    except asyncio.TimeoutError:
        return {"error": f"POST did not answer within {timeout} s", "post_s": None, "latencies": [], "missing": None}
    post_s = time.perf_counter() - t0
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(fleet.done.wait(), timeout)
    latencies = [t - t0 for t in fleet.received.values()]
    return {"post_status": post_status, "post_s": post_s, "latencies": latencies,
            "missing": fleet.expected - len(latencies)}


async def blocking_probe(http: aiohttp.ClientSession, base: str, headers: dict, ids: dict,
                         database_url: str, hold: float = 2.0) -> dict:
    """Hold a lock the page query needs; meanwhile time GET /healthz on the same worker."""
    conn = pg_connect(database_url)
    with conn.cursor() as cur:
        cur.execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
    started = time.perf_counter()
    url = f"{base}/api/v1/projects/{ids['project']}/conversations/{ids['conversation']}/messages?limit=5"

    async def blocked_get():
        async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as response:
            await response.read()
            return response.status, time.perf_counter() - started

    async def release_later():
        await asyncio.sleep(hold)
        conn.rollback()  # releases the lock, whatever /healthz is doing
        return time.perf_counter() - started

    page = asyncio.create_task(blocked_get())
    release = asyncio.create_task(release_later())
    await asyncio.sleep(0.3)
    t = time.perf_counter()
    try:
        async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=30)) as response:
            await response.read()
        healthz_s = time.perf_counter() - t
    except Exception as exc:
        healthz_s = None
        log(f"blocking probe: /healthz failed: {exc!r}")
    released = await release
    conn.close()
    status, page_s = await page
    return {"lock_held_s": round(released, 3), "healthz_ms_while_db_waits": round(healthz_s * 1000, 1)
            if healthz_s is not None else None, "blocked_page_status": status, "blocked_page_s": round(page_s, 3)}


async def run(args, env: dict, ids: dict, tmp: Path, database_url: str) -> dict:
    result: dict = {}
    command, extra = server_command(args.mode, args.threads, "wsgi:app")
    floor_command, _ = server_command(args.mode, args.threads, "bench.floor_server:app")
    server_env = {**env, **extra}
    product = WebProcess(command, server_env, tmp / "product.log", "product")
    floor = None
    fleets: list[Fleet] = []
    try:
        floor = WebProcess(floor_command, server_env, tmp / "floor.log", "floor")
        result["commands"] = {"product": command, "floor": floor_command, "env": extra}
        token = login(product.base)
        headers = {"Authorization": f"Bearer {token}"}
        conversation_url = (f"{product.base}/api/v1/projects/{ids['project']}/conversations/"
                            f"{ids['conversation']}/messages")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            template: dict = {}

            async def post_product(marker: str):
                async with http.post(conversation_url, json={"content": marker}, headers=headers) as response:
                    body = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"POST message: {response.status} {body}")
                    template.update(body)
                    return response.status

            async def post_floor(marker: str):
                async with http.post(f"{floor.base}/emit", json={**template, "content": marker}) as response:
                    await response.read()
                    return response.status

            product_fleet = Fleet("product", product.base, args.clients, {"token": token},
                                  ("join_conversation", {"conversation_id": ids["conversation"]}))
            floor_fleet = Fleet("floor", floor.base, args.clients, None, ("join", {}))
            fleets = [product_fleet, floor_fleet]
            idle = {"product": group_status(product.proc.pid), "floor": group_status(floor.proc.pid)}
            await product_fleet.connect()
            await floor_fleet.connect()
            result["server_threads_rss"] = {
                name: {"before_clients": idle[name], "with_clients": group_status(process.proc.pid)}
                for name, process in (("product", product), ("floor", floor))}
            result["connected"] = {f.name: len(f.clients) for f in fleets}
            result["healthz_ms_with_clients_connected"] = {}
            for name, process in (("product", product), ("floor", floor)):
                t = time.perf_counter()
                try:
                    async with http.get(f"{process.base}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                    result["healthz_ms_with_clients_connected"][name] = round((time.perf_counter() - t) * 1000, 1)
                except asyncio.TimeoutError:
                    result["healthz_ms_with_clients_connected"][name] = "no answer within 10 s"
            result["connect_failures"] = {f.name: f.failures for f in fleets if f.failures}

            posts = {"product": post_product, "floor": post_floor}
            rounds: dict[str, list[dict]] = {"product": [], "floor": []}
            broken: dict[str, str] = {}
            # warm-up round (untimed); the product's also captures the payload the floor re-emits
            for fleet in fleets:
                if fleet.clients:
                    warm = await fan_out(fleet, posts[fleet.name], f"warm-up {fleet.name}", args.timeout)
                    if warm.get("error"):
                        broken[fleet.name] = warm["error"]
            cpu_before = {"product": group_cpu_seconds(product.proc.pid), "floor": group_cpu_seconds(floor.proc.pid)}
            gen_cpu_before = time.process_time()
            for r in range(args.rounds):
                order = fleets if r % 2 == 0 else fleets[::-1]
                for fleet in order:
                    if not fleet.clients or fleet.name in broken:
                        continue
                    outcome = await fan_out(fleet, posts[fleet.name], f"bench round {r} {fleet.name} {time.time()}",
                                            args.timeout)
                    if outcome.get("error"):
                        broken[fleet.name] = outcome["error"]
                        log(f"{fleet.name}: round {r}: {outcome['error']}")
                        continue
                    rounds[fleet.name].append(outcome)
                    await asyncio.sleep(args.pause)
            cpu_after = {"product": group_cpu_seconds(product.proc.pid), "floor": group_cpu_seconds(floor.proc.pid)}
            result["load_generator_cpu_s"] = round(time.process_time() - gen_cpu_before, 2)
            if broken:
                result["broken"] = broken

            for name, outcomes in rounds.items():
                if not outcomes:
                    continue
                latencies = [x for o in outcomes for x in o["latencies"]]
                result[name] = {
                    "clients": len(fleets[0 if name == "product" else 1].clients),
                    "rounds": len(outcomes),
                    "delivery_ms": summary_ms(latencies),
                    "last_client_ms_median_of_rounds": round(pct([max(o["latencies"]) * 1000
                                                                  for o in outcomes if o["latencies"]], 50), 2),
                    # robust to one noisy round on a shared machine: the median round's p50 and p99
                    "median_round_p50_ms": round(pct([pct(o["latencies"], 50) * 1000 for o in outcomes], 50), 2),
                    "median_round_p99_ms": round(pct([pct(o["latencies"], 99) * 1000 for o in outcomes], 50), 2),
                    "per_round_p50_p99_ms": [[round(pct(o["latencies"], 50) * 1000), round(pct(o["latencies"], 99) * 1000)]
                                             for o in outcomes],
                    "post_ms": summary_ms([o["post_s"] for o in outcomes]),
                    "missing_deliveries": sum(o["missing"] for o in outcomes),
                    "duplicates": fleets[0 if name == "product" else 1].duplicates,
                    "server_cpu_ms_per_round": round((cpu_after[name] - cpu_before[name]) * 1000 / len(outcomes), 1),
                }
            if "product" not in broken:
                log("blocking probe")
                result["blocking_probe"] = await blocking_probe(http, product.base, headers, ids, database_url)
            for fleet in fleets:
                await fleet.close()
    finally:
        result["log_errors"] = {"product": product.errors(), **({"floor": floor.errors()} if floor else {})}
        for process in (floor, product):
            if process is not None:
                process.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["threading", "gevent"], required=True)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1000, help="threading: gunicorn --threads")
    parser.add_argument("--timeout", type=float, default=20, help="seconds to wait for a POST or a full fan-out")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between fan-outs")
    parser.add_argument("--redis", choices=["private", "shared"], default="private",
                        help="private: a redis-server of this run's own (default); shared: 127.0.0.1:6379, "
                             "whose pub/sub channels other processes share")
    args = parser.parse_args()
    exit_on_sigterm()

    summary: dict = {"bench": "socket_fanout", "mode": args.mode, "clients": args.clients, "rounds": args.rounds,
                     "redis": args.redis, "machine": machine()}
    if args.mode == "threading":
        summary["threads"] = args.threads
    with workdir() as tmp, throwaway_database() as database_url, redis_server(args.redis) as redis_base, \
            private_redis(base_url=redis_base) as redis_url:
        env = bench_env(database_url, redis_url, tmp / "instance")
        migrate(env)
        ids = seed(env)
        summary.update(asyncio.run(run(args, env, ids, tmp, database_url)))

    print(f"\n== fan-out to {args.clients} clients, mode {args.mode}"
          + (f" --threads {args.threads}" if args.mode == "threading" else "")
          + f", {args.rounds} rounds, ms ==")
    print(f"{'server':<10}{'conn':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'rnd p99':>9}{'last':>9}{'POST p50':>10}"
          f"{'CPU/round':>11}")
    for name in ("product", "floor"):
        s = summary.get(name)
        if s:
            d = s["delivery_ms"]
            print(f"{name:<10}{s['clients']:>6}{d['p50']:>9.1f}{d['p90']:>9.1f}{d['p99']:>9.1f}"
                  f"{s['median_round_p99_ms']:>9.1f}{s['last_client_ms_median_of_rounds']:>9.1f}"
                  f"{s['post_ms']['p50']:>10.1f}{s['server_cpu_ms_per_round']:>11.1f}")
        else:
            print(f"{name:<10}{summary.get('connected', {}).get(name, 0):>6}  no result: "
                  f"{summary.get('broken', {}).get(name, 'no client connected')}")
    if summary.get("product") and summary.get("floor"):
        p, f = summary["product"]["delivery_ms"], summary["floor"]["delivery_ms"]
        summary["ratio_product_over_floor"] = {"p50": ratio(p["p50"], f["p50"]), "p99": ratio(p["p99"], f["p99"])}
        print("product/floor:", summary["ratio_product_over_floor"])
        print("columns: delivery latency over all rounds x clients; 'rnd p99' = median over rounds of each round's"
              " p99; 'last' = median over rounds of the slowest client; CPU/round = server process CPU ms per fan-out")
    if summary.get("server_threads_rss"):
        print("server threads / RSS:", json.dumps(summary["server_threads_rss"]))
    if summary.get("healthz_ms_with_clients_connected"):
        print("GET /healthz with the clients connected:", summary["healthz_ms_with_clients_connected"])
    if summary.get("blocking_probe"):
        print("blocking probe:", summary["blocking_probe"])
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
