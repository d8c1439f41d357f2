"""Budget limits with real web and worker processes and the LLM stub.

The stub bills like a provider would: ``prompt_tokens`` follows the size of what was sent (see
``billed``) and ``completion_tokens`` is the whole ``max_tokens`` the request allowed, so every
call costs close to its worst case and any hole in the reservation shows as overspend.
"""
from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import redis as redis_lib

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import (SONNET, Listener, agent_replies, db_rows, start_runtime,  # noqa: F401
                                   system_notes)

pytestmark = pytest.mark.live

# Broadcast events travel over Redis pub/sub, which ignores the database index: another MCC (or
# test run) on the same Redis server can reach these clients. Events are matched by content.

ALERT_FIELDS = {"level", "scope", "current", "limit", "percentage", "message"}


def billed(body: dict) -> int:
    """Prompt tokens a provider would bill: ~4 ASCII characters a token, one token per other
    character (CJK, Cyrillic...), tool definitions included, a little framing per message."""
    text = "".join(str(m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in body["messages"])
    text += json.dumps(body.get("tools") or "")
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars // 4 + (len(text) - ascii_chars) + 4 * len(body["messages"])


def full_bill(body: dict, delay: float = 0.0, content: str = "done") -> Step:
    return Step(content=content, delay=delay,
                usage={"prompt_tokens": billed(body), "completion_tokens": body["max_tokens"]})


def cost_of(body: dict) -> Decimal:
    """What the gateway records for that usage at Sonnet's list price ($3 in, $15 out per M)."""
    return (Decimal(3) * billed(body) + Decimal(15) * body["max_tokens"]) / Decimal(1_000_000)


def create_limit(runtime, admin: str, **fields) -> dict:
    body = {"name": "limit", "scope_type": "global", "scope_id": None, "period": "daily", "alert_threshold": 0.8,
            "action_on_exceed": "block", **fields}
    response = runtime.api("POST", "/budget/limits", token=admin, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def ledger(app, **filters) -> tuple[Decimal, int]:
    """Sum and count of recorded LLM calls, read from the committed cost_ledger."""
    from sqlalchemy import func, select

    from mcc.extensions import db
    from mcc.models.turn import LedgerEntry

    with app.app_context():
        query = select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0), func.count())
        for name, value in filters.items():
            query = query.where(getattr(LedgerEntry, name) == uuid.UUID(value))
        spent, count = db.session.execute(query).one()
        db.session.remove()
        return Decimal(spent), count


