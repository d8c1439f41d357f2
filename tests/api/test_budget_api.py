"""Budget limits over HTTP, and the budget/analytics reports checked against hand-computed sums.

Spend is seeded the way the turn engine records it: a ``cost_ledger`` row plus
``budget.record_call`` (the daily rollup), and one rollup ``messages`` count per agent reply
(what ``turns._succeed`` adds). Expected figures are computed here from the seeded rows with
plain date arithmetic, independent of ``mcc.services.periods``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from mcc.extensions import db
from mcc.models.budget import BudgetLimit
from mcc.models.turn import LedgerEntry
from mcc.services import budget
from mcc.services.rollup import add_to_rollup
from tests.factories import assert_error, auth_headers, make_agent, make_issue, make_project, make_spend, make_user

SONNET = "anthropic/claude-3.5-sonnet"
LIMIT_FIELDS = {"id", "name", "scope_type", "scope_id", "amount_usd", "period", "alert_threshold",
                "action_on_exceed", "created_at", "updated_at"}


def limit_body(**overrides) -> dict:
    body = {"name": "Daily Global Limit", "scope_type": "global", "scope_id": None, "amount_usd": 50.0,
            "period": "daily", "alert_threshold": 0.8, "action_on_exceed": "warn"}
    body.update(overrides)
    return body


def create_limit(client, headers, **overrides) -> dict:
    response = client.post("/api/v1/budget/limits", json=limit_body(**overrides), headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# --- limits CRUD --------------------------------------------------------------------------------

def test_admin_creates_reads_updates_and_deletes_a_limit(client, admin):
    project = make_project()
    created = create_limit(client, admin, name="Alpha weekly", scope_type="project", scope_id=str(project.id),
                           amount_usd=120.5, period="weekly", alert_threshold=0.9, action_on_exceed="block")
    assert set(created) == LIMIT_FIELDS
    assert (created["scope_type"], created["scope_id"], created["amount_usd"], created["period"],
            created["alert_threshold"], created["action_on_exceed"]) == (
        "project", str(project.id), 120.5, "weekly", 0.9, "block")

    got = client.get(f"/api/v1/budget/limits/{created['id']}", headers=admin)
    assert got.status_code == 200 and got.get_json() == created

    patched = client.patch(f"/api/v1/budget/limits/{created['id']}", json={"amount_usd": 200, "period": "monthly"},
                           headers=admin)
    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert (body["amount_usd"], body["period"], body["name"], body["scope_id"]) == (
        200.0, "monthly", "Alpha weekly", str(project.id))

    # Narrowing a project limit to the global scope drops its scope_id.
    widened = client.patch(f"/api/v1/budget/limits/{created['id']}", json={"scope_type": "global"}, headers=admin)
    assert widened.status_code == 200 and widened.get_json()["scope_id"] is None

    listed = client.get("/api/v1/budget/limits", headers=admin).get_json()
    assert (listed["total"], listed["page"], listed["pages"]) == (1, 1, 1)
    assert [item["id"] for item in listed["items"]] == [created["id"]]

    assert client.delete(f"/api/v1/budget/limits/{created['id']}", headers=admin).status_code == 204
    assert_error(client.get(f"/api/v1/budget/limits/{created['id']}", headers=admin), 404, "RESOURCE_NOT_FOUND")
    assert client.get("/api/v1/budget/limits", headers=admin).get_json()["total"] == 0


def test_defaults_threshold_080_and_lists_page_by_page(client, admin):
    body = limit_body()
    del body["alert_threshold"]
    response = client.post("/api/v1/budget/limits", json=body, headers=admin)
    assert response.status_code == 201 and response.get_json()["alert_threshold"] == 0.8
    for n in range(4):
        create_limit(client, admin, name=f"limit {n}", amount_usd=10 + n)
    first = client.get("/api/v1/budget/limits?limit=2&page=1", headers=admin).get_json()
    third = client.get("/api/v1/budget/limits?limit=2&page=3", headers=admin).get_json()
    assert (first["total"], first["pages"], len(first["items"])) == (5, 3, 2)
    assert len(third["items"]) == 1
    assert third["items"][0]["name"] == "limit 3"  # oldest first


def test_operators_and_viewers_read_but_may_not_write(client, admin, operator, viewer):
    created = create_limit(client, admin)
    url = f"/api/v1/budget/limits/{created['id']}"
    for headers in (operator, viewer):
        assert_error(client.post("/api/v1/budget/limits", json=limit_body(), headers=headers), 403, "FORBIDDEN")
        assert_error(client.patch(url, json={"amount_usd": 1}, headers=headers), 403, "FORBIDDEN")
        assert_error(client.delete(url, headers=headers), 403, "FORBIDDEN")
        assert client.get("/api/v1/budget/limits", headers=headers).get_json()["total"] == 1
        assert client.get(url, headers=headers).status_code == 200
        for path in ("/budget/summary", "/budget/by-project", "/budget/by-agent", "/budget/timeline",
                     "/analytics/agents"):
            assert client.get(f"/api/v1{path}", headers=headers).status_code == 200, path
    assert client.get(url, headers=admin).get_json()["amount_usd"] == 50.0
    assert_error(client.get("/api/v1/budget/limits"), 401, "UNAUTHORIZED")


def test_unknown_limit_is_404(client, admin):
    missing = f"/api/v1/budget/limits/{uuid.uuid4()}"
    assert_error(client.get(missing, headers=admin), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.patch(missing, json={"amount_usd": 5}, headers=admin), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(missing, headers=admin), 404, "RESOURCE_NOT_FOUND")


CREATE_ERRORS = [  # (body overrides, the field the error names)
    ({"scope_type": "team"}, "scope_type"),
    ({"scope_type": "project"}, "scope_id"),  # required for a project
    ({"scope_type": "agent", "scope_id": None}, "scope_id"),  # required for an agent
    ({"scope_type": "project", "scope_id": "UNKNOWN"}, "scope_id"),  # must exist
    ({"scope_type": "agent", "scope_id": "UNKNOWN"}, "scope_id"),
    ({"scope_type": "agent", "scope_id": "PROJECT"}, "scope_id"),  # a project id is not an agent
    ({"scope_type": "project", "scope_id": "AGENT"}, "scope_id"),  # nor an agent id a project
    ({"scope_type": "global", "scope_id": "PROJECT"}, "scope_id"),  # must be null for global
    ({"scope_id": "not-a-uuid"}, "scope_id"),
    ({"amount_usd": 0}, "amount_usd"),
    ({"amount_usd": -5}, "amount_usd"),
    ({"amount_usd": "lots"}, "amount_usd"),
    ({"amount_usd": None}, "amount_usd"),
    ({"period": "hourly"}, "period"),
    ({"period": "Daily"}, "period"),
    ({"alert_threshold": 1.01}, "alert_threshold"),
    ({"alert_threshold": -0.1}, "alert_threshold"),
    ({"alert_threshold": "high"}, "alert_threshold"),
    ({"action_on_exceed": "kill"}, "action_on_exceed"),
    ({"name": ""}, "name"),
    ({"surprise": 1}, "surprise"),
]


def test_create_validation(client, admin):
    project = make_project()
    agent = make_agent(project)
    stand_ins = {"UNKNOWN": str(uuid.uuid4()), "PROJECT": str(project.id), "AGENT": str(agent.id)}
    for overrides, field in CREATE_ERRORS:
        body = limit_body(**{k: stand_ins.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()})
        response = client.post("/api/v1/budget/limits", json=body, headers=admin)
        assert response.status_code == 422, (overrides, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and field in str(error["details"]), (overrides, error)
    assert client.get("/api/v1/budget/limits", headers=admin).get_json()["total"] == 0


def test_required_fields_and_boundaries(client, admin):
    for field in ("name", "scope_type", "amount_usd", "period"):
        body = limit_body()
        del body[field]
        error = assert_error(client.post("/api/v1/budget/limits", json=body, headers=admin), 422,
                             "VALIDATION_ERROR")
        assert field in str(error["details"])
    # Both ends of the threshold range are allowed; so is a tiny positive amount.
    for threshold in (0, 1):
        assert create_limit(client, admin, alert_threshold=threshold)["alert_threshold"] == threshold
    assert create_limit(client, admin, amount_usd=0.000001)["amount_usd"] == 0.000001
    project = make_project()
    agent = make_agent(project)
    assert create_limit(client, admin, scope_type="agent", scope_id=str(agent.id))["scope_id"] == str(agent.id)


def test_update_validation(client, admin):
    project = make_project()
    created = create_limit(client, admin)
    url = f"/api/v1/budget/limits/{created['id']}"
    for body, field in (({"amount_usd": 0}, "amount_usd"), ({"period": "yearly"}, "period"),
                        ({"alert_threshold": 2}, "alert_threshold"), ({"action_on_exceed": "nuke"}, "action_on_exceed"),
                        ({"scope_type": "project"}, "scope_id"),  # project scope without an id
                        ({"scope_type": "agent", "scope_id": str(project.id)}, "scope_id"),
                        ({"scope_id": str(project.id)}, "scope_id"),  # global keeps a null scope_id
                        ({"id": str(uuid.uuid4())}, "id")):
        error = assert_error(client.patch(url, json=body, headers=admin), 422, "VALIDATION_ERROR")
        assert field in str(error["details"]), (body, error)
    assert client.get(url, headers=admin).get_json() == created
    moved = client.patch(url, json={"scope_type": "project", "scope_id": str(project.id)}, headers=admin)
    assert moved.status_code == 200 and moved.get_json()["scope_id"] == str(project.id)


# --- seeded spend ---------------------------------------------------------------------------------

@dataclass
class Row:
    project: object
    agent: object
    day: date
    cost: Decimal
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 1
    messages: int = 0


def record(project, agent, cost: str, at: datetime, tokens_in: int = 0, tokens_out: int = 0) -> None:
    """One LLM call, recorded as the turn engine records it (ledger row + daily rollup)."""
    entry = LedgerEntry(project_id=project.id, agent_id=agent.id, model=SONNET, tokens_in=tokens_in,
                        tokens_out=tokens_out, cost_usd=Decimal(cost), created_at=at)
    db.session.add(entry)
    db.session.flush()
    budget.record_call(entry, None)
    db.session.commit()


def reply(project, agent, day: date) -> None:
    """One agent message, counted as turns._succeed counts it."""
    add_to_rollup(day, project.id, agent.id, Decimal(0), 0, 0, messages=1)
    db.session.commit()


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), timezone.utc)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def total(rows, **where) -> Decimal:
    return sum((r.cost for r in rows if all(w(r) for w in where.values())), Decimal(0))


@pytest.fixture
def world(app, db_session):
    """Four projects, five agents, spend today, yesterday, 8 days ago, last month and 2 months ago."""
    now = datetime.now(timezone.utc)
    today = now.date()
    yesterday, eight_ago = today - timedelta(days=1), today - timedelta(days=8)
    last_month = (month_start(today) - timedelta(days=1)).replace(day=15)
    two_months = (month_start(last_month) - timedelta(days=1)).replace(day=3)
    alpha, beta, gamma, idle = (make_project(name) for name in ("Alpha", "Beta", "Gamma", "Idle"))
    a1 = make_agent(alpha, name="Ann", type="coder")
    a2 = make_agent(alpha, name="Abe", type="tester")
    b1 = make_agent(beta, name="Bea", type="architect")
    c1 = make_agent(gamma, name="Cy", type="reviewer")
    quiet = make_agent(idle, name="Quiet", type="coder")
    calls = [  # (project, agent, cost, at, tokens in, tokens out)
        (alpha, a1, "1.250000", now, 1000, 500), (alpha, a1, "0.750000", now, 300, 200),
        (alpha, a2, "0.500000", now, 100, 50), (beta, b1, "2.000000", now, 4000, 1000),
        (alpha, a1, "3.000000", noon(yesterday), 200, 100), (beta, b1, "0.125000", noon(yesterday), 10, 5),
        (alpha, a2, "4.000000", noon(eight_ago), 7, 3), (gamma, c1, "0.333333", noon(eight_ago), 33, 11),
        (alpha, a1, "10.000000", noon(last_month), 10_000, 2000), (beta, b1, "7.500000", noon(last_month), 5, 5),
        (gamma, c1, "99.000000", noon(two_months), 1, 1),
    ]
    rows = []
    for project, agent, cost, at, tokens_in, tokens_out in calls:
        record(project, agent, cost, at, tokens_in, tokens_out)
        rows.append(Row(project, agent, at.date(), Decimal(cost), tokens_in, tokens_out))
    for project, agent, day in ((alpha, a1, today), (alpha, a1, today), (alpha, a1, yesterday), (beta, b1, today),
                                (alpha, a2, eight_ago), (beta, b1, last_month)):
        reply(project, agent, day)
        rows.append(Row(project, agent, day, Decimal(0), calls=0, messages=1))
    return {"today": today, "yesterday": yesterday, "eight_ago": eight_ago, "last_month": last_month,
            "two_months": two_months, "rows": rows, "projects": (alpha, beta, gamma, idle),
            "agents": (a1, a2, b1, c1, quiet)}


def sums_by(rows, key, start: date, end: date) -> dict:
    """{entity id: (spent, tokens_in, tokens_out, calls, messages)} over start..end inclusive."""
    result: dict = {}
    for r in rows:
        if not start <= r.day <= end:
            continue
        entity = key(r)
        spent, tin, tout, calls, messages = result.get(entity.id, (Decimal(0), 0, 0, 0, 0))
        result[entity.id] = (spent + r.cost, tin + r.tokens_in, tout + r.tokens_out, calls + r.calls,
                             messages + r.messages)
    return result


def as_items(sums: dict) -> dict:
    return {str(k): {"spent": float(v[0]), "tokens_in": v[1], "tokens_out": v[2], "calls": v[3], "messages": v[4]}
            for k, v in sums.items()}


# --- summary --------------------------------------------------------------------------------------

def test_summary_compares_spend_with_the_matching_global_limits(client, admin, world):
    today, rows = world["today"], world["rows"]
    alpha = world["projects"][0]
    a1, _, b1 = world["agents"][:3]
    create_limit(client, admin, name="global daily", amount_usd=50, period="daily")
    create_limit(client, admin, name="global monthly", amount_usd=100, period="monthly", action_on_exceed="block")
    create_limit(client, admin, name="global monthly tighter", amount_usd=80, period="monthly")
    # Scoped limits never stand in for the global one in today/week/month...
    alpha_daily = create_limit(client, admin, name="alpha daily", scope_type="project", scope_id=str(alpha.id),
                               amount_usd=3, alert_threshold=0.5)
    ann_daily = create_limit(client, admin, name="ann daily", scope_type="agent", scope_id=str(a1.id),
                             amount_usd=1.5, action_on_exceed="pause")
    create_limit(client, admin, name="bea weekly", scope_type="agent", scope_id=str(b1.id), amount_usd=100,
                 period="weekly")
    create_limit(client, admin, name="alpha weekly", scope_type="project", scope_id=str(alpha.id),
                 amount_usd=1000, period="weekly", alert_threshold=0)  # threshold 0: always "over"

    summary = client.get("/api/v1/budget/summary", headers=admin).get_json()
    spent_today = total(rows, d=lambda r: r.day == today)
    spent_week = total(rows, d=lambda r: week_start(today) <= r.day <= today)
    spent_month = total(rows, d=lambda r: month_start(today) <= r.day <= today)
    assert spent_today == Decimal("4.5")
    assert summary["today"] == {"spent": float(spent_today), "limit": 50.0,
                                "percentage": round(float(spent_today / 50), 4)}
    assert summary["week"] == {"spent": float(spent_week), "limit": None, "percentage": None}
    # Two monthly global limits: the tighter one is the one that matters.
    assert summary["month"] == {"spent": float(spent_month), "limit": 80.0,
                                "percentage": round(float(spent_month / 80), 4)}

    alerts = {a["limit_id"]: a for a in summary["alerts"]}
    alpha_today = total(rows, d=lambda r: r.day == today, p=lambda r: r.project is alpha)
    ann_today = total(rows, d=lambda r: r.day == today, a=lambda r: r.agent is a1)
    assert (alpha_today, ann_today) == (Decimal("2.5"), Decimal("2.0"))
    assert len(alerts) == 3, summary["alerts"]
    assert alerts[alpha_daily["id"]] == {
        "type": "warning", "limit_id": alpha_daily["id"],
        "scope": {"type": "project", "id": str(alpha.id), "name": "Alpha"},
        "current": 2.5, "limit": 3.0, "percentage": round(2.5 / 3, 4),
        "message": "Project 'Alpha' at 83% of daily limit"}
    assert alerts[ann_daily["id"]]["type"] == "critical"
    assert alerts[ann_daily["id"]]["scope"] == {"type": "agent", "id": str(a1.id), "name": "Ann"}
    assert (alerts[ann_daily["id"]]["current"], alerts[ann_daily["id"]]["percentage"]) == (2.0, round(2 / 1.5, 4))
    assert "Agent 'Ann' at 133% of daily limit" == alerts[ann_daily["id"]]["message"]


def test_summary_without_limits_or_spend(client, viewer):
    """No global limit (a new install): limit and percentage are null, and the OpenAPI document says so."""
    summary = client.get("/api/v1/budget/summary", headers=viewer).get_json()
    assert summary == {name: {"spent": 0.0, "limit": None, "percentage": None} for name in ("today", "week", "month")} \
        | {"alerts": []}
    spent = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["Spent"]["properties"]
    assert spent["limit"]["nullable"] is True and "null when no global limit" in spent["limit"]["description"]
    assert spent["percentage"]["nullable"] is True


def test_deleting_a_project_does_not_take_its_spend_out_of_the_global_figures(client, admin, operator, world):
    """Money spent stays spent: the summary, the timeline and a global limit's counter (rebuilt from
    the rollup after Redis loses it) keep counting a deleted project's spend; by-project drops it."""
    today = world["today"]
    alpha = world["projects"][0]
    monthly = create_limit(client, admin, name="global monthly", amount_usd=1000, period="monthly")
    timeline_query = {"start_date": month_start(today).isoformat(), "end_date": today.isoformat()}
    summary_before = client.get("/api/v1/budget/summary", headers=admin).get_json()
    timeline_before = client.get("/api/v1/budget/timeline", query_string=timeline_query, headers=admin).get_json()
    assert summary_before["today"]["spent"] == pytest.approx(4.5)  # alpha's 2.5 + beta's 2.0

    assert client.delete(f"/api/v1/projects/{alpha.id}", headers=operator).status_code == 204
    summary_after = client.get("/api/v1/budget/summary", headers=admin).get_json()
    assert summary_after == summary_before
    timeline_after = client.get("/api/v1/budget/timeline", query_string=timeline_query, headers=admin).get_json()
    assert timeline_after == timeline_before
    limit = db.session.get(BudgetLimit, uuid.UUID(monthly["id"]))
    assert float(budget.spent_from_rollup(limit, budget.limit_period(limit))) == summary_before["month"]["spent"]
    listed = client.get("/api/v1/budget/by-project", headers=admin).get_json()["items"]
    assert str(alpha.id) not in {item["id"] for item in listed} and listed


