"""Agent turns run by real RQ workers against the LLM stub."""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import pytest

from tests.stubs.llm import Step
from tests.workers.conftest import make_team

pytestmark = pytest.mark.live

SONNET = "anthropic/claude-3.5-sonnet"


@contextlib.contextmanager
def refusing_trigger(app, name: str, table: str, when: str):
    """A PostgreSQL trigger refusing some writes to ``table`` (a real failure, injected in the
    database), dropped afterwards: the test database outlives the test."""
    from sqlalchemy import text

    from mcc.extensions import db

    with app.app_context():
        db.session.execute(text(f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                                "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"))
        db.session.execute(text(f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
                                f"WHEN ({when}) EXECUTE FUNCTION {name}()"))
        db.session.commit()
    try:
        yield
    finally:
        with app.app_context():
            db.session.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
            db.session.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
            db.session.commit()


def test_a_message_is_answered_with_tokens_and_cost_recorded(runtime, llm, app):
    """Price table: 1,000 in + 500 out of claude-3.5-sonnet cost $0.0105."""
    team = make_team(app, ("Senior Architect", "architect", SONNET))
    sent = runtime.post(team["project"], team["conversation"], "Plan the login page")
    replies = runtime.wait_for(lambda: [m for m in runtime.messages(team["project"], team["conversation"])
                                        if m["author_type"] == "agent"])
    reply = replies[0]
    assert reply["agent"]["name"] == "Senior Architect"
    assert reply["reply_to"] == sent["id"]
    assert (reply["tokens_in"], reply["tokens_out"]) == (1000, 500)
    assert reply["cost_usd"] == pytest.approx(0.0105)
    assert reply["metadata"]["cost_source"] == "price_table" and reply["metadata"]["simulated"] is False
    body = llm.calls[0].body
    assert body["model"] == SONNET and body["temperature"] == 0.2 and body["max_tokens"] == 1000
    assert llm.calls[0].headers["Authorization"] == "Bearer test-key"
    assert body["messages"][0]["role"] == "system" and "Senior Architect" in body["messages"][0]["content"]
    assert body["messages"][-1]["content"].endswith("Plan the login page")


# --- who answers ----------------------------------------------------------------------------------

from tests.workers.helpers import (Listener, agent_replies, db_rows, runtime, start_runtime,  # noqa: E402,F401
                                   system_notes, who_is_asked)


def _answer(runtime, team, content: str, count: int, **extra) -> dict:
    """Post ``content`` and wait until the conversation holds ``count`` agent replies; the newest."""
    runtime.post(team["project"], team["conversation"], content, **extra)
    replies = runtime.wait_for(lambda: (lambda r: r if len(r) >= count else None)(agent_replies(runtime, team)))
    return replies[-1]


def test_responder_is_chosen_by_mention_reply_orchestrator_or_first_agent(runtime, llm, app):
    """@name, @"Full Name" and @type pick the agent; else the agent replied to; else the orchestrator."""
    team = make_team(app, ("Olga", "orchestrator", SONNET), ("Senior Architect", "architect", SONNET),
                     ("Cody", "coder", SONNET))
    assert _answer(runtime, team, "@Cody write the form", 1)["agent"]["name"] == "Cody"
    architect = _answer(runtime, team, 'what do you think, @"Senior Architect"?', 2)
    assert architect["agent"]["name"] == "Senior Architect"
    assert _answer(runtime, team, "@coder add tests", 3)["agent"]["name"] == "Cody"
    assert _answer(runtime, team, "no mention at all", 4)["agent"]["name"] == "Olga"
    assert _answer(runtime, team, "and why?", 5, reply_to=architect["id"])["agent"]["name"] == "Senior Architect"
    assert [who_is_asked(c.body) for c in llm.calls] == ["Cody", "Senior Architect", "Cody", "Olga",
                                                          "Senior Architect"]
    # Without an orchestrator the conversation's first agent answers.
    plain = make_team(app, ("Ada", "architect", SONNET), ("Bob", "coder", SONNET), title="No orchestrator")
    assert _answer(runtime, plain, "hello", 1)["agent"]["name"] == "Ada"