def turn_statuses(app, team) -> list[str]:
    from mcc.models.turn import Turn

    return sorted(t.status for t in db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"])))


def counters(runtime, limit_id: str) -> dict:
    """The Redis counter of a limit for the current period: {spent, reserved} in micro-dollars."""
    client = redis_lib.Redis.from_url(runtime.env["REDIS_URL"])
    keys = client.keys(f"mcc:budget:{limit_id}:*")
    assert len(keys) == 1, keys
    return {k.decode(): int(v) for k, v in client.hgetall(keys[0]).items()}


def micro(amount: Decimal) -> int:
    return int(amount * 1_000_000)


def wait_replies(runtime, team, count: int) -> list[dict]:
    return runtime.wait_for(lambda: (lambda r: r if len(r) >= count else None)(agent_replies(runtime, team)))


# --- block ------------------------------------------------------------------------------------------

def test_a_block_limit_refuses_the_call_before_it_is_made(start_runtime, llm, app):
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET))
    ann = team["agents"]["Ann"]
    limit = create_limit(runtime, admin, name="Ann's allowance", scope_type="agent", scope_id=ann, amount_usd=1)
    reserved_during_call = []

    def bill_and_look(body):  # the reservation in force while the LLM is answering
        reserved_during_call.append(Decimal(counters(runtime, limit["id"])["reserved"]) / 1_000_000)
        return full_bill(body)

    llm.responder = bill_and_look
    listener = Listener(runtime.base, runtime.token)
    try:
        listener.join(team["conversation"])
        for n in (1, 2):
            assert runtime.post(team["project"], team["conversation"], f"question {n}")["blocked_agents"] == []
            wait_replies(runtime, team, n)
        spent, calls = ledger(app)
        assert calls == len(llm.calls) == 2
        assert spent == sum(cost_of(c.body) for c in llm.calls)
        # Each call cost no more than it had reserved (tool definitions and framing included).
        assert [cost_of(c.body) <= held for c, held in zip(llm.calls, reserved_during_call)] == [True, True], \
            [(cost_of(c.body), held) for c, held in zip(llm.calls, reserved_during_call)]
        # Lower the limit to what was spent plus less than one more call: the limit is used up.
        per_call = spent / 2
        patched = runtime.api("PATCH", f"/budget/limits/{limit['id']}", token=admin,
                              json={"amount_usd": float(spent + per_call / 2)})
        assert patched.status_code == 200, patched.text

        posted = runtime.post(team["project"], team["conversation"], "question 3")
        assert posted["content"] == "question 3"  # stored all the same
        assert [(b["agent_id"], b["name"], b["limit_id"]) for b in posted["blocked_agents"]] == [
            (ann, "Ann", limit["id"])]
        assert "Ann's allowance" in posted["blocked_agents"][0]["reason"]

        error = listener.next("error", where=lambda e: e.get("code") == "BUDGET_EXCEEDED")
        assert error["details"]["agent_id"] == ann and error["details"]["limit_id"] == limit["id"]
        assert error["details"]["conversation_id"] == team["conversation"]
        [note] = runtime.wait_for(lambda: system_notes(runtime, team))
        assert note["content"] == error["message"]
        assert note["content"].startswith("Ann did not call the model: budget limit \"Ann's allowance\"")
        assert note["metadata"]["reason"] == "budget_exceeded" and note["metadata"]["limit_id"] == limit["id"]
        runtime.wait_for(lambda: turn_statuses(app, team) == ["failed", "succeeded", "succeeded"])
        time.sleep(0.5)
        assert len(llm.calls) == 2, "the refused call reached the LLM"
        assert ledger(app) == (spent, 2)
        assert counters(runtime, limit["id"]) == {"spent": micro(spent), "reserved": 0}

        # Raising the limit applies to the very next message.
        raised = runtime.api("PATCH", f"/budget/limits/{limit['id']}", token=admin, json={"amount_usd": 5})
        assert raised.status_code == 200
        assert runtime.post(team["project"], team["conversation"], "question 4")["blocked_agents"] == []
        wait_replies(runtime, team, 3)
        assert len(llm.calls) == 3
    finally:
        listener.close()


def test_spend_stays_within_a_block_limit_whatever_the_prompt_is_made_of(start_runtime, llm, app):
    """Tool definitions and non-Latin text are billed too: the worst case must count them.

    A coder (it gets tool definitions) is sent 20,000 CJK characters: billed, that is ~20,000
    prompt tokens, three times what "three characters a token" would reserve."""
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET))
    llm.responder = full_bill
    limit = create_limit(runtime, admin, name="tight", amount_usd=0.06)
    runtime.post(team["project"], team["conversation"], "预算" * 10_000)
    runtime.wait_for(lambda: turn_statuses(app, team) in (["failed"], ["succeeded"]))
    spent, _ = ledger(app)
    assert spent <= Decimal(str(limit["amount_usd"])), \
        f"recorded ${spent} against a ${limit['amount_usd']} block limit (the call was let through)"
    assert turn_statuses(app, team) == ["failed"] and not llm.calls  # ~$0.08 real: refused before the call
    # A short prompt (a fresh conversation: the long message is not in its history) goes through.
    short = make_team(app, ("Bo", "coder", SONNET), title="Short")
    runtime.post(short["project"], short["conversation"], "short one, please")
    wait_replies(runtime, short, 1)
    assert len(llm.calls) == 1 and ledger(app)[0] <= Decimal("0.06")


# --- warn and pause -----------------------------------------------------------------------------------