# --- by project / by agent -----------------------------------------------------------------------

def test_by_project_defaults_to_this_month_and_matches_the_ledger(client, viewer, world):
    today, rows = world["today"], world["rows"]
    page = client.get("/api/v1/budget/by-project", headers=viewer).get_json()
    assert (page["start_date"], page["end_date"]) == (month_start(today).isoformat(), today.isoformat())
    expected = as_items(sums_by(rows, lambda r: r.project, month_start(today), today))
    assert page["total"] == len(expected) and page["page"] == 1
    got = {item["id"]: {k: item[k] for k in ("spent", "tokens_in", "tokens_out", "calls", "messages")}
           for item in page["items"]}
    assert got == expected
    assert [item["spent"] for item in page["items"]] == sorted((e["spent"] for e in expected.values()), reverse=True)
    names = {str(p.id): p.name for p in world["projects"]}
    assert all(item["name"] == names[item["id"]] for item in page["items"])
    assert str(world["projects"][3].id) not in got  # no spend, no row


def test_by_project_over_a_date_range_and_paginated(client, viewer, world):
    rows, last_month, today = world["rows"], world["last_month"], world["today"]
    start, end = world["two_months"], last_month
    query = f"start_date={start.isoformat()}&end_date={end.isoformat()}"
    page = client.get(f"/api/v1/budget/by-project?{query}", headers=viewer).get_json()
    expected = as_items(sums_by(rows, lambda r: r.project, start, end))
    assert {i["id"]: {k: i[k] for k in expected[i["id"]]} for i in page["items"]} == expected
    gamma = world["projects"][2]
    assert expected[str(gamma.id)]["spent"] == 99.0  # two months ago only
    # A single day: only yesterday's spend.
    day = world["yesterday"].isoformat()
    single = client.get(f"/api/v1/budget/by-project?start_date={day}&end_date={day}", headers=viewer).get_json()
    assert {i["id"]: i["spent"] for i in single["items"]} == {
        k: v["spent"] for k, v in as_items(sums_by(rows, lambda r: r.project, world["yesterday"],
                                                   world["yesterday"])).items()}
    # Everything, two per page.
    everything = f"start_date={start.isoformat()}&end_date={today.isoformat()}"
    all_expected = as_items(sums_by(rows, lambda r: r.project, start, today))
    ordered = sorted(all_expected, key=lambda k: -all_expected[k]["spent"])
    first = client.get(f"/api/v1/budget/by-project?{everything}&limit=2", headers=viewer).get_json()
    second = client.get(f"/api/v1/budget/by-project?{everything}&limit=2&page=2", headers=viewer).get_json()
    beyond = client.get(f"/api/v1/budget/by-project?{everything}&limit=2&page=3", headers=viewer).get_json()
    assert (first["total"], first["pages"], second["page"]) == (3, 2, 2)
    assert [i["id"] for i in first["items"] + second["items"]] == ordered
    assert beyond["items"] == [] and beyond["total"] == 3


