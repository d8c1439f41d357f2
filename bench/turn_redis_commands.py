"""Redis commands per agent turn, by purpose: what the turn path sends to Redis, counted.

    .venv/bin/python bench/turn_redis_commands.py [--turns 10] [--warmup 3]

The stack of ``turn_overhead.py`` (its own database, Redis database 12, the Procfile's web process
and one worker, the LLM stub answering at once): after --warmup turns, a Redis MONITOR records
every command while --turns sequential turns run (POST a message -> the agent's ``message`` event,
then a short settle so the turn's last commands are in), then for as long again with no turn
(the background: RQ heartbeats, the reaper, the scheduler). Each command is put down to the
process that sent it (web or worker, through the client's port) and to a purpose (key patterns
of ``mcc.runtime.gate``, RQ, Socket.IO, ...). Round trips are estimated from the commands: a
client's commands arriving within --gap-us of each other (a pipeline, MULTI/EXEC) count as one.
Commands a Lua script runs inside Redis are not round trips and are listed apart. Not a timing
benchmark: a count.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis as redis_lib  # noqa: E402

from bench.turn_overhead import (REDIS_URL, Replies, Resources, login, start_stack, tear_down,  # noqa: E402
                                 turn_latencies)
from tests.live import Process, procfile  # noqa: E402
from tests.stubs.llm import LLMStub, Step  # noqa: E402

DB = int(REDIS_URL.rsplit("/", 1)[1])
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,40}")
EVENTS = ("agent_status", "agent_typing", "message", "budget_alert", "conversation_status", "error")

# (pattern on "COMMAND first-key", purpose); the first match wins.
PURPOSES = [
    (r"^SET mcc:lock:conversation", "gate.try_lock conversation (engine.pump)"),
    (r"^SET mcc:lock:agent", "gate.try_lock agent (engine._step)"),
    (r"^EVALSHA \S+ 1 mcc:lock:conversation", "lock release/extend conversation (Lock script)"),
    (r"^EVALSHA \S+ 1 mcc:lock:agent", "lock release/extend agent (Lock script)"),
    (r"^SET mcc:alive:turn", "gate.mark_alive turn (engine._Heartbeat)"),
    (r"^DEL mcc:alive:turn", "gate.clear_alive turn (engine._Heartbeat.__exit__)"),
    (r"^MGET mcc:emergency mcc:cancel:call", "gate.cancel_marks call+turn (cancellation.CallWatch)"),
    (r"^MGET mcc:emergency mcc:cancel:turn", "gate.cancel_marks turn (cancellation.pending_reason)"),
    (r"^GET mcc:emergency$", "gate.emergency_flag (emergency.current_state)"),
    (r"^EXISTS mcc:emergency:synced", "gate.emergency_flag synced? (emergency.current_state)"),
    (r"^EVALSHA \S+ \d+ mcc:emergency mcc:llm:inflight", "gate.acquire_llm_call (Lua gate)"),
    (r"^EVAL.* mcc:emergency mcc:llm:inflight", "gate.acquire_llm_call (Lua gate)"),
    (r"^ZREM mcc:llm:inflight", "gate.release_llm_call"),
    (r"^DEL mcc:cancel:call", "gate.clear_cancel_marks call (CallWatch.__exit__)"),
    (r"^DEL mcc:cancel:turn", "gate.clear_cancel_marks turn (cancellation.forget)"),
    (r"LIMITER", "rate limiter (Flask-Limiter)"),
    (r"rq:", "RQ"),
    (r"^(MULTI|EXEC)$", "RQ (MULTI/EXEC of its pipelines)"),
    (r"^(INFO server|SCRIPT EXISTS)", "RQ (server version, scheduler script)"),
    (r"^EVAL <script> 0$", "gate.settle_budget with no key (budget.settle, no limit)"),
    (r"^EVAL", "gate.settle_budget (Lua settle)"),
    (r"^SET mcc:once", "gate.once_per"),
    (r"^PUBLISH", "Socket.IO emit (events.publish)"),
    (r"^(EXISTS|GET) mcc:revoked", "tokens.is_revoked (web auth)"),
    (r"mcc:metrics|mcc:http", "metrics"),
]


def normalise(args: list[str]) -> str:
    """The command and its first keys, ids replaced: what groups alike commands."""
    name = args[0].upper()
    if name in ("EVAL", "EVALSHA"):
        head = [name, "<script>" if name == "EVAL" else args[1][:8], *args[2:3]]
        keys = args[3:3 + int(args[2])] if len(args) > 2 and args[2].isdigit() else []
        text = " ".join(head + keys)
    elif name == "PUBLISH":
        event = next((e for e in EVENTS if f"'{e}'" in args[2] or f'"{e}"' in args[2] or e in args[2]), "?") \
            if len(args) > 2 else "?"
        text = f"PUBLISH {args[1]} [{event}]"
    else:
        text = " ".join([name, *args[1:3]]) if name in ("MGET", "DEL", "EXISTS") else " ".join([name, *args[1:2]])
    return ID.sub("<id>", text)


def purpose_of(command: str) -> str:
    for pattern, purpose in PURPOSES:
        if re.search(pattern, command):
            return purpose
    return "other"


def port_owners(groups: dict[int, str]) -> dict[int, str]:
    """Local port of each TCP connection to Redis -> 'web' / 'worker' (by process group)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True).stdout
    owners = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[3].endswith(":6379"):
            continue
        port = int(parts[2].rsplit(":", 1)[1])
        for pid in re.findall(r"pid=(\d+)", line):
            try:
                owners[port] = groups.get(os.getpgid(int(pid)), "?")
            except ProcessLookupError:
                pass
    return owners


