"""Pause-to-cancel: how long calls streaming at the gateway run on after pause-all returns.

    .venv/bin/python bench/pause_cancel.py [--runs 20] [--calls 10] [--chunk-ms 50]

Real processes: the Procfile's ``web:`` line and --calls RQ workers (``worker:``), a throwaway
PostgreSQL database, a private Redis database (bench/_common.py), and the LLM stub on loopback
streaming one word every --chunk-ms for a minute. Each run posts one message in each of --calls
conversations, waits until every call streams, POSTs /emergency/pause-all, and measures from the
moment the answer arrives to the moment the stub sees each stream closed (its next write fails);
then completes those conversations (dropping the held copies of the cancelled turns) and resumes
all. Also per call: the words streamed after pause-all returned (the overshoot), and
their price at Sonnet's $15 per million output tokens.

Floor, in the same run: the bench opens the same stream itself, closes it, and times how long
the stub takes to notice (at most one chunk interval) — the part of the figure that is the
stub's, not MCC's.

Progress goes to stderr; a table and then one JSON line go to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (ADMIN_PASSWORD, ADMIN_USER, WebProcess, bench_env, exit_on_sigterm, log,  # noqa: E402
                           login, machine, make_app, migrate, private_redis, procfile_web, summary_ms,
                           throwaway_database, workdir)
from tests.live import Process, procfile  # noqa: E402
from tests.stubs.llm import LLMStub, Step  # noqa: E402

SONNET = "anthropic/claude-3.5-sonnet"
OUTPUT_PRICE = Decimal(15) / Decimal(1_000_000)  # Sonnet, per output token (one streamed word here)


def seed(app, calls: int) -> tuple[str, list[str]]:
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.projects import create_project
    from mcc.services.users import create_user

    with app.app_context():
        create_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        project = create_project({"name": "Pause bench", "github_repo": f"bench/pause-{uuid.uuid4().hex[:8]}"})
        agents = [create_agent(project.id, {"name": f"Writer{i}", "type": "coder", "model_config": {
            "model": SONNET, "temperature": 0.2, "max_tokens": 4000}}) for i in range(calls)]
        db.session.commit()
        return str(project.id), [str(agent.id) for agent in agents]


def fresh_conversations(api: str, headers: dict, project: str, agents: list[str], run: int) -> list[str]:
    """One conversation per agent for this run (a paused turn's held copy stays with the last run's)."""
    out = []
    for i, agent in enumerate(agents):
        response = requests.post(f"{api}/projects/{project}/conversations", headers=headers, timeout=10,
                                 json={"title": f"Essay {run}.{i}", "agent_ids": [agent]})
        response.raise_for_status()
        out.append(response.json()["id"])
    return out


def close_conversations(api: str, headers: dict, project: str, conversations: list[str]) -> None:
    """Completed: the held copies of the cancelled turns are dropped, not answered on resume."""
    for conversation in conversations:
        requests.patch(f"{api}/projects/{project}/conversations/{conversation}", headers=headers, timeout=10,
                       json={"status": "completed"}).raise_for_status()


def floor_sample(stub: LLMStub) -> float:
    """The bench reads a stream, closes it itself, and times the stub noticing."""
    response = requests.post(f"{stub.base_url}/chat/completions", json={"model": SONNET, "stream": True,
                                                                         "messages": []}, stream=True, timeout=10)
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    record = stub.calls[-1]
    closed = time.time()
    response.raw.connection.sock.shutdown(2)
    response.close()
    while record.closed_at is None and not record.completed:
        time.sleep(0.002)
    return record.closed_at - closed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--chunk-ms", type=float, default=50)
    args = parser.parse_args()
    exit_on_sigterm()
    info = machine()
    stub = LLMStub()
    stub.responder = lambda body: Step(content="tok " * 1200, chunk_delay=args.chunk_ms / 1000,
                                       usage={"prompt_tokens": 10, "completion_tokens": 5})
    latencies, per_stream, overshoot_words, pause_http, floors = [], [], [], [], []
    with throwaway_database() as database_url, private_redis(13) as redis_url, workdir() as tmp:
        env = {**bench_env(database_url, redis_url, tmp), "MCC_LLM_BASE_URL": stub.base_url,
               "MCC_LLM_API_KEY": "bench-key"}
        migrate(env)
        project, agents = seed(make_app(env), args.calls)
        web = WebProcess(procfile_web(), env, tmp / "web.log", "web")
        workers = [Process(procfile()["worker"], env, tmp / f"worker-{i}.log") for i in range(args.calls)]
        try:
            deadline = time.monotonic() + 120
            while not all("*** Listening on" in w.output() for w in workers):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not start")
                time.sleep(0.2)
            token = login(web.base)
            headers = {"Authorization": f"Bearer {token}"}
            api = f"{web.base}/api/v1"
            for run in range(args.runs):
                first = len(stub.calls)
                conversations = fresh_conversations(api, headers, project, agents, run)
                for conversation in conversations:
                    requests.post(f"{api}/projects/{project}/conversations/{conversation}/messages",
                                  json={"content": "write a long essay"}, headers=headers, timeout=10)
                deadline = time.monotonic() + 60
                while True:
                    calls = stub.calls[first:]
                    if len(calls) >= args.calls and all(c.chunks_sent >= 3 for c in calls):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"run {run}: only {len(calls)} calls streaming")
                    time.sleep(0.01)
                sent = time.time()
                answer = requests.post(f"{api}/emergency/pause-all", json={"reason": f"bench run {run}"},
                                       headers=headers, timeout=10)
                returned = time.time()
                at_return = [c.chunks_sent for c in calls]
                body = answer.json()
                assert answer.status_code == 200 and body["cancelled"] == args.calls, body
                deadline = time.monotonic() + 10
                while not all(c.closed_at or c.completed for c in calls):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"run {run}: streams still open 10 s after pause-all")
                    time.sleep(0.002)
                assert not any(c.completed for c in calls)
                pause_http.append(returned - sent)
                latencies.append(max(c.closed_at for c in calls) - returned)
                per_stream.extend(c.closed_at - returned for c in calls)
                overshoot_words.extend(c.chunks_sent - n for c, n in zip(calls, at_return))
                floors.append(floor_sample(stub))
                close_conversations(api, headers, project, conversations)
                resumed = requests.post(f"{api}/emergency/resume-all", headers=headers, timeout=10)
                assert resumed.status_code == 200, resumed.text
                log(f"run {run + 1}/{args.runs}: last stream closed {latencies[-1] * 1000:.0f} ms after "
                    f"pause-all returned")
        finally:
            for worker in workers:
                worker.stop()
            web.stop()
            stub.close()
    worst_words = max(overshoot_words)
    result = {
        "machine": info, "runs": args.runs, "calls": args.calls, "chunk_ms": args.chunk_ms,
        "last_stream_closed_after_pause_ms": summary_ms(latencies),
        "each_stream_closed_after_pause_ms": summary_ms(per_stream),
        "pause_all_http_ms": summary_ms(pause_http),
        "floor_stub_notices_close_ms": summary_ms(floors),
        "overshoot_words_per_call": {"p50": sorted(overshoot_words)[len(overshoot_words) // 2],
                                     "max": worst_words},
        "overshoot_usd_per_call_max": str((OUTPUT_PRICE * worst_words).quantize(Decimal("0.000001"))),
    }
    print("| figure | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|")
    for name in ("last_stream_closed_after_pause_ms", "each_stream_closed_after_pause_ms", "pause_all_http_ms",
                 "floor_stub_notices_close_ms"):
        figures = result[name]
        print(f"| {name} | {figures['p50']} | {figures['p99']} | {figures['max']} |")
    print(f"overshoot: p50 {result['overshoot_words_per_call']['p50']} words, max {worst_words} words "
          f"= ${result['overshoot_usd_per_call_max']} per call at $15/M output")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