def test_by_agent_reports_each_agents_spend_tokens_calls_and_messages(client, viewer, world):
    rows, today = world["rows"], world["today"]
    page = client.get("/api/v1/budget/by-agent?limit=100", headers=viewer).get_json()
    expected = as_items(sums_by(rows, lambda r: r.agent, month_start(today), today))
    got = {i["id"]: {k: i[k] for k in ("spent", "tokens_in", "tokens_out", "calls", "messages")}
           for i in page["items"]}
    assert got == expected and page["total"] == len(expected)
    a1 = world["agents"][0]
    ann = next(i for i in page["items"] if i["id"] == str(a1.id))
    assert (ann["name"], ann["type"], ann["project_id"]) == ("Ann", "coder", str(a1.project_id))
    if world["yesterday"] >= month_start(today):  # not on the 1st of a month
        assert ann["messages"] == 3 and ann["calls"] == 3 and ann["spent"] == 5.0

    start = world["two_months"]
    query = f"start_date={start.isoformat()}&end_date={today.isoformat()}"
    all_expected = as_items(sums_by(rows, lambda r: r.agent, start, today))
    seen = []
    for number in (1, 2):
        part = client.get(f"/api/v1/budget/by-agent?{query}&limit=2&page={number}", headers=viewer).get_json()
        assert (part["total"], part["pages"]) == (4, 2)
        seen += part["items"]
    assert {i["id"]: i["spent"] for i in seen} == {k: v["spent"] for k, v in all_expected.items()}
    assert all_expected[str(a1.id)] == {"spent": 15.0, "tokens_in": 11_500, "tokens_out": 2_800, "calls": 4,
                                        "messages": 3}


