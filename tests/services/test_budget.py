"""Budget limits: periods, alerts once per period, actions, scope nesting, enforcement, rebuild."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import redis as redis_lib

from mcc.extensions import db
from mcc.models.control import Notification
from mcc.models.turn import LedgerEntry
from mcc.services import budget, emergency
from mcc.runtime import gate
from mcc.services.agents import create_agent
from mcc.services.conversations import create_conversation
from mcc.services.periods import current_period, local_date, period_of
from mcc.services.projects import create_project

SONNET = "anthropic/claude-3.5-sonnet"


@pytest.fixture
def team(app, db_session):
    project = create_project({"name": "Budgeted", "github_repo": f"octo/b-{uuid.uuid4().hex[:8]}"})
    agents = [create_agent(project.id, {"name": name, "type": "coder", "model_config": {
        "model": SONNET, "temperature": 0.1, "max_tokens": 1000}}) for name in ("Ann", "Bob")]
    conversation = create_conversation(project.id, None, {"title": "t", "agent_ids": [a.id for a in agents]})
    db.session.commit()
    return project, agents, conversation


def limit(scope_type="global", scope_id=None, amount="10", period="daily", threshold=0.8, action="warn"):
    created = budget.create_limit({"name": f"{scope_type} {period} {action}", "scope_type": scope_type,
                                   "scope_id": scope_id, "amount_usd": Decimal(amount), "period": period,
                                   "alert_threshold": threshold, "action_on_exceed": action})
    db.session.commit()
    return created


def spend(project, agent, cost: str, at: datetime | None = None, task=None, reservation=None) -> list[dict]:
    """Record one LLM call's cost the way the turn engine does; returns the alert events."""
    entry = LedgerEntry(project_id=project.id, agent_id=agent.id, model=SONNET, tokens_in=10, tokens_out=10,
                        cost_usd=Decimal(cost), created_at=at or datetime.now(timezone.utc),
                        task_id=task.id if task is not None else None)
    db.session.add(entry)
    db.session.flush()
    budget.record_call(entry, None)
    db.session.commit()
    events = budget.settle(reservation, entry)
    db.session.commit()
    return events


def reserve(project, agent, messages=None, task=None):
    reservation, checks = budget.plan_reservation(project.id, agent.id, SONNET, messages or [], 1000,
                                                  task.id if task is not None else None)
    call = gate.acquire_llm_call(
        emergency.state_from_database, [(k, l, a) for k, l, a, _, _ in checks],
        lambda i: budget.to_micro(budget.spent_from_rollup(checks[i][3], checks[i][4])))
    return reservation, call


# --- periods ----------------------------------------------------------------------------------

def test_calendar_periods_roll_over_at_local_midnight(app):
    with app.app_context():
        assert period_of("day", date(2026, 3, 31)).key == "day:2026-03-31"
        assert period_of("week", date(2026, 11, 29)).start == date(2026, 11, 23)  # Sunday -> Monday
        assert period_of("week", date(2026, 11, 30)).start == date(2026, 11, 30)  # Monday starts a week
        assert period_of("month", date(2026, 12, 31)).end == date(2027, 1, 1)
        last = datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)
        first = datetime(2026, 12, 1, 0, 0, 0, tzinfo=timezone.utc)
        assert current_period("day", last).key == "day:2026-11-30"
        assert current_period("day", first).key == "day:2026-12-01"
        assert current_period("month", last) != current_period("month", first)


def test_periods_follow_the_configured_timezone(app):
    with app.app_context():
        app.config["MCC_TIMEZONE"] = "America/New_York"
        try:
            # 03:00 UTC on Dec 1st is still Nov 30th in New York.
            moment = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
            assert local_date(moment) == date(2026, 11, 30)
            assert current_period("month", moment).key == "month:2026-11-01"
            start, end = current_period("day", moment).bounds_utc()
            assert start == datetime(2026, 11, 30, 5, 0, tzinfo=timezone.utc)
        finally:
            app.config["MCC_TIMEZONE"] = "UTC"