def test_turn_events_reach_socket_clients_in_order(runtime, llm, app):
    """working status, typing on, the reply, typing off, idle status: all pushed live from the worker."""
    team = make_team(app, ("Ada", "architect", SONNET))
    agent_id = team["agents"]["Ada"]
    listener = Listener(runtime.base, runtime.token)
    try:
        listener.join(team["conversation"])
        sent = runtime.post(team["project"], team["conversation"], "hi")
        assert listener.next("message")["id"] == sent["id"]
        working = listener.next("agent_status", where=lambda d: d["agent_id"] == agent_id)
        assert working["status"] == "working" and working["current_task"] is None
        assert listener.next("agent_typing")["is_typing"] is True
        reply = listener.next("message")
        assert reply["author_type"] == "agent" and reply["reply_to"] == sent["id"]
        assert reply["tokens_in"] == 1000 and reply["cost_usd"] == pytest.approx(0.0105)
        assert listener.next("agent_typing")["is_typing"] is False
        assert listener.next("agent_status", where=lambda d: d["agent_id"] == agent_id)["status"] == "idle"
    finally:
        listener.close()


def test_a_reply_that_mentions_another_agent_hands_over_to_it(runtime, llm, app):
    """The agent @mentioned in a reply answers that reply, and sees it in its prompt."""
    team = make_team(app, ("Senior Architect", "architect", SONNET), ("Cody", "coder", SONNET))
    llm.responder = lambda body: Step(content="@Cody please implement it" if who_is_asked(body) == "Senior Architect"
                                      else "implemented", usage={"prompt_tokens": 10, "completion_tokens": 5})
    sent = runtime.post(team["project"], team["conversation"], "@architect design the login")
    first, second = runtime.wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(agent_replies(runtime, team)))
    assert (first["agent"]["name"], first["reply_to"]) == ("Senior Architect", sent["id"])
    assert (second["agent"]["name"], second["reply_to"]) == ("Cody", first["id"])
    assert llm.calls[1].body["messages"][-1]["content"] == "[Senior Architect (architect)]: @Cody please implement it"
    time.sleep(0.5)
    assert len(llm.calls) == 2 and len(agent_replies(runtime, team)) == 2


def test_no_hand_off_to_an_agent_removed_from_the_conversation_during_the_call(runtime, llm, app):
    """Cody leaves the conversation while the architect's call runs; the reply's @Cody queues no turn."""
    from mcc.models.turn import Turn

    team = make_team(app, ("Senior Architect", "architect", SONNET), ("Cody", "coder", SONNET))
    release = threading.Event()  # the call answers only once Cody is gone
    llm.responder = lambda body: Step(content="@Cody please implement it", hold=release,
                                      usage={"prompt_tokens": 10, "completion_tokens": 5})
    runtime.post(team["project"], team["conversation"], "@architect design the login")
    runtime.wait_for(lambda: llm.calls, interval=0.05)  # the call is under way
    removed = runtime.api("DELETE", f"/projects/{team['project']}/conversations/{team['conversation']}"
                                    f"/agents/{team['agents']['Cody']}")
    release.set()
    assert removed.status_code in (200, 204), removed.text
    [reply] = runtime.wait_for(lambda: agent_replies(runtime, team))
    assert reply["agent"]["name"] == "Senior Architect"
    time.sleep(1)
    turns = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))
    assert [t.agent_id for t in turns] == [uuid.UUID(team["agents"]["Senior Architect"])]
    assert len(llm.calls) == 1


def _ping_pong(body) -> Step:
    """Each agent hands over to the other: a chain that never ends by itself."""
    other = "Pong" if who_is_asked(body) == "Ping" else "Ping"
    return Step(content=f"@{other} your turn", usage={"prompt_tokens": 10, "completion_tokens": 5})


def test_the_chain_limit_stops_a_runaway_hand_off_with_a_system_message(start_runtime, llm, app):
    """MCC_MAX_CHAIN=3: three agent turns follow one human message, then a system message says so."""
    runtime = start_runtime(MCC_MAX_CHAIN="3")
    team = make_team(app, ("Ping", "coder", SONNET), ("Pong", "tester", SONNET))
    llm.responder = _ping_pong
    runtime.post(team["project"], team["conversation"], "@Ping start")
    notes = runtime.wait_for(lambda: system_notes(runtime, team))
    assert "MCC_MAX_CHAIN" in notes[0]["content"] and "Pong" in notes[0]["content"]
    assert notes[0]["metadata"]["reason"] == "chain_limit"
    time.sleep(1)
    assert [m["agent"]["name"] for m in agent_replies(runtime, team)] == ["Ping", "Pong", "Ping"]
    assert len(llm.calls) == 3
    # A new human message starts a new chain.
    runtime.post(team["project"], team["conversation"], "@Pong go on")
    runtime.wait_for(lambda: len(system_notes(runtime, team)) == 2)
    assert len(agent_replies(runtime, team)) == 6 and len(llm.calls) == 6


