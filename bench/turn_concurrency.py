"""Turns waiting on a slow model at once: 100 turns in 100 conversations, the stub answering after 2 s.

    .venv/bin/python bench/turn_concurrency.py [--turns 100] [--delay 2] [--workers 1 2]

For each worker count: the Procfile's `web:` and that many `worker:` processes; ``--turns`` messages
POSTed at once (one per conversation, 16 client threads) -> every agent reply seen as a Socket.IO
`message` event. Reports the wall time from the first POST to the last reply, turns per second,
the most calls the stub saw at once, and MCC's memory at the peak: the PSS of every process of
web and workers (``/proc/<pid>/smaps_rollup``, children included), sampled every 0.2 s.
Same resources as turn_overhead.py (its own database, Redis database 12, its own LLM stub).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.turn_overhead import Replies, Resources, log, login, machine, start_stack, tear_down  # noqa: E402
from tests.live import Process, procfile  # noqa: E402
from tests.stubs.llm import LLMStub, Step  # noqa: E402


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


class PssSampler:
    def __init__(self, roots: list[int]):
        self.roots, self.peak, self.stop = roots, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, pss_mb([pid for root in self.roots for pid in tree(root)]))

    def close(self) -> float:
        self.stop.set()
        self.thread.join(2)
        return self.peak


def run(args, workers: int) -> dict:
    resources = Resources()
    stub = LLMStub()
    stub.default = Step(content="done", delay=args.delay, usage={"prompt_tokens": 1000, "completion_tokens": 500})
    processes: list[Process] = []
    replies = None
    workdir = Path(tempfile.mkdtemp(prefix="mcc-bench-logs-"))
    try:
        env, teams, base = start_stack(resources, stub, args.turns, workdir, processes)
        for _ in range(workers):
            processes.append(Process(procfile()["worker"], env, workdir / f"worker-{uuid.uuid4().hex[:6]}.log"))
        deadline = time.monotonic() + 60
        while len(resources.redis.smembers("rq:workers:agent")) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            time.sleep(0.1)
        time.sleep(1)
        session, token = login(base, connections=16)
        replies = Replies(base, token, [t["conversation"] for t in teams])
        idle_pss = pss_mb([pid for p in processes for pid in tree(p.proc.pid)])
        sampler = PssSampler([p.proc.pid for p in processes])
        urls = [f"{base}/api/v1/projects/{t['project']}/conversations/{t['conversation']}/messages" for t in teams]

        def post(url):
            response = session.post(url, json={"content": "go"}, timeout=30)
            assert response.status_code == 201, response.text

        log(f"{workers} worker(s): {len(urls)} turns of {args.delay} s posted at once")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(post, urls))
        posted = time.perf_counter() - started
        finished = replies.wait_count(len(urls), timeout=300)
        peak = sampler.close()
        elapsed = finished - started
        return {"workers": workers, "turns": len(urls), "stub_delay_s": args.delay,
                "wall_seconds": round(elapsed, 2), "posting_seconds": round(posted, 2),
                "turns_per_second": round(len(urls) / elapsed, 1), "max_calls_in_flight": stub.max_in_flight,
                "pss_mb_idle": idle_pss, "pss_mb_peak": peak,
                "processes": len([pid for p in processes for pid in tree(p.proc.pid)])}
    finally:
        tear_down(replies, processes, stub, resources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the stub takes to answer")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    runs = [run(args, count) for count in args.workers]
    print(json.dumps({"machine": machine(),
                      "command": " ".join([".venv/bin/python", "bench/turn_concurrency.py", *sys.argv[1:]]),
                      "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
