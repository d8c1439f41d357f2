"""Forged webhooks: what a large body with a wrong signature costs the web process.

    .venv/bin/python bench/webhook_forged.py                      # ~1 min on a 2-core machine
    .venv/bin/python bench/webhook_forged.py --mib 25 --concurrency 8 --rounds 3 --projects 41

The review's reproduction: 8 concurrent 25 MB bodies with a wrong signature, 41 projects with their
own webhook secret. Like the other scripts it creates its own PostgreSQL database (dropped at the
end), claims a Redis database, and starts the Procfile ``web:`` line (real gunicorn). The floor is
the same requests, same sizes, same client, sent in the same run to a bare gunicorn app of the same
worker class that reads the body and answers 401 (nothing verified): what the transfer alone costs.

Per request: latency (client side, body sent until answer). Per phase: peak resident memory of the
web process group (sampled every 20 ms) above its idle size. Progress on stderr; a table and one
JSON line on stdout.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (WebProcess, bench_env, exit_on_sigterm, group_status, log, machine,  # noqa: E402
                           make_app, migrate, private_redis, procfile_web, summary_ms, throwaway_database,
                           with_app, workdir)


def floor_app(environ, start_response):
    """The floor: read the whole body, answer 401 (a /healthz for WebProcess's start check)."""
    stream = environ["wsgi.input"]
    while stream.read(64 * 1024):
        pass
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    start_response("401 UNAUTHORIZED", [("Content-Type", "application/json")])
    return [b'{"error": "floor"}']


class PeakMemory:
    def __init__(self, pgid: int):
        self.pgid, self.peak, self._stop = pgid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, group_status(self.pgid)["rss_mib"])
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def phase(web: WebProcess, url: str, body: bytes, concurrency: int, rounds: int) -> dict:
    headers = {"X-GitHub-Event": "issues", "Content-Type": "application/json",
               "X-Hub-Signature-256": "sha256=" + "0" * 64}

    def one(i):
        started = time.perf_counter()
        response = requests.post(url, data=body, headers={**headers, "X-GitHub-Delivery": f"forged-{i}"},
                                 timeout=120)
        return time.perf_counter() - started, response.status_code

    idle = group_status(web.proc.pid)["rss_mib"]
    with PeakMemory(web.proc.pid) as memory, ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(concurrency * rounds)))
    statuses = sorted({status for _, status in results})
    return {**summary_ms([seconds for seconds, _ in results]), "statuses": statuses,
            "idle_rss_mib": idle, "peak_extra_rss_mib": round(memory.peak - idle, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=float, default=25)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--projects", type=int, default=41)
    args = parser.parse_args()
    exit_on_sigterm()
    body = b'{"zeros": "' + b"0" * int(args.mib * 1024 * 1024 - 14) + b'"}'
    with throwaway_database() as database_url, private_redis() as redis_url, workdir() as work:
        env = {**bench_env(database_url, redis_url, work), "MCC_GITHUB_WEBHOOK_SECRET": secrets.token_hex(20),
               "MCC_GITHUB_WEBHOOK_RATE_LIMIT": "100000 per minute", "MCC_GITHUB_ALLOWED_REPOS": "bench"}
        migrate(env)
        app = make_app(env)
        with app.app_context():
            from mcc.extensions import db
            from mcc.secretbox import seal
            from mcc.services.projects import create_project

            for n in range(args.projects):
                project = create_project({"name": f"P{n}", "github_repo": f"bench/repo-{n}"})
                project.github_webhook_secret = seal(secrets.token_hex(20))
            db.session.commit()
            first = project.id
        command = procfile_web()
        figures = {"machine": machine(), "args": vars(args), "command": command}
        web = WebProcess(command, env, work / "web.log", "web")
        try:
            figures["global_url"] = phase(web, f"{web.base}/api/v1/webhooks/github", body, args.concurrency,
                                          args.rounds)
            figures["project_url"] = phase(web, f"{web.base}/api/v1/webhooks/github/{first}", body,
                                           args.concurrency, args.rounds)
            errors = web.errors()
        finally:
            web.stop()
        floor = WebProcess(with_app(command, "bench.webhook_forged:floor_app"), env, work / "floor.log", "floor")
        try:
            figures["floor"] = phase(floor, f"{floor.base}/api/v1/webhooks/github", body, args.concurrency,
                                     args.rounds)
        finally:
            floor.stop()
    print(f"{args.concurrency} concurrent x {args.rounds} rounds, {args.mib} MiB forged bodies, "
          f"{args.projects} project secrets")
    print(f"{'phase':<14}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'peak extra RSS MiB':>20}  statuses")
    for name in ("global_url", "project_url", "floor"):
        f = figures[name]
        print(f"{name:<14}{f['p50']:>10.0f}{f['p99']:>10.0f}{f['max']:>10.0f}{f['peak_extra_rss_mib']:>20}  "
              f"{f['statuses']}")
    if errors:
        print("errors in the web log:", *errors, sep="\n  ")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
