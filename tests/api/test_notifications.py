"""Notifications over HTTP: filters, per-user read state, and what creates them (budget alerts,
emergency pause and resume)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from mcc.extensions import db
from mcc.models.turn import LedgerEntry
from mcc.services import budget
from mcc.services.notifications import notify
from tests.factories import assert_error, auth_headers, make_agent, make_project, make_user

NOTIFICATION_FIELDS = {"id", "severity", "kind", "title", "message", "data", "project_id", "is_read", "created_at"}


@pytest.fixture
def alice(client):
    return auth_headers(client, make_user("operator", username=f"alice-{uuid.uuid4().hex[:6]}"))


@pytest.fixture
def bob(client):
    return auth_headers(client, make_user("viewer", username=f"bob-{uuid.uuid4().hex[:6]}"))


def listing(client, headers, query: str = "") -> dict:
    response = client.get(f"/api/v1/notifications{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def five(db_session):
    """Five notifications, oldest first: info, warning, critical, warning, info."""
    created = [notify(severity, "test", f"n{i}", f"notification {i}", {"i": i})
               for i, severity in enumerate(("info", "warning", "critical", "warning", "info"))]
    db.session.commit()
    return [str(n.id) for n in created]


def test_list_newest_first_with_severity_and_limit_filters(client, alice, five):
    page = listing(client, alice)
    assert [item["id"] for item in page["items"]] == list(reversed(five))
    assert (page["total"], page["page"], page["pages"], page["unread"]) == (5, 1, 1, 5)
    assert set(page["items"][0]) == NOTIFICATION_FIELDS
    assert page["items"][0]["is_read"] is False and page["items"][0]["data"] == {"i": 4}

    warnings = listing(client, alice, "?severity=warning")
    assert [i["id"] for i in warnings["items"]] == [five[3], five[1]] and warnings["total"] == 2
    assert [i["id"] for i in listing(client, alice, "?severity=critical")["items"]] == [five[2]]
    assert listing(client, alice, "?severity=info")["total"] == 2

    limited = listing(client, alice, "?limit=2")
    assert [i["id"] for i in limited["items"]] == [five[4], five[3]]
    assert (limited["total"], limited["pages"]) == (5, 3)
    assert [i["id"] for i in listing(client, alice, "?limit=2&page=3")["items"]] == [five[0]]
    for query in ("?severity=fatal", "?limit=0", "?limit=101", "?is_read=perhaps", "?page=0"):
        assert_error(client.get(f"/api/v1/notifications{query}", headers=alice), 422, "VALIDATION_ERROR")
    assert_error(client.get("/api/v1/notifications"), 401, "UNAUTHORIZED")


def test_read_state_is_per_user(client, alice, bob, five):
    marked = client.post(f"/api/v1/notifications/{five[2]}/read", headers=alice)
    assert marked.status_code == 200 and marked.get_json()["id"] == five[2] and marked.get_json()["is_read"] is True
    # Marking again changes nothing.
    assert client.post(f"/api/v1/notifications/{five[2]}/read", headers=alice).status_code == 200

    mine = listing(client, alice)
    assert {i["id"]: i["is_read"] for i in mine["items"]} == {n: n == five[2] for n in five}
    assert mine["unread"] == 4
    assert [i["id"] for i in listing(client, alice, "?is_read=true")["items"]] == [five[2]]
    assert listing(client, alice, "?is_read=false")["total"] == 4
    assert listing(client, alice, "?is_read=false&severity=critical")["total"] == 0

    theirs = listing(client, bob)
    assert theirs["unread"] == 5 and not any(i["is_read"] for i in theirs["items"])
    assert listing(client, bob, "?is_read=true")["total"] == 0

    # Bob (a viewer) may mark his own copy read.
    assert client.post(f"/api/v1/notifications/{five[0]}/read", headers=bob).status_code == 200
    assert listing(client, bob)["unread"] == 4
    assert listing(client, alice)["unread"] == 4
    assert [i["id"] for i in listing(client, alice, "?is_read=true")["items"]] == [five[2]]


def test_read_all_marks_only_the_callers_notifications(client, alice, bob, five):
    client.post(f"/api/v1/notifications/{five[1]}/read", headers=alice)
    first = client.post("/api/v1/notifications/read-all", headers=alice)
    assert first.status_code == 200 and first.get_json() == {"marked_read": 4}
    assert client.post("/api/v1/notifications/read-all", headers=alice).get_json() == {"marked_read": 0}
    assert listing(client, alice)["unread"] == 0
    assert listing(client, alice, "?is_read=false")["items"] == []
    assert listing(client, bob)["unread"] == 5

    # A notification raised after read-all is unread again for everyone.
    later = notify("critical", "test", "later", "after read-all")
    db.session.commit()
    assert [i["id"] for i in listing(client, alice, "?is_read=false")["items"]] == [str(later.id)]
    assert listing(client, bob)["unread"] == 6
    assert client.post("/api/v1/notifications/read-all", headers=bob).get_json() == {"marked_read": 6}


def test_marking_an_unknown_notification_is_404(client, alice):
    assert_error(client.post(f"/api/v1/notifications/{uuid.uuid4()}/read", headers=alice), 404,
                 "RESOURCE_NOT_FOUND")
    assert client.post("/api/v1/notifications/not-a-uuid/read", headers=alice).status_code == 404


def test_budget_alerts_become_notifications(client, alice, db_session):
    project = make_project("Spendy")
    agent = make_agent(project, name="Sam")
    limit = budget.create_limit({"name": "spendy daily", "scope_type": "project", "scope_id": project.id,
                                 "amount_usd": Decimal("10"), "period": "daily", "alert_threshold": 0.5,
                                 "action_on_exceed": "warn"})
    db.session.commit()

    def spend(cost: str) -> None:
        entry = LedgerEntry(project_id=project.id, agent_id=agent.id, model="anthropic/claude-3.5-sonnet",
                            tokens_in=1, tokens_out=1, cost_usd=Decimal(cost), created_at=datetime.now(timezone.utc))
        db.session.add(entry)
        db.session.flush()
        budget.record_call(entry, None)
        db.session.commit()
        budget.settle(None, entry)
        db.session.commit()

    spend("4")
    assert listing(client, alice)["total"] == 0
    spend("2")  # 60 %: warning
    spend("1")  # 70 %: nothing new
    spend("4")  # 110 %: critical
    spend("4")  # still over: nothing new
    page = listing(client, alice, "?severity=warning")
    assert page["total"] == 1
    warning = page["items"][0]
    assert (warning["kind"], warning["project_id"]) == ("budget_alert", str(project.id))
    assert "Spendy" in warning["message"] and "60%" in warning["message"]
    assert warning["data"]["limit_id"] == str(limit.id) and warning["data"]["spent"] == 6.0
    critical = listing(client, alice, "?severity=critical")["items"]
    assert [(n["kind"], n["data"]["spent"]) for n in critical] == [("budget_alert", 11.0)]
    assert "110%" in critical[0]["message"]


def test_emergency_pause_and_resume_become_notifications(client, admin, alice, db_session):
    paused = client.post("/api/v1/emergency/pause-all", json={"reason": "drill"}, headers=admin)
    assert paused.status_code == 200, paused.get_json()
    resumed = client.post("/api/v1/emergency/resume-all", headers=admin)
    assert resumed.status_code == 200, resumed.get_json()
    items = listing(client, alice)["items"]
    assert [(n["kind"], n["severity"]) for n in items] == [("emergency_resume", "info"),
                                                          ("emergency_pause", "critical")]
    assert "drill" in items[1]["message"]
    assert [n["kind"] for n in listing(client, alice, "?severity=critical")["items"]] == ["emergency_pause"]
    # The admin who paused reads them like anyone else: unread until marked.
    assert listing(client, admin)["unread"] == 2