def test_spend_at_235959_and_000000_counts_in_different_days(team):
    project, (ann, _), _ = team
    spend(project, ann, "1.00", datetime(2026, 5, 1, 23, 59, 59, tzinfo=timezone.utc))
    spend(project, ann, "2.00", datetime(2026, 5, 2, 0, 0, 0, tzinfo=timezone.utc))
    daily = limit(amount="100")
    assert budget.spent_from_rollup(daily, period_of("day", date(2026, 5, 1))) == Decimal("1.00")
    assert budget.spent_from_rollup(daily, period_of("day", date(2026, 5, 2))) == Decimal("2.00")
    weekly = limit(amount="100", period="weekly")  # Fri and Sat: same ISO week
    assert budget.spent_from_rollup(weekly, period_of("week", date(2026, 5, 2))) == Decimal("3.00")


# --- alerts and actions -----------------------------------------------------------------------

def test_threshold_and_limit_alert_once_per_period(team):
    project, (ann, _), _ = team
    limit(amount="10", threshold=0.8)
    assert spend(project, ann, "7.00") == []
    crossed = spend(project, ann, "1.50")
    assert [e["data"]["level"] for e in crossed] == ["warning"]
    event = crossed[0]["data"]
    assert event["scope"] == {"type": "global", "id": None, "name": "Global"}
    assert event["current"] == 8.5 and event["limit"] == 10.0 and event["percentage"] == 0.85
    assert "85%" in event["message"]
    assert spend(project, ann, "0.20") == []
    reached = spend(project, ann, "2.00")
    assert [e["data"]["level"] for e in reached] == ["critical"]
    assert spend(project, ann, "5.00") == []
    kinds = [n.severity for n in db.session.query(Notification).filter_by(kind="budget_alert")]
    assert sorted(kinds) == ["critical", "warning"]


def test_pause_action_pauses_the_projects_conversations(team):
    project, (ann, _), conversation = team
    limit("project", project.id, amount="1", action="pause")
    events = spend(project, ann, "1.00")
    assert {e["event"] for e in events} >= {"budget_alert", "conversation_status"}
    db.session.refresh(conversation)
    assert conversation.status == "paused"


def test_global_pause_action_is_an_emergency_pause_by_the_system(team):
    project, (ann, _), _ = team
    limit(amount="1", action="pause")
    events = spend(project, ann, "2.00")
    pause = next(e for e in events if e["event"] == "emergency_pause")["data"]
    assert pause["triggered_by"] == "system" and pause["reason"] == "Budget limit exceeded"
    state = emergency.current_state()
    assert state["triggered_by"] == "system"
    _, call = reserve(project, ann)
    assert call is None  # no LLM call starts while paused


def test_warn_action_only_notifies(team):
    project, (ann, _), conversation = team
    limit("agent", ann.id, amount="1", action="warn")
    events = spend(project, ann, "3.00")
    assert [e["event"] for e in events] == ["budget_alert", "budget_alert"]
    db.session.refresh(conversation)
    assert conversation.status == "active" and emergency.current_state() is None
    assert reserve(project, ann)[1] is not None


# --- enforcement ------------------------------------------------------------------------------

def test_block_limit_refuses_a_call_whose_worst_case_does_not_fit(team):
    project, (ann, _), _ = team
    block = limit("agent", ann.id, amount="0.055", action="block")
    # Worst case of one call: 1000 output tokens at $15/M = $0.015 plus the prompt estimate
    # (which counts the coder's tool definitions): three fit, a fourth does not.
    reservations = []
    for _ in range(3):
        reservation, call = reserve(project, ann)
        reservations.append(reservation)
    with pytest.raises(gate.BudgetRefused):
        reserve(project, ann)
    # Raising the limit applies to the very next call.
    budget.update_limit(block.id, {"amount_usd": Decimal("1")})
    db.session.commit()
    assert reserve(project, ann)[1] is not None


def test_agent_and_project_limits_nest(team):
    project, (ann, bob), _ = team
    limit("agent", ann.id, amount="0.02", action="block")
    limit("project", project.id, amount="0.05", action="block")
    spend(project, ann, "0.015")
    with pytest.raises(gate.BudgetRefused):
        reserve(project, ann)  # Ann's own limit
    reserve(project, bob)  # Bob fits in the project limit...
    reserve(project, bob)
    with pytest.raises(gate.BudgetRefused):
        reserve(project, bob)  # ...until the project limit is used up