def _tool_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_round_trips_are_bounded_by_MCC_MAX_TOOL_STEPS(start_runtime, llm, app):
    """A model that keeps calling tools gets MCC_MAX_TOOL_STEPS round trips, then the turn ends."""
    from mcc.models.turn import LedgerEntry

    runtime = start_runtime(MCC_MAX_TOOL_STEPS="2")
    team = make_team(app, ("Ada", "architect", SONNET), ("Bob", "coder", SONNET))
    counter = iter(range(100))
    llm.responder = lambda body: Step(content=None, tool_calls=[_tool_call(f"c{next(counter)}", "list_participants",
                                                                           "{}")],
                                      usage={"prompt_tokens": 100, "completion_tokens": 10})
    runtime.post(team["project"], team["conversation"], "who is here?")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    notes = system_notes(runtime, team)
    assert len(notes) == 1 and "2 tool steps" in notes[0]["content"] and "MCC_MAX_TOOL_STEPS" in notes[0]["content"]
    assert len(llm.calls) == 3
    # Tools go out in the OpenAI format, and each result comes back as a `tool` message.
    assert llm.calls[0].body["tools"][0] == {"type": "function", "function": {
        "name": "list_participants", "description": llm.calls[0].body["tools"][0]["function"]["description"],
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}
    second = llm.calls[1].body["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["id"] == "c0"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "c0"
    assert json.loads(second[-1]["content"])["agents"][0]["name"] == "Bob"
    assert len([m for m in llm.calls[2].body["messages"] if m["role"] == "tool"]) == 2
    # Every call is on the ledger; the reply carries the turn's totals.
    ledger = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert sorted(e.call_index for e in ledger) == [0, 1, 2]
    assert (reply["tokens_in"], reply["tokens_out"]) == (300, 30)
    assert reply["cost_usd"] == pytest.approx(float(sum(e.cost_usd for e in ledger)))


def test_a_bad_tool_call_is_answered_as_a_tool_error_and_the_turn_goes_on(runtime, llm, app):
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.script = [
        Step(content=None, tool_calls=[_tool_call("a", "drop_database", "{}"),
                                       _tool_call("b", "list_participants", "not json"),
                                       _tool_call("c", "list_participants", '{"unexpected": 1}')]),
        Step(content="sorry, recovered"),
    ]
    runtime.post(team["project"], team["conversation"], "do something")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    assert reply["content"] == "sorry, recovered"
    results = {m["tool_call_id"]: json.loads(m["content"]) for m in llm.calls[1].body["messages"]
               if m["role"] == "tool"}
    assert "unknown tool 'drop_database'" in results["a"]["error"]
    assert "not valid JSON" in results["b"]["error"]
    assert results["c"]["error"] == "arguments do not match the tool's schema"
    assert not system_notes(runtime, team)


# --- what it costs ----------------------------------------------------------------------------------

def test_cost_is_taken_from_usage_cost_when_the_gateway_reports_it(runtime, llm, app):
    from mcc.models.turn import LedgerEntry

    team = make_team(app, ("Ada", "architect", SONNET))
    llm.script = [Step(content="priced", usage={"prompt_tokens": 1000, "completion_tokens": 500, "cost": 0.0042})]
    runtime.post(team["project"], team["conversation"], "hi")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    assert reply["cost_usd"] == pytest.approx(0.0042)  # not the price table's 0.0105
    assert reply["metadata"]["cost_source"] == "gateway" and reply["metadata"]["price_known"] is True
    [entry] = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert (entry.tokens_in, entry.tokens_out, float(entry.cost_usd)) == (1000, 500, 0.0042)
    assert (entry.model, entry.cost_source, entry.attempt, entry.call_index) == (SONNET, "gateway", 1, 0)
    assert str(entry.project_id) == team["project"] and str(entry.agent_id) == team["agents"]["Ada"]
    assert entry.created_at is not None and entry.turn_id is not None


def test_a_model_without_a_known_price_costs_zero_and_is_flagged(runtime, llm, app):
    from mcc.models.turn import LedgerEntry

    team = make_team(app, ("Ada", "architect", "acme/mystery-model-9"))
    runtime.post(team["project"], team["conversation"], "hi")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    assert (reply["tokens_in"], reply["tokens_out"], reply["cost_usd"]) == (1000, 500, 0)
    assert reply["metadata"]["price_known"] is False and reply["metadata"]["cost_source"] == "unknown_price"
    [entry] = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert entry.price_known is False and entry.tokens_in == 1000 and entry.cost_usd == 0
    assert "no price known for model acme/mystery-model-9" in runtime.logs()


# --- when the gateway fails -------------------------------------------------------------------------

def test_429_and_5xx_are_retried_honouring_retry_after(runtime, llm, app):
    from mcc.models.turn import LedgerEntry

    team = make_team(app, ("Ada", "architect", SONNET))
    llm.script = [Step(status=429, headers={"Retry-After": "0.4"}), Step(status=503), Step(content="third time")]
    runtime.post(team["project"], team["conversation"], "hi")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    assert reply["content"] == "third time" and len(llm.calls) == 3
    assert llm.calls[1].at - llm.calls[0].at >= 0.4
    assert len(db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))) == 1
    assert not system_notes(runtime, team)


