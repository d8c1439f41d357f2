"""Exactly once: redelivered jobs and killed workers neither lose a turn nor answer it twice."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import SONNET, agent_replies, db_rows, runtime, start_runtime, system_notes  # noqa: F401

pytestmark = pytest.mark.live


def _agent_queue(runtime) -> Queue:
    return Queue("agent", connection=Redis.from_url(runtime.env["REDIS_URL"]), serializer=JSONSerializer)


def _wait_finished(runtime, jobs: list[Job], timeout: float = 30) -> list:
    def done():
        for job in jobs:
            job.refresh()
        return all(job.get_status() in ("finished", "failed") for job in jobs)
    runtime.wait_for(done, timeout)
    return [job.return_value() for job in jobs]


def _turns(app, team):
    from mcc.models.turn import Turn

    return db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))


def _ledger(app, team):
    from mcc.models.turn import LedgerEntry

    return db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))


def test_redelivered_jobs_never_store_a_second_reply_or_ledger_row(runtime, llm, app):
    """Driving a finished conversation again, or re-running the job that answered, changes nothing."""
    team = make_team(app, ("Ada", "architect", SONNET))
    runtime.post(team["project"], team["conversation"], "hi")
    runtime.wait_for(lambda: agent_replies(runtime, team))
    queue = _agent_queue(runtime)
    # The job that ran the turn, delivered again as it was.
    registry = FinishedJobRegistry("agent", connection=queue.connection, serializer=JSONSerializer)
    finished = lambda: [Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)  # noqa: E731
                        for job_id in registry.get_job_ids()]
    [ran] = runtime.wait_for(lambda: [job for job in finished() if job.return_value() == "ran"])
    assert ran.func_name == "workers.agent.drive_conversation" and ran.args == [team["conversation"]]
    assert team["conversation"] in ran.description
    again = queue.enqueue_job(ran)
    extra = [queue.enqueue("workers.agent.drive_conversation", team["conversation"]) for _ in range(3)]
    # The pool runs them at once: those that meet the conversation lock of another end "busy".
    assert set(_wait_finished(runtime, extra)) <= {"idle", "busy"}
    # The re-delivered job ran a second time (a second result), and found nothing to do.
    assert [r.return_value for r in runtime.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        again.results()))] in (["idle", "ran"], ["busy", "ran"])  # newest first
    assert len(agent_replies(runtime, team)) == 1
    assert len(_ledger(app, team)) == 1 and len(llm.calls) == 1
    [turn] = _turns(app, team)
    assert (turn.status, turn.attempts) == ("succeeded", 1)


def test_a_job_delivered_twice_while_its_turn_runs_does_not_run_it_twice(start_runtime, llm, app):
    """Two workers, one slow LLM call, duplicate jobs: one call, one reply, one ledger row."""
    runtime = start_runtime(workers=2)
    team = make_team(app, ("Ada", "architect", SONNET))
    release = threading.Event()  # the call runs until the duplicates are done, however slowly they start
    llm.default = Step(content="slow answer", hold=release, usage={"prompt_tokens": 10, "completion_tokens": 5})
    runtime.post(team["project"], team["conversation"], "hi")
    runtime.wait_for(lambda: llm.calls, interval=0.05)
    queue = _agent_queue(runtime)
    duplicates = [queue.enqueue("workers.agent.drive_conversation", team["conversation"]) for _ in range(4)]
    try:
        outcomes = _wait_finished(runtime, duplicates)
    finally:
        release.set()
    assert "busy" in outcomes  # at least one met the running pump's lock
    runtime.wait_for(lambda: agent_replies(runtime, team))
    time.sleep(1)
    assert len(agent_replies(runtime, team)) == 1
    assert len(llm.calls) == 1 and len(_ledger(app, team)) == 1


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_mid_turn(runtime, llm, app, team):
    """Post a message, and SIGKILL the worker (and its work horse) while the LLM call hangs."""
    first_call = []

    def responder(body):
        if not first_call:
            first_call.append(time.time())
            return Step(content="never delivered", delay=60)
        return Step(content="answered after the crash", usage={"prompt_tokens": 10, "completion_tokens": 5})

    llm.responder = responder
    runtime.post(team["project"], team["conversation"], "hi")
    runtime.wait_for(lambda: llm.calls, interval=0.05)
    [worker] = runtime.workers
    # RQ's work horse runs in its own process group (os.setpgrp): kill it too, as a lost machine would.
    family = _descendants(worker.proc.pid)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.proc.wait(10)
    killed_at = time.monotonic()
    [turn] = _turns(app, team)
    assert turn.status == "running"
    return killed_at


def test_a_turn_whose_worker_is_sigkilled_is_retried_and_answered_once(start_runtime, llm, app):
    """MCC_TURN_MAX_ATTEMPTS=2 (default): the abandoned turn runs again on another worker."""
    runtime = start_runtime()
    team = make_team(app, ("Ada", "architect", SONNET))
    killed_at = _kill_mid_turn(runtime, llm, app, team)
    runtime.workers.append(runtime.start_worker())
    [reply] = runtime.wait_for(lambda: agent_replies(runtime, team), timeout=120)
    recovered_in = time.monotonic() - killed_at
    assert reply["content"] == "answered after the crash"
    assert recovered_in < 120
    time.sleep(1)
    assert len(agent_replies(runtime, team)) == 1 and len(llm.calls) == 2
    [turn] = _turns(app, team)
    assert (turn.status, turn.attempts) == ("succeeded", 2)
    # The killed call never answered: only the retry is on the ledger.
    assert [(e.attempt, e.call_index) for e in _ledger(app, team)] == [(2, 0)]
    assert "abandoned by its worker; retrying" in runtime.logs()
    print(f"recovered {recovered_in:.1f} s after the kill")


def test_a_sigkilled_turn_with_no_attempts_left_is_marked_failed_with_a_system_message(start_runtime, llm, app):
    runtime = start_runtime(MCC_TURN_MAX_ATTEMPTS="1")
    team = make_team(app, ("Ada", "architect", SONNET))
    killed_at = _kill_mid_turn(runtime, llm, app, team)
    runtime.workers.append(runtime.start_worker())
    [note] = runtime.wait_for(lambda: system_notes(runtime, team), timeout=120)
    assert time.monotonic() - killed_at < 120
    assert note["content"] == "Ada could not answer: its worker died 1 time(s) while running it"
    [turn] = _turns(app, team)
    assert (turn.status, turn.attempts) == ("failed", 1)
    agent = runtime.api("GET", f"/projects/{team['project']}/agents/{team['agents']['Ada']}").json()
    assert agent["status"] == "error"
    assert not agent_replies(runtime, team) and len(llm.calls) == 1
    # The conversation is not stuck: the next message is answered.
    runtime.post(team["project"], team["conversation"], "still there?")
    runtime.wait_for(lambda: agent_replies(runtime, team), timeout=60)