def test_a_warn_limit_alerts_every_client_once_per_level(start_runtime, llm, app):
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET))
    llm.responder = full_bill
    # The first call takes the project past 50 % of the limit, the second past 100 %.
    limit = create_limit(runtime, admin, name="Runtime daily", scope_type="project", scope_id=team["project"],
                         amount_usd=0.025, alert_threshold=0.5, action_on_exceed="warn")
    listeners = [Listener(runtime.base, runtime.token), Listener(runtime.base, admin)]  # in no room at all
    try:
        runtime.post(team["project"], team["conversation"], "one")
        wait_replies(runtime, team, 1)
        first, _ = ledger(app)
        runtime.post(team["project"], team["conversation"], "two")
        wait_replies(runtime, team, 2)
        second, _ = ledger(app)
        assert first / Decimal("0.025") >= Decimal("0.5") and first < Decimal("0.025") <= second
        ours = lambda e: (e.get("scope") or {}).get("id") == team["project"]  # noqa: E731
        for listener in listeners:
            warning = listener.next("budget_alert", where=ours)
            critical = listener.next("budget_alert", where=ours)
            for event, level, current in ((warning, "warning", first), (critical, "critical", second)):
                assert set(event) == ALERT_FIELDS
                assert event["level"] == level
                assert event["scope"] == {"type": "project", "id": team["project"], "name": "Runtime"}
                assert event["current"] == float(current) and event["limit"] == 0.025
                assert event["percentage"] == round(float(current / Decimal("0.025")), 4)
                assert event["message"].startswith(f"Project 'Runtime' at {float(current / Decimal('0.025')):.0%}")
        # warn does nothing more: the next call is made, and no alert repeats this period.
        posted = runtime.post(team["project"], team["conversation"], "three")
        assert posted["blocked_agents"] == []
        wait_replies(runtime, team, 3)
        assert len(llm.calls) == 3
        time.sleep(1)
        for listener in listeners:
            late = []
            while not listener.events["budget_alert"].empty():
                late.append(listener.events["budget_alert"].get())
            assert not [e for e in late if ours(e)], late
        conversation = runtime.api("GET", f"/projects/{team['project']}/conversations/{team['conversation']}")
        assert conversation.json()["status"] == "active"
        notes = runtime.api("GET", "/notifications").json()["items"]
        assert sorted((n["kind"], n["severity"]) for n in notes) == [("budget_alert", "critical"),
                                                                    ("budget_alert", "warning")]
        assert {n["data"]["limit_id"] for n in notes} == {limit["id"]}
    finally:
        for listener in listeners:
            listener.close()


def test_a_pause_limit_pauses_the_projects_conversations(start_runtime, llm, app):
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET), ("Bob", "tester", SONNET))
    other = make_team(app, ("Cid", "coder", SONNET), title="Another project")
    second = runtime.api("POST", f"/projects/{team['project']}/conversations",
                         json={"title": "Side chat", "agent_ids": [team["agents"]["Bob"]]}).json()
    llm.responder = full_bill
    create_limit(runtime, admin, name="Runtime cap", scope_type="project", scope_id=team["project"],
                 amount_usd=0.01, action_on_exceed="pause")
    listener = Listener(runtime.base, runtime.token)
    try:
        listener.join(team["conversation"])
        listener.join(second["id"])
        runtime.post(team["project"], team["conversation"], "@Ann go")
        critical = listener.next("budget_alert", where=lambda e: e["level"] == "critical"
                                 and (e.get("scope") or {}).get("id") == team["project"])
        assert critical["current"] >= critical["limit"] == 0.01
        paused = {listener.next("conversation_status")["conversation_id"] for _ in range(2)}
        assert paused == {team["conversation"], second["id"]}

        def status(project, conversation):
            return runtime.api("GET", f"/projects/{project}/conversations/{conversation}").json()["status"]

        assert status(team["project"], team["conversation"]) == "paused"
        assert status(team["project"], second["id"]) == "paused"
        assert status(other["project"], other["conversation"]) == "active"
        wait_replies(runtime, team, 1)  # the call that crossed the limit had already been made

        # New work in the paused project is stored and held; no call is made.
        calls = len(llm.calls)
        runtime.post(team["project"], team["conversation"], "@Bob and you?")
        runtime.wait_for(lambda: "held" in turn_statuses(app, team))
        # Other projects carry on.
        runtime.post(other["project"], other["conversation"], "hello")
        wait_replies(runtime, other, 1)
        time.sleep(0.5)
        assert len(llm.calls) == calls + 1
    finally:
        listener.close()


