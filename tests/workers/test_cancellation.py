"""Stop means stopped: calls streaming at the gateway are closed within a second, on record.

The stub streams slowly (a word every 50 ms for a minute); pause-all, a conversation pause and a
budget block reached by another call's settlement must close those streams (the stub records
when the client hung up), put the partial calls in the ledger and end their turns ``cancelled``.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import SONNET, db_rows, start_runtime, system_notes, who_is_asked  # noqa: F401

pytestmark = pytest.mark.live

USAGE = {"prompt_tokens": 10, "completion_tokens": 5}
SLOW = dict(content="tok " * 1200, chunk_delay=0.05)  # a minute of streaming


def slow(body) -> Step:
    return Step(**SLOW, usage=USAGE)


def streaming(llm, count: int, min_chunks: int = 3):
    """The first ``count`` calls once each has streamed ``min_chunks`` chunks."""
    def ready():
        calls = list(llm.calls)
        return calls if len(calls) >= count and all(c.chunks_sent >= min_chunks for c in calls[:count]) else None
    return ready


def turns_of(app, conversation: str) -> list:
    from mcc.models.turn import Turn

    return db_rows(app, Turn, conversation_id=uuid.UUID(conversation))


def ledger_of(app, conversation: str) -> list:
    from mcc.models.turn import LedgerEntry

    return db_rows(app, LedgerEntry, conversation_id=uuid.UUID(conversation))


def wait_closed(runtime, calls, timeout: float = 10):
    return runtime.wait_for(lambda: all(c.closed_at or c.completed for c in calls), timeout=timeout,
                            interval=0.05)


def test_pause_all_closes_10_streaming_calls_within_a_second_and_resume_all_continues(start_runtime, llm, app):
    runtime = start_runtime(workers=10)
    teams = [make_team(app, ("Ada", "architect", SONNET), title=f"Stream {i}") for i in range(10)]
    llm.responder = slow
    for team in teams:
        runtime.post(team["project"], team["conversation"], "write a long essay")
    calls = runtime.wait_for(streaming(llm, 10), timeout=90, interval=0.05)

    response = runtime.api("POST", "/emergency/pause-all", json={"reason": "stop the essays"})
    returned = time.time()
    assert response.status_code == 200, response.text
    assert (response.json()["calls_in_flight"], response.json()["cancelled"]) == (10, 10)
    wait_closed(runtime, calls)
    assert all(c.closed_at and not c.completed for c in calls)
    latest = max(c.closed_at for c in calls) - returned
    assert latest < 1.0, f"the last stream closed {latest:.3f} s after pause-all returned"

    for team in teams:
        turns = runtime.wait_for(lambda: (lambda t: t if sorted(x.status for x in t) == ["cancelled", "held"]
                                          else None)(turns_of(app, team["conversation"])))
        turn = next(t for t in turns if t.status == "cancelled")
        assert turn.error == "all agents were paused (stop the essays)"
        [entry] = ledger_of(app, team["conversation"])
        # What streamed until the close, priced from the table and marked as an estimate.
        assert entry.tokens_out > 0 and entry.cost_usd > 0 and entry.cost_source == "estimated"
        [note] = runtime.wait_for(lambda: system_notes(runtime, team))
        assert note["content"].startswith("Ada was stopped: all agents were paused (stop the essays).")
    time.sleep(0.5)
    assert not llm.calls_after(returned)

    # Resume-all: the message each paused turn was answering is answered again, in full.
    llm.responder = lambda body: Step(content="short answer", usage=USAGE)
    assert runtime.api("POST", "/emergency/resume-all", token=runtime.login("admin")).status_code == 200
    for team in teams:
        runtime.wait_for(lambda: [t for t in turns_of(app, team["conversation"]) if t.status == "succeeded"])


def _project_with_streams(app, names: list[str]) -> dict:
    """One project, one conversation per agent: their calls can stream at the same time."""
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project

    with app.app_context():
        project = create_project({"name": "Streams", "github_repo": f"octo/st-{uuid.uuid4().hex[:8]}"})
        out = {"project": str(project.id), "conversations": {}, "agents": {}}
        for name in names:
            agent = create_agent(project.id, {"name": name, "type": "coder", "model_config": {
                "model": SONNET, "temperature": 0.2, "max_tokens": 1000}})
            conversation = create_conversation(project.id, None, {"title": name, "agent_ids": [agent.id]})
            out["conversations"][name], out["agents"][name] = str(conversation.id), str(agent.id)
        db.session.commit()
        return out


def test_a_conversation_pause_closes_only_that_conversations_call(start_runtime, llm, app):
    runtime = start_runtime(workers=2)
    streams = _project_with_streams(app, ["Ada", "Bob"])
    # Ada's call streams until the pause closes it, however late Bob's starts; Bob's ends by itself in 3 s.
    llm.responder = lambda body: (slow(body) if who_is_asked(body) == "Ada"
                                  else Step(content="tok " * 60, chunk_delay=0.05, usage=USAGE))
    for name in ("Ada", "Bob"):
        runtime.post(streams["project"], streams["conversations"][name], "go")
    calls = runtime.wait_for(streaming(llm, 2), timeout=60, interval=0.05)
    ada_call = next(c for c in calls if who_is_asked(c.body) == "Ada")
    bob_call = next(c for c in calls if who_is_asked(c.body) == "Bob")

    path = f"/projects/{streams['project']}/conversations/{streams['conversations']['Ada']}/pause"
    assert runtime.api("POST", path).status_code == 200
    returned = time.time()
    wait_closed(runtime, [ada_call])
    assert ada_call.closed_at and ada_call.closed_at - returned < 1.0
    turns = runtime.wait_for(lambda: (lambda t: t if sorted(x.status for x in t) == ["cancelled", "held"]
                                      else None)(turns_of(app, streams["conversations"]["Ada"])))
    assert next(t for t in turns if t.status == "cancelled").error == "the conversation was paused"
    # Bob's conversation was not paused: his answer streams to the end.
    wait_closed(runtime, [bob_call])
    assert bob_call.completed and bob_call.closed_at is None
    runtime.wait_for(lambda: [t for t in turns_of(app, streams["conversations"]["Bob"]) if t.status == "succeeded"])
    assert len(ledger_of(app, streams["conversations"]["Ada"])) == 1


def test_a_block_reached_by_another_calls_settlement_closes_the_calls_in_flight(start_runtime, llm, app):
    """Two calls stream; a third settles at a gateway-reported cost above the project's block limit."""
    runtime = start_runtime(workers=3)
    streams = _project_with_streams(app, ["Slow1", "Slow2", "Pricey"])
    admin = runtime.login("admin")
    created = runtime.api("POST", "/budget/limits", token=admin, json={
        "name": "project cap", "scope_type": "project", "scope_id": streams["project"], "amount_usd": 0.1,
        "period": "daily", "alert_threshold": 0.8, "action_on_exceed": "block"})
    assert created.status_code == 201, created.text

    def responder(body):
        if who_is_asked(body) == "Pricey":
            # Waits until both slow calls stream, then reports a cost the reservation did not foresee.
            return Step(content="expensive", delay=0.5, usage={**USAGE, "cost": 0.5})
        return slow(body)

    llm.responder = responder
    for name in ("Slow1", "Slow2"):
        runtime.post(streams["project"], streams["conversations"][name], "go")
    slow_calls = runtime.wait_for(streaming(llm, 2), timeout=60, interval=0.05)
    runtime.post(streams["project"], streams["conversations"]["Pricey"], "go")
    pricey = runtime.wait_for(lambda: [c for c in llm.calls if c.completed and who_is_asked(c.body) == "Pricey"],
                              interval=0.05)[0]
    done = time.time()
    wait_closed(runtime, slow_calls)
    assert all(c.closed_at and not c.completed for c in slow_calls)
    latest = max(c.closed_at for c in slow_calls) - done
    assert latest < 1.0, f"closed {latest:.3f} s after the expensive call ended"
    for name in ("Slow1", "Slow2"):
        [turn] = runtime.wait_for(lambda: (lambda t: t if t[0].status == "cancelled" else None)(
            turns_of(app, streams["conversations"][name])))
        assert "budget limit 'project cap'" in turn.error
        assert len(ledger_of(app, streams["conversations"][name])) == 1
    assert pricey.body["model"] == SONNET
    # The gate refuses anything new under the reached limit.
    runtime.post(streams["project"], streams["conversations"]["Slow1"], "again")
    runtime.wait_for(lambda: [t for t in turns_of(app, streams["conversations"]["Slow1"]) if t.status == "failed"])