def test_counters_are_rebuilt_from_the_ledger_after_a_redis_flush(team, redis_client):
    project, (ann, _), _ = team
    limit(amount="0.05", action="block")
    spend(project, ann, "0.04")
    redis_client.flushdb()
    with pytest.raises(gate.BudgetRefused):
        reserve(project, ann)  # 0.04 spent + 0.015+ worst case > 0.05, known again after the flush
    assert budget.blocked_agents([ann.id], project.id)[0]["name"] == "Ann"


def test_unknown_models_reserve_at_the_fail_closed_price(team, app):
    project, (ann, _), _ = team
    cost = budget.worst_case_cost("nobody/unknown-model", [], 1000)
    assert cost == Decimal(75 * 1000) / Decimal(1_000_000) + Decimal(15 * 64) / Decimal(1_000_000)
    assert cost > 0


def test_unreachable_budget_store_refuses_calls_under_a_block_limit(team, app):
    project, (ann, bob), _ = team
    limit("agent", ann.id, amount="5", action="block")
    real = app.extensions["mcc_redis"]
    app.extensions["mcc_redis"] = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(gate.GateUnavailable):
            reserve(project, ann)
        assert reserve(project, bob)[1] is not None  # no block limit covers Bob
    finally:
        app.extensions["mcc_redis"] = real


# --- task and issue scopes -------------------------------------------------------------------------

def make_task(project, title: str, issue=None):
    from mcc.models.task import Task

    task = Task(project_id=project.id, title=title, issue_id=issue.id if issue is not None else None)
    db.session.add(task)
    db.session.commit()
    return task


def call_for(project, agent, task, cost: str) -> list[dict]:
    """One call of a task's turn: reserve its worst case, then settle it at ``cost``."""
    reservation, call = reserve(project, agent, task=task)
    assert call is not None
    events = spend(project, agent, cost, task=task, reservation=reservation)
    gate.release_llm_call(call)
    return events


def test_a_task_limit_stops_that_task_and_no_other(team):
    """$0.05 on task A, calls of $0.02 (worst case ~$0.017 each): two fit, the third is refused."""
    project, (ann, bob), _ = team
    a, b = make_task(project, "A"), make_task(project, "B")
    cap = limit("task", a.id, amount="0.05", action="block")
    call_for(project, ann, a, "0.02")
    call_for(project, ann, a, "0.02")
    with pytest.raises(gate.BudgetRefused) as refused:
        call_for(project, ann, a, "0.02")
    assert refused.value.used_micro == 40_000  # what was spent stayed under the cap
    for _ in range(4):
        call_for(project, bob, b, "0.02")  # the project's other task goes on
    assert budget.spent_from_rollup(cap, budget.limit_period(cap)) == Decimal("0.04")


def test_reaching_a_task_block_fails_the_task_with_a_notification(team):
    from mcc.models.task import Task

    project, (ann, _), _ = team
    a, b = make_task(project, "Write the parser"), make_task(project, "Other work")
    cap = limit("task", a.id, amount="0.05", action="block")
    events = call_for(project, ann, a, "0.06")  # a gateway cost above the reservation reaches it
    assert [e["data"]["scope"] for e in events if e["event"] == "budget_alert"][-1] == {
        "type": "task", "id": str(a.id), "name": "Write the parser"}
    assert db.session.get(Task, a.id).status == "failed" and db.session.get(Task, b.id).status == "pending"
    note = db.session.query(Notification).filter_by(kind="task_failed").one()
    assert note.data["limit_id"] == str(cap.id) and "Task 'Write the parser'" in note.message


def test_an_issue_limit_covers_every_task_of_the_issue(team):
    from tests.factories import make_issue

    project, (ann, bob), _ = team
    issue = make_issue(project)
    one, two = make_task(project, "one", issue), make_task(project, "two", issue)
    loose = make_task(project, "not of the issue")
    limit("issue", issue.id, amount="0.03", action="block")
    call_for(project, ann, one, "0.02")
    with pytest.raises(gate.BudgetRefused):
        call_for(project, bob, two, "0.02")  # 0.02 spent by its sibling + a worst case > 0.03
    call_for(project, bob, loose, "0.02")


def test_task_and_issue_scopes_must_exist(team):
    from mcc.errors import ValidationFailed

    for scope_type in ("task", "issue"):
        with pytest.raises(ValidationFailed, match=f"No {scope_type} with that id"):
            limit(scope_type, uuid.uuid4())