def test_a_global_pause_limit_is_an_emergency_pause_by_the_system(start_runtime, llm, app):
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET))
    llm.responder = full_bill
    create_limit(runtime, admin, name="Everything", amount_usd=0.01, action_on_exceed="pause")
    listeners = [Listener(runtime.base, runtime.token), Listener(runtime.base, admin)]
    try:
        runtime.post(team["project"], team["conversation"], "go")
        for listener in listeners:
            event = listener.next("emergency_pause", where=lambda e: e["triggered_by"] == "system")
            assert event["reason"] == "Budget limit exceeded"
        status = runtime.api("GET", "/emergency/status").json()
        assert (status["status"], status["triggered_by"]) == ("paused", "system")
        runtime.post(team["project"], team["conversation"], "still there?")
        runtime.wait_for(lambda: turn_statuses(app, team) == ["held", "succeeded"])
        time.sleep(0.5)
        assert len(llm.calls) == 1
        kinds = {(n["kind"], n["severity"]) for n in runtime.api("GET", "/notifications").json()["items"]}
        assert {("budget_alert", "critical"), ("emergency_pause", "critical")} <= kinds
    finally:
        for listener in listeners:
            listener.close()


# --- concurrency and recovery -------------------------------------------------------------------------

def test_fifty_concurrent_turns_never_spend_past_a_global_block_limit(start_runtime, llm, app):
    # 4 worker processes + the web one within PostgreSQL's 100 connections (docs/deployment.md)
    runtime = start_runtime(workers=1, MCC_DB_POOL_SIZE="5", MCC_DB_MAX_OVERFLOW="5")
    runtime.workers += [runtime.start_worker() for _ in range(3)]
    teams = [make_team(app, (f"Racer{i}", "coder", SONNET), title=f"Race {i}") for i in range(50)]
    for i, team in enumerate(teams):
        team["title"] = f"Race {i}"
    llm.responder = lambda body: full_bill(body, delay=0.3)
    amount = Decimal("0.30")  # room for ~18 calls of ~$0.0165
    admin = runtime.login("admin")
    limit = create_limit(runtime, admin, name="global race", amount_usd=float(amount))

    with ThreadPoolExecutor(max_workers=25) as pool:
        list(pool.map(lambda t: runtime.post(t["project"], t["conversation"], f"race {t['title']}"), teams))

    def finished():
        statuses = [s for team in teams for s in turn_statuses(app, team)]
        return statuses if len(statuses) == 50 and set(statuses) <= {"succeeded", "failed"} else None

    statuses = runtime.wait_for(finished, timeout=180, interval=0.5)
    spent, calls = ledger(app)
    print(f"50 turns: {statuses.count('succeeded')} answered, {statuses.count('failed')} refused, "
          f"${spent} of ${amount}")
    assert spent <= amount, f"${spent} recorded against a ${amount} block limit"
    assert calls == len(llm.calls) == statuses.count("succeeded")
    with app.app_context():
        from mcc.services.budget import worst_case_cost

        for call in llm.calls:  # what each call cost stayed within what it had reserved
            assert cost_of(call.body) <= worst_case_cost(call.body["model"], call.body["messages"],
                                                         call.body["max_tokens"], call.body.get("tools"))
    assert statuses.count("failed") >= 20 and statuses.count("succeeded") >= 12
    refused = [n for team in teams for n in system_notes(runtime, team)]
    assert len(refused) == statuses.count("failed")
    assert all(n["metadata"]["reason"] == "budget_exceeded" for n in refused)
    # Refusals came from the limit, not from anything else: less than two calls' worth was left over.
    assert amount - spent < Decimal("0.035")
    # The last turn's spend reaches Redis just after its end is committed.
    runtime.wait_for(lambda: counters(runtime, limit["id"]) == {"spent": micro(spent), "reserved": 0})