def test_a_turn_that_finally_fails_says_why_marks_the_agent_error_and_emits_error(runtime, llm, app):
    """400 is not retried; the failure is a system message, agent status `error` and an `error` event."""
    team = make_team(app, ("Ada", "architect", SONNET))
    agent_path = f"/projects/{team['project']}/agents/{team['agents']['Ada']}"
    listener = Listener(runtime.base, runtime.token)
    try:
        listener.join(team["conversation"])
        llm.script = [Step(status=400)]
        runtime.post(team["project"], team["conversation"], "hi")
        error = listener.next("error")
        assert error["code"] == "LLM_ERROR" and "gateway answered 400" in error["message"]
        assert error["details"]["conversation_id"] == team["conversation"]
        assert listener.next("agent_status", where=lambda d: d["agent_id"] == team["agents"]["Ada"]
                             and d["status"] == "error")
        [note] = runtime.wait_for(lambda: system_notes(runtime, team))
        assert note["content"].startswith("Ada could not answer: the LLM gateway failed: gateway answered 400")
        assert note["metadata"]["reason"] == "turn_failed"
        assert runtime.api("GET", agent_path).json()["status"] == "error"
        assert len(llm.calls) == 1 and not agent_replies(runtime, team)
        # Nothing else is lost: the next message is answered and the agent is idle again.
        runtime.post(team["project"], team["conversation"], "try again")
        runtime.wait_for(lambda: agent_replies(runtime, team))
        assert runtime.wait_for(lambda: runtime.api("GET", agent_path).json()["status"] == "idle")
    finally:
        listener.close()


def test_a_reply_that_cannot_be_stored_leaves_its_call_on_the_ledger_and_fails_the_turn(runtime, llm, app):
    """The last call's ledger row and the reply share a transaction; if the reply cannot be stored
    (here PostgreSQL refuses it through a trigger), the row is committed alone and the turn fails."""
    from mcc.models.budget import CostDaily
    from mcc.models.turn import LedgerEntry, Turn

    team = make_team(app, ("Ada", "architect", SONNET))
    llm.script = [Step(content="UNSTORABLE answer", usage={"prompt_tokens": 1000, "completion_tokens": 500})]
    with refusing_trigger(app, "refuse_unstorable", "messages",
                          "NEW.author_type = 'agent' AND NEW.content LIKE 'UNSTORABLE%'"):
        runtime.post(team["project"], team["conversation"], "hi")
        [note] = runtime.wait_for(lambda: system_notes(runtime, team))
    assert note["content"].startswith("Ada could not answer: internal error (")
    assert not agent_replies(runtime, team)
    [entry] = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert (entry.tokens_in, entry.tokens_out, float(entry.cost_usd)) == (1000, 500, pytest.approx(0.0105))
    [rollup] = db_rows(app, CostDaily, agent_id=uuid.UUID(team["agents"]["Ada"]))
    assert (rollup.calls, rollup.messages, float(rollup.cost_usd)) == (1, 0, pytest.approx(0.0105))
    [turn] = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))
    assert turn.status == "failed" and turn.reply_message_id is None
    # The budget sees the spend.
    summary = runtime.api("GET", "/budget/summary").json()
    assert summary["today"]["spent"] == pytest.approx(0.0105)