class Monitor:
    """A MONITOR connection recording (time, client port, client type, args) of database ``DB``."""

    def __init__(self):
        self.client = redis_lib.Redis.from_url(REDIS_URL, decode_responses=True)
        self.entries: list[tuple[float, str, str, list[str]]] = []
        self.recording = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        with self.client.monitor() as monitor:
            self.ready.set()
            while True:
                raw = monitor.connection.read_response()
                raw = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                if not self.recording:
                    continue
                match = monitor.monitor_re.match(raw.split(" ", 1)[1])
                if match is None or int(match.group(1)) != DB:
                    continue
                client = match.group(2)
                args = [a.replace('\\"', '"') for a in monitor.command_re.findall(match.group(3))]
                at = float(raw.split(" ", 1)[0].lstrip("+"))
                self.entries.append((at, client.rsplit(":", 1)[1] if ":" in client else "",
                                     "lua" if client == "lua" else "tcp", args))

    def take(self) -> list:
        taken, self.entries = self.entries, []
        return taken


def tally(entries, owners, gap: float) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """(commands by process, purpose and command; round trips by process and purposes; commands run
    inside Lua scripts). A round trip: a client's commands that reach Redis less than ``gap``
    seconds apart with no other client's command between them (a pipeline, a MULTI/EXEC block):
    an estimate, as MONITOR does not show where a client's writes begin."""
    commands, trips, in_lua = collections.Counter(), collections.Counter(), collections.Counter()
    batch: list = []  # (process, purpose) of the current round trip
    last_port, last_at = None, 0.0

    def close():
        if batch:
            purposes = " + ".join(dict.fromkeys(purpose for _, purpose in batch))
            trips[(batch[0][0], purposes)] += 1
            batch.clear()

    for at, port, client_type, args in entries:
        command = normalise(args)
        if client_type == "lua":
            in_lua[command] += 1
            continue
        process = owners.get(int(port), "?") if str(port).isdigit() else "?"
        purpose = purpose_of(command)
        commands[(process, purpose, command)] += 1
        if port != last_port or at - last_at > gap:
            close()
        batch.append((process, purpose))
        last_port, last_at = port, at
    close()
    return commands, trips, in_lua


def show(title: str, commands: collections.Counter, trips: collections.Counter, n: int) -> None:
    print(f"\n{title}: {sum(commands.values()) / n:.1f} commands, {sum(trips.values()) / n:.1f} round trips "
          "(estimated) per turn")
    print("  round trips, by process and purpose (a + joins what went in one trip):")
    for (process, purposes), count in sorted(trips.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        print(f"    {count / n:6.2f}  {process:6} {purposes}")
    print("  commands, by process and purpose:")
    by_purpose = collections.Counter()
    for (process, purpose, _), count in commands.items():
        by_purpose[(process, purpose)] += count
    for (process, purpose), count in sorted(by_purpose.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        print(f"    {count / n:6.2f}  {process:6} {purpose}")
        for (p2, pur2, command), c2 in sorted(commands.items(), key=lambda kv: (-kv[1], kv[0][2])):
            if (p2, pur2) == (process, purpose):
                print(f"            {c2 / n:6.2f}  {command[:110]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after each reply for the turn's tail")
    parser.add_argument("--gap-us", type=float, default=60,
                        help="a client's commands closer than this (microseconds) count as one round trip")
    args = parser.parse_args()

    resources = Resources()
    stub = LLMStub()
    stub.default = Step(content="done", usage={"prompt_tokens": 1000, "completion_tokens": 500})
    processes: list[Process] = []
    replies = None
    workdir = Path(tempfile.mkdtemp(prefix="mcc-bench-logs-"))
    try:
        env, teams, base = start_stack(resources, stub, 1, workdir, processes)
        worker = Process(procfile()["worker"], env, workdir / f"worker-{uuid.uuid4().hex[:6]}.log")
        processes.append(worker)
        deadline = time.monotonic() + 60
        while not resources.redis.smembers("rq:workers:agent"):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not register")
            time.sleep(0.1)
        groups = {processes[0].proc.pid: "web", worker.proc.pid: "worker"}
        session, token = login(base)
        replies = Replies(base, token, [teams[0]["conversation"]])
        turn_latencies(session, base, teams[0], replies, args.warmup)
        time.sleep(1)

        monitor = Monitor()
        monitor.recording = True
        started = time.monotonic()
        for _ in range(args.turns):
            turn_latencies(session, base, teams[0], replies, 1)
            time.sleep(args.settle)
        elapsed = time.monotonic() - started
        turn_entries = monitor.take()
        time.sleep(elapsed)
        idle_entries = monitor.take()
        monitor.recording = False
        owners = port_owners(groups)

        gap = args.gap_us / 1e6
        commands, trips, in_lua = tally(turn_entries, owners, gap)
        idle_commands, idle_trips, _ = tally(idle_entries, owners, gap)
        show(f"During {args.turns} turns ({elapsed:.1f} s)", commands, trips, args.turns)
        show(f"Background: as long again with no turn (per turn's share of time, {args.turns} slices)",
             idle_commands, idle_trips, args.turns)
        print(f"\nRun inside Lua scripts (not round trips), per turn: {sum(in_lua.values()) / args.turns:.1f}")
        for command, count in in_lua.most_common():
            print(f"  {count / args.turns:6.2f}  {command[:110]}")
        return 0
    finally:
        tear_down(replies, processes, stub, resources)


if __name__ == "__main__":
    sys.exit(main())
