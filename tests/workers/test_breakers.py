"""Runaway breakers with real workers: a model repeating a tool call, a project spending too fast."""
from __future__ import annotations

import json
import uuid

import pytest

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import SONNET, Listener, db_rows, start_runtime, system_notes  # noqa: F401

pytestmark = pytest.mark.live


def tool_call(n: int | None = None) -> dict:
    """list_participants, with the same arguments each time (n=None) or new ones (n)."""
    return {"id": f"call_{uuid.uuid4().hex[:6]}", "type": "function",
            "function": {"name": "list_participants", "arguments": "{}" if n is None else json.dumps({"n": n})}}


def test_a_model_repeating_the_same_tool_call_is_stopped_at_the_third_ask(start_runtime, llm, app):
    from mcc.models.control import Notification
    from mcc.models.turn import Turn

    runtime = start_runtime()
    team = make_team(app, ("Ada", "architect", SONNET))
    listener = Listener(runtime.base, runtime.token)
    try:
        llm.responder = lambda body: Step(content=None, tool_calls=[tool_call()],
                                          usage={"prompt_tokens": 10, "completion_tokens": 5})
        runtime.post(team["project"], team["conversation"], "list everyone, again and again")
        event = listener.next("breaker_tripped", timeout=30,
                              where=lambda d: d.get("conversation_id") == team["conversation"])
    finally:
        listener.close()
    assert (event["breaker"], event["tool"], event["times"]) == ("loop", "list_participants", 3)
    [note] = runtime.wait_for(lambda: system_notes(runtime, team))
    assert note["content"].startswith("Ada was stopped: it asked for `list_participants` with the same "
                                      "arguments 3 times ({}), a loop (MCC_LOOP_REPEATS=3)")
    [turn] = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))
    assert turn.status == "cancelled" and len(turn.tool_log or []) == 4  # 2 calls run, 2 step ends
    assert len(llm.calls) == 3
    assert [n.data["breaker"] for n in db_rows(app, Notification) if n.kind == "breaker_tripped"] == ["loop"]


def test_different_arguments_are_not_a_loop(start_runtime, llm, app):
    runtime = start_runtime(MCC_MAX_TOOL_STEPS="4")
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.responder = lambda body: Step(content=None, tool_calls=[tool_call(len(body["messages"]))],
                                      usage={"prompt_tokens": 10, "completion_tokens": 5})
    runtime.post(team["project"], team["conversation"], "go")
    [note] = runtime.wait_for(lambda: system_notes(runtime, team))
    assert "MCC_MAX_TOOL_STEPS" in note["content"] and len(llm.calls) == 5


def test_the_velocity_breaker_pauses_a_project_spending_too_fast_and_no_other(start_runtime, llm, app):
    """MCC_VELOCITY_LIMIT=0.05 per 10 minutes; every call costs $0.02 and asks for another tool call."""
    from mcc.models.control import Notification
    from mcc.models.conversation import Conversation

    runtime = start_runtime(workers=2, MCC_VELOCITY_LIMIT="0.05 per 10 minutes")
    fast = make_team(app, ("Ada", "architect", SONNET), title="Fast")
    calm = make_team(app, ("Bob", "architect", SONNET), title="Calm")
    listener = Listener(runtime.base, runtime.token)
    try:
        llm.responder = lambda body: (
            Step(content=None, tool_calls=[tool_call(len(body["messages"]))],
                 usage={"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.02})
            if "Ada" in body["messages"][0]["content"] else Step(content="calm answer", usage={
                "prompt_tokens": 10, "completion_tokens": 5, "cost": 0.001}))
        runtime.post(fast["project"], fast["conversation"], "spend")
        event = listener.next("breaker_tripped", timeout=30, where=lambda d: d.get("project_id") == fast["project"])
    finally:
        listener.close()
    assert event["breaker"] == "velocity" and event["spent"] == pytest.approx(0.06)
    assert event["limit"] == 0.05 and event["window_seconds"] == 600
    assert event["paused_conversations"] == [fast["conversation"]]
    runtime.wait_for(lambda: [c for c in db_rows(app, Conversation) if c.status == "paused"])
    calls_then = len(llm.calls)
    # The calm project is not touched; the fast one makes no call more.
    runtime.post(calm["project"], calm["conversation"], "hello")
    runtime.wait_for(lambda: [m for m in runtime.messages(calm["project"], calm["conversation"])
                              if m["author_type"] == "agent"])
    assert len(llm.calls) == calls_then + 1
    statuses = {c.id: c.status for c in db_rows(app, Conversation)}
    assert statuses[uuid.UUID(fast["conversation"])] == "paused"
    assert statuses[uuid.UUID(calm["conversation"])] == "active"
    [note] = [n for n in db_rows(app, Notification) if n.kind == "breaker_tripped"]
    assert note.severity == "critical" and "MCC_VELOCITY_LIMIT" in note.message