def test_spend_reports_reject_bad_queries(client, viewer):
    # end_date alone, before the default start (the 1st of this month), is "end before start" too.
    early = (month_start(datetime.now(timezone.utc).date()) - timedelta(days=1)).isoformat()
    for query in ("start_date=2026-02-30", "start_date=yesterday", "end_date=2026-1-1x",
                  "start_date=2026-03-10&end_date=2026-03-09", f"end_date={early}", "limit=0", "limit=101",
                  "page=0"):
        for path in ("by-project", "by-agent"):
            assert_error(client.get(f"/api/v1/budget/{path}?{query}", headers=viewer), 422, "VALIDATION_ERROR")


# --- timeline -------------------------------------------------------------------------------------

def expected_points(rows, periods: list[tuple[date, date]], start: date, end: date) -> list[dict]:
    points = []
    for first, following in periods:
        inside = [r for r in rows if first <= r.day < following and start <= r.day <= end]
        points.append({"period_start": first.isoformat(), "spent": float(sum((r.cost for r in inside), Decimal(0))),
                       "tokens_in": sum(r.tokens_in for r in inside),
                       "tokens_out": sum(r.tokens_out for r in inside), "calls": sum(r.calls for r in inside)})
    return points


def test_timeline_by_day_has_one_point_per_day_zeros_included(client, viewer, world):
    rows, today = world["rows"], world["today"]
    start = today - timedelta(days=9)
    body = client.get(f"/api/v1/budget/timeline?start_date={start}&end_date={today}&granularity=day",
                      headers=viewer).get_json()
    assert (body["start_date"], body["end_date"], body["granularity"]) == (start.isoformat(), today.isoformat(), "day")
    days = [(start + timedelta(days=n), start + timedelta(days=n + 1)) for n in range(10)]
    assert body["points"] == expected_points(rows, days, start, today)
    assert len(body["points"]) == 10
    assert sum(1 for p in body["points"] if p["spent"] == 0) == 7  # today, yesterday, 8 days ago have spend
    assert body["points"][-1]["spent"] == 4.5 and body["points"][-1]["calls"] == 4
    assert body["points"][1] == {"period_start": world["eight_ago"].isoformat(), "spent": 4.333333,
                                 "tokens_in": 40, "tokens_out": 14, "calls": 2}