def test_a_call_marked_between_the_gate_and_the_send_never_leaves(app, monkeypatch):
    """Pause-all lands after a call passed the gate but before it was sent: the call watch sees the
    mark on entry, so the gateway refuses to send (no wait for the first poll)."""
    from mcc.llm.gateway import CancelToken
    from mcc.runtime import cancellation, gate

    with app.app_context():
        # No poll within this test, only the entry check (the app is the session's: set back after it).
        monkeypatch.setitem(app.config, "MCC_CANCEL_POLL_SECONDS", 60)
        call_id = gate.acquire_llm_call(lambda: None, [], lambda i: 0)
        assert call_id is not None
        turn_id = uuid.uuid4()
        in_flight, marked = gate.set_emergency_flag({"reason": "test", "triggered_by": "user"},
                                                    cancel_reason=cancellation.reason_of(cancellation.PAUSE, "test"))
        try:
            assert (in_flight, marked) == (1, 1)
            token = CancelToken()
            with cancellation.CallWatch(call_id, turn_id, token):
                assert token.reason is not None and "test" in token.reason
            untouched = CancelToken()  # a call the pause did not mark, with the flag cleared
            gate.set_emergency_flag(None)
            other = gate.acquire_llm_call(lambda: None, [], lambda i: 0)
            with cancellation.CallWatch(other, uuid.uuid4(), untouched):
                assert untouched.reason is None
            gate.release_llm_call(other)
        finally:
            gate.set_emergency_flag(None)
            gate.release_llm_call(call_id)