def test_an_error_after_a_turn_has_ended_leaves_its_record_as_it_is(start_runtime, llm, app):
    """The answer is committed, then counting its spend fails (the velocity breaker's pause of the
    conversation is refused by PostgreSQL through a trigger): the turn stays succeeded with its one
    reply, and no 'could not answer' note contradicts it."""
    from mcc.models.turn import Turn

    runtime = start_runtime(MCC_VELOCITY_LIMIT="0.001 per 10 minutes")
    team = make_team(app, ("Ada", "architect", SONNET))
    with refusing_trigger(app, "refuse_pause", "conversations", "NEW.status = 'paused'"):
        runtime.post(team["project"], team["conversation"], "hi")  # $0.0105: over the velocity limit
        [reply] = runtime.wait_for(lambda: agent_replies(runtime, team))
        runtime.wait_for(lambda: "had already ended succeeded" in runtime.logs())
    [turn] = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))
    assert turn.status == "succeeded" and turn.reply_message_id == uuid.UUID(reply["id"])
    assert not system_notes(runtime, team)


def test_a_crash_after_the_reaper_handed_the_turn_on_gives_no_verdict(start_runtime, llm, app):
    """The worker's attempt crashes (PostgreSQL refuses its reply) after the turn was given up for
    dead and claimed again (its ``attempts`` moved on, done here by hand while the call is held at
    the gateway): the stale attempt must not fail a turn another worker now runs. (Nobody runs it
    here, so the reaper later finds it abandoned and a third attempt answers.)"""
    import threading

    from sqlalchemy import update

    from mcc.extensions import db
    from mcc.models.turn import Turn

    runtime = start_runtime(MCC_TURN_MAX_ATTEMPTS="3")
    team = make_team(app, ("Ada", "architect", SONNET))
    release = threading.Event()
    llm.script = [Step(content="UNSTORABLE answer", hold=release)]
    with refusing_trigger(app, "refuse_stale", "messages",
                          "NEW.author_type = 'agent' AND NEW.content LIKE 'UNSTORABLE%'"):
        runtime.post(team["project"], team["conversation"], "hi")
        runtime.wait_for(lambda: llm.calls)
        with app.app_context():
            db.session.execute(update(Turn).where(Turn.conversation_id == uuid.UUID(team["conversation"]))
                               .values(attempts=Turn.attempts + 1))
            db.session.commit()
        release.set()
        runtime.wait_for(lambda: "is attempt 2 elsewhere now" in runtime.logs())
    [reply] = runtime.wait_for(lambda: agent_replies(runtime, team))
    assert reply["content"] == "ok"
    [turn] = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))
    assert (turn.status, turn.attempts) == ("succeeded", 3)
    assert not system_notes(runtime, team)  # no "could not answer" from the stale attempt


def test_5xx_exhausting_the_retries_fails_the_turn(start_runtime, llm, app):
    runtime = start_runtime(MCC_LLM_MAX_RETRIES="2")
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.default = Step(status=500)
    runtime.post(team["project"], team["conversation"], "hi")
    [note] = runtime.wait_for(lambda: system_notes(runtime, team))
    assert "gateway answered 500" in note["content"]
    assert len(llm.calls) == 3  # the first try and two retries
    agent = runtime.api("GET", f"/projects/{team['project']}/agents/{team['agents']['Ada']}").json()
    assert agent["status"] == "error"


def test_without_an_api_key_the_simulated_provider_answers_labelled(start_runtime, llm, app):
    from mcc.models.turn import LedgerEntry

    runtime = start_runtime(MCC_LLM_API_KEY="")
    team = make_team(app, ("Ada", "architect", SONNET))
    runtime.post(team["project"], team["conversation"], "Plan the login page")
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    assert reply["content"].startswith("[simulated reply") and "Plan the login page" in reply["content"]
    assert reply["metadata"]["simulated"] is True and reply["metadata"]["cost_source"] == "simulated"
    assert reply["cost_usd"] == 0 and reply["tokens_in"] > 0 and reply["tokens_out"] > 0
    [entry] = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert entry.simulated is True and entry.cost_usd == 0
    assert not llm.calls
    assert "simulated" in runtime.logs()