def test_timeline_default_is_this_month_by_day(client, viewer, world):
    today = world["today"]
    body = client.get("/api/v1/budget/timeline", headers=viewer).get_json()
    assert (body["start_date"], body["end_date"], body["granularity"]) == (
        month_start(today).isoformat(), today.isoformat(), "day")
    assert len(body["points"]) == today.day
    assert sum(Decimal(str(p["spent"])) for p in body["points"]) == total(
        world["rows"], d=lambda r: month_start(today) <= r.day <= today)


def test_timeline_by_week_and_by_month(client, viewer, world):
    rows, today = world["rows"], world["today"]
    start = world["two_months"]
    weekly = client.get(f"/api/v1/budget/timeline?start_date={start}&end_date={today}&granularity=week",
                        headers=viewer).get_json()["points"]
    weeks, first = [], week_start(start)
    while first <= today:
        weeks.append((first, first + timedelta(days=7)))
        first += timedelta(days=7)
    assert weekly == expected_points(rows, weeks, start, today)
    assert all(date.fromisoformat(p["period_start"]).weekday() == 0 for p in weekly)  # weeks start on Monday
    assert sum(Decimal(str(p["spent"])) for p in weekly) == total(rows)

    monthly = client.get(f"/api/v1/budget/timeline?start_date={start}&end_date={today}&granularity=month",
                         headers=viewer).get_json()["points"]
    months = [(month_start(start), next_month(start))]
    while months[-1][1] <= today:
        months.append((months[-1][1], next_month(months[-1][1])))
    assert len(months) == 3
    assert monthly == expected_points(rows, months, start, today)
    assert monthly[0]["spent"] == 99.0 and monthly[1]["spent"] == 17.5
    # A range starting mid-period counts only the days inside it.
    mid = world["two_months"] + timedelta(days=1)
    clipped = client.get(f"/api/v1/budget/timeline?start_date={mid}&end_date={today}&granularity=month",
                         headers=viewer).get_json()["points"]
    assert clipped[0] == {"period_start": month_start(mid).isoformat(), "spent": 0.0, "tokens_in": 0,
                          "tokens_out": 0, "calls": 0}