def test_enforcement_survives_a_redis_flush(start_runtime, llm, app):
    runtime = start_runtime()
    admin = runtime.login("admin")
    team = make_team(app, ("Ann", "coder", SONNET))
    llm.responder = full_bill
    limit = create_limit(runtime, admin, name="survivor", amount_usd=1)
    for n in (1, 2):
        runtime.post(team["project"], team["conversation"], f"call {n}")
        wait_replies(runtime, team, n)
    spent, _ = ledger(app)
    # The worker counts the spend in Redis just after it has published the reply.
    runtime.wait_for(lambda: counters(runtime, limit["id"])["spent"] == micro(spent))

    store = redis_lib.Redis.from_url(runtime.env["REDIS_URL"])
    store.flushdb()
    store.set("mcc-test-run-lock", "held", ex=3 * 3600)  # the test run's claim on this Redis db
    assert not store.keys("mcc:budget:*")

    # Room for one more call but not two. Were the counter rebuilt at zero instead of from the
    # ledger, both would be let through and the ledger would pass the limit.
    per_call = spent / 2
    amount = spent + per_call * Decimal("1.6")
    assert runtime.api("PATCH", f"/budget/limits/{limit['id']}", token=admin,
                       json={"amount_usd": float(amount)}).status_code == 200
    assert runtime.post(team["project"], team["conversation"], "call 3")["blocked_agents"] == []
    wait_replies(runtime, team, 3)
    runtime.wait_for(lambda: counters(runtime, limit["id"]) == {"spent": micro(ledger(app)[0]), "reserved": 0})

    posted = runtime.post(team["project"], team["conversation"], "call 4")
    assert [b["name"] for b in posted["blocked_agents"]] == ["Ann"]
    runtime.wait_for(lambda: turn_statuses(app, team) == ["failed", "succeeded", "succeeded", "succeeded"])
    time.sleep(0.5)
    final, calls = ledger(app)
    assert calls == len(llm.calls) == 3
    assert final <= amount


def test_a_task_limit_stops_that_task_and_the_projects_other_tasks_go_on(start_runtime, llm, app):
    """$0.05 on task A; every call of its coder (and of task B's) costs about $0.02 and asks for a
    tool, so the turns keep calling. A stops within its limit and fails, with a notification; B goes on."""
    from mcc.models.control import Notification

    runtime = start_runtime(workers=2, MCC_LOOP_REPEATS="0")  # the same call on purpose: no loop breaker
    team = make_team(app, ("Cody", "coder", SONNET), ("Cora", "coder", SONNET))
    admin = runtime.login("admin")
    base = f"/projects/{team['project']}/tasks"
    a = runtime.api("POST", base, json={"title": "Task A"}).json()
    b = runtime.api("POST", base, json={"title": "Task B"}).json()
    create_limit(runtime, admin, name="task A cap", scope_type="task", scope_id=a["id"], amount_usd=0.05)
    tool = {"id": "call_1", "type": "function", "function": {"name": "list_participants", "arguments": "{}"}}
    llm.responder = lambda body: Step(content=None, tool_calls=[tool], usage={
        "prompt_tokens": billed(body), "completion_tokens": body["max_tokens"]})
    assert runtime.api("POST", f"{base}/{a['id']}/assign", json={"agent_id": team["agents"]["Cody"]}).ok
    assert runtime.api("POST", f"{base}/{b['id']}/assign", json={"agent_id": team["agents"]["Cora"]}).ok

    failed = runtime.wait_for(lambda: (lambda t: t if t["status"] == "failed" else None)(
        runtime.api("GET", f"{base}/{a['id']}").json()), timeout=60)
    assert "budget limit 'task A cap'" in failed["history"][-1]["reason"]
    spent_a, calls_a = ledger(app, task_id=a["id"])
    assert calls_a == 2 and spent_a <= Decimal("0.05") and failed["spent"] == float(spent_a)
    # B keeps calling after A stopped, and is not failed.
    _, calls_b_then = ledger(app, task_id=b["id"])
    runtime.wait_for(lambda: ledger(app, task_id=b["id"])[1] > max(calls_b_then, 3), timeout=30)
    assert runtime.api("GET", f"{base}/{b['id']}").json()["status"] == "in_progress"
    assert ledger(app, task_id=a["id"])[1] == 2
    notes = [n for n in db_rows(app, Notification) if n.kind == "task_failed"]
    assert [n.data["task_id"] for n in notes] == [a["id"]]
    by_task = runtime.api("GET", "/budget/by-task").json()
    assert {i["name"] for i in by_task["items"]} == {"Task A", "Task B"}
    runtime.api("POST", "/emergency/pause-all", json={"reason": "end of test"})  # B would go on for a while
