"""The live channel as a team uses it: real socket.io-client 4.x (JS) clients against the Procfile's
`web:` line as shipped, with the fan-out floor measured in the same run.

Usage (from the repository root; needs Node.js >= 18 and `npm ci` in bench/js, done here if missing):
    .venv/bin/python bench/live_channel.py                        # every scenario, ~6 min
    .venv/bin/python bench/live_channel.py --scenarios fanout --clients 500 --rounds 20
    .venv/bin/python bench/live_channel.py --scenarios fanout --clients 2000 --rounds 10
    .venv/bin/python bench/live_channel.py --scenarios storm,anonymous

Scenarios (bench/js/clients.mjs runs the clients; this script runs everything else):
  fanout     N clients connect at once, authenticate, `join_conversation`, then `--rounds` messages
             are POSTed over REST one at a time; delivery latency per client = receipt of `message`
             - the moment just before the POST. Then the same against the floor
             (bench/floor_server.py: bare Flask-SocketIO, same gunicorn line, same Redis queue,
             `POST /emit`, no DB, no auth). Server CPU per fan-out, threads and RSS with N clients.
  storm      --storm clients start connecting within one second; each must get `connect` (then
             join) or `connect_error` within 30 s; the joined must receive the next message;
             GET /healthz and GET /api/v1/auth/me are timed every 100 ms throughout.
  anonymous  --anonymous bare Engine.IO websockets from ONE address that never authenticate;
             /healthz and REST timed throughout; how many the server closes, and when.

Clients of fanout and storm come from distinct loopback addresses (127.1.x.y, one per client), as
a team's browsers would; MCC's per-address socket cap (MCC_SOCKET_MAX_PER_IP, 50) stays as shipped.

Self-contained like the other benchmarks: a throwaway PostgreSQL database, a private redis-server,
the product and the floor as real gunicorn processes, everything cleaned up on exit. Table on
stdout, then one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench._common import (BENCH, WebProcess, bench_env, exit_on_sigterm, group_status, log, login,  # noqa: E402
                           machine, migrate, private_redis, procfile_web, ratio, redis_server,
                           throwaway_database, with_app, workdir)
from bench.socket_fanout import group_cpu_seconds, seed  # noqa: E402

JS = BENCH / "js"


def ensure_js() -> None:
    if not (JS / "node_modules" / "socket.io-client").exists():
        log("npm ci in bench/js")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, stdout=subprocess.DEVNULL)


class Clients:
    """One run of bench/js/clients.mjs; calls ``on_event(name)`` for each progress line it prints."""

    def __init__(self, job: dict, on_event=None):
        self.proc = subprocess.Popen(["node", "clients.mjs", json.dumps(job)], cwd=JS, stdout=subprocess.PIPE,
                                     text=True)
        self.result = None
        for line in self.proc.stdout:
            message = json.loads(line)
            if message["event"] == "result":
                self.result = message["result"]
            elif on_event:
                on_event(message["event"])
        self.proc.wait()
        if self.result is None:
            raise RuntimeError(f"clients.mjs exited {self.proc.returncode} without a result")


def fanout(name: str, server: WebProcess, job: dict) -> dict:
    marks: dict = {}

    def on_event(event: str):
        marks[event] = (group_cpu_seconds(server.proc.pid), group_status(server.proc.pid))

    idle = group_status(server.proc.pid)
    result = Clients({"scenario": "fanout", "name": name, "base": server.base, **job}, on_event).result
    if "ready" in marks and "rounds done" in marks and result["rounds"]:
        result["server_cpu_ms_per_fanout"] = round(
            (marks["rounds done"][0] - marks["ready"][0]) * 1000 / result["rounds"], 1)
        result["server_idle"] = idle
        result["server_with_clients"] = marks["ready"][1]
    return result


def settle(server: WebProcess, seconds: float = 3) -> None:
    """Let disconnects finish before the next scenario; check the server still answers."""
    time.sleep(seconds)
    requests.get(f"{server.base}/healthz", timeout=10).raise_for_status()


def run(args, env: dict, ids: dict, tmp: Path) -> dict:
    result: dict = {}
    web = procfile_web()
    product = WebProcess(web, env, tmp / "product.log", "product")
    floor = None
    try:
        floor = WebProcess(with_app(web, "bench.floor_server:app"), {**env, "MCC_SOCKETIO_ASYNC_MODE": "gevent"},
                           tmp / "floor.log", "floor")
        result["command"] = web
        token = login(product.base)
        messages_url = f"{product.base}/api/v1/projects/{ids['project']}/conversations/{ids['conversation']}/messages"
        template = requests.post(messages_url, json={"content": "template"}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"}).json()
        product_job = {"token": token, "join_event": "join_conversation",
                       "join_data": {"conversation_id": ids["conversation"]}, "post_url": messages_url,
                       "post_token": token}
        floor_job = {"join_event": "join", "join_data": {}, "post_url": f"{floor.base}/emit",
                     "post_template": {k: v for k, v in template.items() if k != "content"}}
        scenarios = args.scenarios.split(",")
        if "fanout" in scenarios:
            for n in [int(c) for c in args.clients.split(",")]:
                common = {"clients": n, "rounds": args.rounds, "round_timeout_ms": 30000}
                log(f"fanout {n}: product")
                product_result = fanout("product", product, {**product_job, **common})
                settle(product)
                log(f"fanout {n}: floor")
                floor_result = fanout("floor", floor, {**floor_job, **common})
                settle(floor)
                result[f"fanout_{n}"] = {"product": product_result, "floor": floor_result}
        if "storm" in scenarios:
            log(f"storm of {args.storm}")
            result["storm"] = Clients({"scenario": "storm", "base": product.base, "clients": args.storm,
                                       "spread_ms": 1000, "answer_s": 30, **product_job}).result
            settle(product)
        if "anonymous" in scenarios:
            log(f"{args.anonymous} anonymous websockets from one address")
            result["anonymous"] = Clients({"scenario": "anonymous", "base": product.base, "token": token,
                                           "clients": args.anonymous, "hold_ms": 8000}).result
            settle(product)
    finally:
        result["log_errors"] = {"product": product.errors(), **({"floor": floor.errors()} if floor else {})}
        for process in (floor, product):
            if process is not None:
                process.stop()
    return result


def print_table(summary: dict) -> None:
    for key, pair in summary.items():
        if not key.startswith("fanout_"):
            continue
        print(f"\n== {key}: one message to every client, {summary['rounds']} rounds, ms ==")
        print(f"{'server':<9}{'joined':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'rnd p99':>9}{'max':>8}{'missing':>9}"
              f"{'CPU/fan-out':>13}{'threads':>9}{'RSS MiB':>9}")
        for name in ("product", "floor"):
            r = pair[name]
            d = r["delivery_ms"]
            status = r.get("server_with_clients", {})
            print(f"{name:<9}{r['joined']:>8}{d['p50']:>8}{d['p90']:>8}{d['p99']:>8}{r['median_round_p99_ms']:>9.0f}"
                  f"{d['max']:>8}{r['missing_deliveries']:>9}{r.get('server_cpu_ms_per_fanout', 'n/a'):>13}"
                  f"{status.get('threads', 'n/a'):>9}{status.get('rss_mib', 'n/a'):>9}")
        p, f = pair["product"]["delivery_ms"], pair["floor"]["delivery_ms"]
        pair["product_over_floor"] = {"p50": ratio(p["p50"], f["p50"]), "p99": ratio(p["p99"], f["p99"])}
        print("product/floor:", pair["product_over_floor"], "| connect (all at once):",
              pair["product"]["outcomes"], f"in {pair['product']['connect_all_s']} s")
    if "storm" in summary:
        s = summary["storm"]
        print(f"\n== storm: {s['clients']} clients within {s['spread_ms']} ms ==")
        print("outcomes:", s["outcomes"], "| every client answered:", s["every_client_answered"],
              f"| all answered within {s['all_answered_s']} s | answer ms {s['answer_ms']}")
        print("next event:", s["next_event"])
        print("during the storm: /healthz", s["during_storm"]["healthz_ms"], "REST", s["during_storm"]["rest_ms"],
              "failures", s["during_storm"]["failure_count"])
    if "anonymous" in summary:
        a = summary["anonymous"]
        print(f"\n== {a['clients']} anonymous websockets from one address ==")
        print("outcomes:", a["outcomes"], f"| closed by the server: {a['closed_by_server']}/{a['opened']}",
              "after ms", a["closed_by_server_after_ms"])
        print("during: /healthz", a["during"]["healthz_ms"], "REST", a["during"]["rest_ms"],
              "failures", a["during"]["failure_count"])
    print("\nserver log errors:", summary.get("log_errors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="fanout,storm,anonymous")
    parser.add_argument("--clients", default="500,2000", help="fan-out sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--anonymous", type=int, default=1000)
    args = parser.parse_args()
    exit_on_sigterm()
    ensure_js()
    summary: dict = {"bench": "live_channel", "rounds": args.rounds, "machine": machine(),
                     "load_1min_at_start": os.getloadavg()[0]}
    with workdir() as tmp, throwaway_database() as database_url, redis_server("private") as redis_base, \
            private_redis(base_url=redis_base) as redis_url:
        env = bench_env(database_url, redis_url, tmp / "instance")
        migrate(env)
        ids = seed(env)
        summary.update(run(args, env, ids, tmp))
    summary["load_1min_at_end"] = os.getloadavg()[0]
    print_table(summary)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