def test_timeline_rejects_bad_dates_and_ranges(client, viewer):
    early = (month_start(datetime.now(timezone.utc).date()) - timedelta(days=1)).isoformat()
    for query in ("start_date=2026-13-01&end_date=2026-12-31", "start_date=nope",
                  "end_date=31.12.2026&start_date=2026-01-01", "start_date=2026-03-10&end_date=2026-03-09",
                  f"end_date={early}", "granularity=year", "granularity=",
                  "start_date=2000-01-01&end_date=2026-01-01"):  # over ten years
        assert_error(client.get(f"/api/v1/budget/timeline?{query}", headers=viewer), 422, "VALIDATION_ERROR")


# --- analytics ----------------------------------------------------------------------------------

def add_tasks(project, agent, coder=None, **counts) -> None:
    """Tasks held by ``agent`` (assigned_agent_id) and coded by ``coder`` (coder_agent_id)."""
    from mcc.models.task import Task

    # Core insert of the long-standing columns only (the tasks table gains columns over time).
    for status, n in counts.items():
        for i in range(n):
            db.session.execute(insert(Task.__table__).values(
                id=uuid.uuid4(), project_id=project.id, title=f"{status} {i}", status=status, priority="medium",
                assigned_agent_id=agent.id if agent is not None else None,
                coder_agent_id=coder.id if coder is not None else None, progress=0, attempts=0,
                created_at=datetime.now(timezone.utc), updated_at=datetime.now(timezone.utc)))
    db.session.commit()


def test_agent_analytics_match_the_ledger_and_tasks(client, viewer, world):
    rows = world["rows"]
    alpha, beta, _, idle = world["projects"]
    a1, a2, b1, c1, quiet = world["agents"]
    add_tasks(alpha, a1, completed=2, in_progress=2, pending=1)
    # As the pipeline leaves them: completed tasks hold nobody, but their coder did the work; a task
    # that failed in testing is held by the tester (a2) and still counts for its coder.
    add_tasks(alpha, None, coder=a1, completed=1)
    add_tasks(alpha, a2, coder=a1, failed=1)
    add_tasks(beta, b1, failed=2, review=1)
    add_tasks(idle, quiet, completed=2)
    add_tasks(alpha, None, completed=5)  # never assigned, no coder: nobody's success
    add_tasks(alpha, a2, coder=a1, review=1)  # open: in nobody's success rate yet

    body = client.get("/api/v1/analytics/agents?limit=100", headers=viewer).get_json()
    assert body["total"] == 5 and len(body["agents"]) == 5
    metrics = {a["id"]: a for a in body["agents"]}

    def cost_and_messages(agent):
        mine = [r for r in rows if r.agent is agent]
        return sum((r.cost for r in mine), Decimal(0)), sum(r.messages for r in mine)

    cost, messages = cost_and_messages(a1)
    assert (cost, messages) == (Decimal("15"), 3)
    assert metrics[str(a1.id)] == {"id": str(a1.id), "name": "Ann", "type": "coder", "project_id": str(alpha.id),
                                   "metrics": {"total_messages": 3, "total_cost": 15.0, "avg_cost_per_message": 5.0,
                                               "tasks_completed": 3, "success_rate": 0.75,
                                               "cost_per_completed_task": 5.0}}
    cost, messages = cost_and_messages(b1)
    assert metrics[str(b1.id)]["metrics"] == {
        "total_messages": messages, "total_cost": float(cost), "avg_cost_per_message": float(cost / messages),
        "tasks_completed": 0, "success_rate": 0.0, "cost_per_completed_task": None}
    cost, messages = cost_and_messages(c1)
    assert messages == 0
    assert metrics[str(c1.id)]["metrics"] == {
        "total_messages": 0, "total_cost": float(cost), "avg_cost_per_message": None, "tasks_completed": 0,
        "success_rate": None, "cost_per_completed_task": None}
    # Outcomes without spend: success 100 %, and the completed tasks cost nothing.
    assert metrics[str(quiet.id)]["metrics"] == {
        "total_messages": 0, "total_cost": 0.0, "avg_cost_per_message": None, "tasks_completed": 2,
        "success_rate": 1.0, "cost_per_completed_task": 0.0}
    cost, messages = cost_and_messages(a2)
    assert metrics[str(a2.id)]["metrics"]["avg_cost_per_message"] == round(float(cost / messages), 6)
    # The tester holds a failed and an open task it did not code: neither is its outcome.
    assert (metrics[str(a2.id)]["metrics"]["tasks_completed"], metrics[str(a2.id)]["metrics"]["success_rate"]) \
        == (0, None)

    first = client.get("/api/v1/analytics/agents?limit=2", headers=viewer).get_json()
    third = client.get("/api/v1/analytics/agents?limit=2&page=3", headers=viewer).get_json()
    assert (first["total"], first["pages"], len(first["agents"]), len(third["agents"])) == (5, 3, 2, 1)


# --- a non-UTC timezone -----------------------------------------------------------------------------

@pytest.fixture
def new_york(app):
    saved = app.config["MCC_TIMEZONE"]
    app.config["MCC_TIMEZONE"] = "America/New_York"
    yield ZoneInfo("America/New_York")
    app.config["MCC_TIMEZONE"] = saved


def test_days_weeks_and_months_follow_the_configured_timezone(client, viewer, db_session, new_york):
    project = make_project("Eastern")
    agent = make_agent(project, name="Ed")
    # 2026-03-02 is a Monday. 04:30 UTC on that day is still Sunday 23:30 in New York (EST, UTC-5).
    record(project, agent, "1.000000", datetime(2026, 3, 2, 4, 30, tzinfo=timezone.utc))
    record(project, agent, "2.000000", datetime(2026, 3, 2, 5, 0, tzinfo=timezone.utc))  # Monday 00:00 local
    # 2026-04-01 03:59:59 UTC is March 31st 23:59:59 in New York (EDT, UTC-4); a second later is April.
    record(project, agent, "4.000000", datetime(2026, 4, 1, 3, 59, 59, tzinfo=timezone.utc))
    record(project, agent, "8.000000", datetime(2026, 4, 1, 4, 0, 0, tzinfo=timezone.utc))

    def points(start, end, granularity):
        response = client.get(f"/api/v1/budget/timeline?start_date={start}&end_date={end}&granularity={granularity}",
                              headers=viewer)
        return {p["period_start"]: p["spent"] for p in response.get_json()["points"]}

    assert points("2026-03-01", "2026-03-02", "day") == {"2026-03-01": 1.0, "2026-03-02": 2.0}
    assert points("2026-02-23", "2026-03-08", "week") == {"2026-02-23": 1.0, "2026-03-02": 2.0}
    assert points("2026-03-01", "2026-04-30", "month") == {"2026-03-01": 7.0, "2026-04-01": 8.0}
    spend = client.get("/api/v1/budget/by-project?start_date=2026-03-31&end_date=2026-03-31",
                       headers=viewer).get_json()["items"]
    assert [(i["name"], i["spent"]) for i in spend] == [("Eastern", 4.0)]


def test_summary_today_is_the_local_day(client, viewer, db_session, new_york):
    project = make_project("Eastern")
    agent = make_agent(project, name="Ed")
    local_now = datetime.now(new_york)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    before = midnight - timedelta(seconds=1)  # 23:59:59 yesterday, local
    record(project, agent, "1.000000", before.astimezone(timezone.utc))
    record(project, agent, "2.000000", midnight.astimezone(timezone.utc))
    record(project, agent, "4.000000", local_now.astimezone(timezone.utc))
    summary = client.get("/api/v1/budget/summary", headers=viewer).get_json()
    assert summary["today"]["spent"] == 6.0
    local_today = local_now.date()
    yesterday = before.date()
    expected_week = 6.0 + (1.0 if week_start(yesterday) == week_start(local_today) else 0.0)
    expected_month = 6.0 + (1.0 if month_start(yesterday) == month_start(local_today) else 0.0)
    assert (summary["week"]["spent"], summary["month"]["spent"]) == (expected_week, expected_month)
    by_day = client.get(f"/api/v1/budget/timeline?start_date={yesterday}&end_date={local_today}",
                        headers=viewer).get_json()["points"]
    assert [(p["period_start"], p["spent"]) for p in by_day] == [(yesterday.isoformat(), 1.0),
                                                                  (local_today.isoformat(), 6.0)]



# --- task and issue limits, spend by task -------------------------------------------------------------

def _task(project, title, issue=None):
    from mcc.models.task import Task

    task = Task(project_id=project.id, title=title, issue_id=issue.id if issue is not None else None)
    db.session.add(task)
    db.session.commit()
    return task


def _task_call(project, agent, task, cost: str, at: datetime | None = None, tokens=(0, 0)) -> None:
    entry = LedgerEntry(project_id=project.id, agent_id=agent.id, task_id=task.id, model=SONNET, cost_usd=Decimal(cost),
                        tokens_in=tokens[0], tokens_out=tokens[1], **({"created_at": at} if at else {}))
    db.session.add(entry)
    db.session.flush()
    budget.record_call(entry, None)
    db.session.commit()


def test_limits_scoped_to_a_task_or_an_issue(client, admin, db_session):
    project = make_project("Scoped")
    issue = make_issue(project, title="Login is broken")
    task = _task(project, "Fix the login form", issue)
    by_task = create_limit(client, admin, scope_type="task", scope_id=str(task.id), amount_usd=0.05,
                           action_on_exceed="block")
    by_issue = create_limit(client, admin, scope_type="issue", scope_id=str(issue.id), amount_usd=1.0)
    assert (by_task["scope_type"], by_task["scope_id"]) == ("task", str(task.id))
    assert (by_issue["scope_type"], by_issue["scope_id"]) == ("issue", str(issue.id))
    for scope_type in ("task", "issue"):
        response = client.post("/api/v1/budget/limits", headers=admin,
                               json=limit_body(scope_type=scope_type, scope_id=str(uuid.uuid4())))
        assert_error(response, 422, "VALIDATION_ERROR")
        response = client.post("/api/v1/budget/limits", headers=admin, json=limit_body(scope_type=scope_type))
        assert_error(response, 422, "VALIDATION_ERROR")
    # Their alerts name the task (by its title) or the issue.
    agent = make_agent(project, name="Cody")
    _task_call(project, agent, task, "0.05")
    alerts = client.get("/api/v1/budget/summary", headers=admin).get_json()["alerts"]
    assert {"type": "task", "id": str(task.id), "name": "Fix the login form"} in [a["scope"] for a in alerts]


def test_spend_by_task_is_paginated_most_spent_first_and_filters_by_project(client, viewer, db_session):
    alpha, beta = make_project("Alpha"), make_project("Beta")
    ann, bea = make_agent(alpha, name="Ann"), make_agent(beta, name="Bea")
    small, big, other = _task(alpha, "small"), _task(alpha, "big"), _task(beta, "other")
    _task_call(alpha, ann, small, "0.10", tokens=(10, 5))
    _task_call(alpha, ann, big, "0.30", tokens=(30, 15))
    _task_call(alpha, ann, big, "0.20", tokens=(20, 10))
    _task_call(beta, bea, other, "0.25")
    _task_call(alpha, ann, small, "9.00", at=noon(month_start(date.today()) - timedelta(days=40)))  # not this month
    make_spend(alpha, ann, "1.00")  # a call of no task

    page = client.get("/api/v1/budget/by-task?limit=2", headers=viewer).get_json()
    assert page["total"] == 3 and page["pages"] == 2
    assert [(i["name"], i["spent"], i["calls"]) for i in page["items"]] == [("big", 0.5, 2), ("other", 0.25, 1)]
    assert page["items"][0] == {"id": str(big.id), "name": "big", "project_id": str(alpha.id), "issue_id": None,
                                "status": "pending", "spent": 0.5, "tokens_in": 50, "tokens_out": 25, "calls": 2}
    second = client.get("/api/v1/budget/by-task?limit=2&page=2", headers=viewer).get_json()
    assert [i["name"] for i in second["items"]] == ["small"]
    only_beta = client.get(f"/api/v1/budget/by-task?project_id={beta.id}", headers=viewer).get_json()
    assert [i["name"] for i in only_beta["items"]] == ["other"]
    # The task shape shows what its calls cost, all time.
    operator = auth_headers(client, make_user("operator"))
    listed = client.get(f"/api/v1/projects/{alpha.id}/tasks", headers=operator).get_json()["items"]
    assert {t["title"]: t["spent"] for t in listed} == {"small": 9.1, "big": 0.5}
