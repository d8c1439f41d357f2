"""The audit trail: every act is on it with actor, time and target; it cannot be changed."""
from __future__ import annotations

import time
import uuid

import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mcc.models.audit import AuditEvent
from tests.api.test_agents import agent_body
from tests.api.test_budget_api import limit_body
from tests.factories import PASSWORD, assert_error, auth_headers, make_user

AUDIT_FIELDS = {"id", "actor", "action", "target_type", "target_id", "details", "ip", "request_id", "created_at"}


def trail(client, admin, **filters) -> list[dict]:
    response = client.get("/api/v1/audit", query_string={"limit": 100, **filters}, headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def last(client, admin, action: str) -> dict:
    items = trail(client, admin, action=action)
    assert items, f"no {action} on the trail"
    return items[0]


def test_logins_succeeded_and_failed_are_on_the_trail_with_ip_and_request_id(client, admin):
    user = make_user("viewer", username="auditee")
    ok = client.post("/api/v1/auth/login", json={"username": "auditee", "password": PASSWORD},
                     headers={"X-Request-ID": "login-ok-1"}, environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert ok.status_code == 200
    bad = client.post("/api/v1/auth/login", json={"username": "auditee", "password": "wrong"},
                      headers={"X-Request-ID": "login-bad-1"})
    assert bad.status_code == 401
    client.post("/api/v1/auth/login", json={"username": "nobody-at-all", "password": "wrong"})

    login = last(client, admin, "auth.login")
    assert set(login) == AUDIT_FIELDS
    assert (login["actor"], login["target_type"], login["target_id"]) == ("auditee", "user", str(user.id))
    assert (login["ip"], login["request_id"]) == ("203.0.113.7", "login-ok-1") and login["created_at"].endswith("Z")
    failed = trail(client, admin, action="auth.login_failed")
    assert [(f["actor"], f["details"]["reason"]) for f in failed] == [("nobody-at-all", "bad credentials"),
                                                                    ("auditee", "bad credentials")]
    assert failed[1]["request_id"] == "login-bad-1" and failed[1]["target_id"] == str(user.id)
    assert "wrong" not in str(failed)


def test_two_factor_changes_are_on_the_trail(client, admin, app):
    user = make_user("operator", username="twofa")
    headers = auth_headers(client, user)
    secret = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD}, headers=headers).get_json()["secret"]
    enabled = client.post("/api/v1/auth/2fa/enable",
                          json={"code": pyotp.TOTP(secret).at(time.time() - 30), "password": PASSWORD},
                          headers=headers)
    assert enabled.status_code == 200, enabled.get_json()
    result = app.test_cli_runner().invoke(args=["users", "reset-2fa", "twofa"])
    assert result.exit_code == 0, result.output
    actions = [(e["action"], e["actor"]) for e in trail(client, admin, target_id=str(user.id))]
    assert ("auth.2fa_setup", "twofa") in actions and ("auth.2fa_enabled", "twofa") in actions
    reset = last(client, admin, "auth.2fa_reset")
    assert reset["actor"].startswith("cli:") and reset["target_id"] == str(user.id)
    assert secret not in str(trail(client, admin))


def test_user_and_role_changes_are_on_the_trail(client, admin):
    created = client.post("/api/v1/users", json={"username": "newbie", "password": "a long password",
                                                 "role": "viewer"}, headers=admin)
    assert created.status_code == 201
    user_id = created.get_json()["id"]
    assert client.patch(f"/api/v1/users/{user_id}", json={"role": "operator"}, headers=admin).status_code == 200
    assert client.patch(f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin).status_code == 200
    events = trail(client, admin, target_type="user", target_id=user_id)
    assert [e["action"] for e in events] == ["user.updated", "user.updated", "user.created"]
    assert events[1]["details"]["changes"] == {"role": ["viewer", "operator"]}
    assert events[0]["details"]["changes"] == {"is_active": [True, False]}
    assert events[2]["details"] == {"username": "newbie", "role": "viewer"}
    assert "a long password" not in str(events)


def test_emergency_pause_and_resume_are_on_the_trail_and_in_the_events_history(client, admin, viewer):
    assert client.post("/api/v1/emergency/pause-all", json={"reason": "drill"}, headers=admin).status_code == 200
    assert client.post("/api/v1/emergency/resume-all", headers=admin).status_code == 200
    pause = last(client, admin, "emergency.pause")
    assert pause["details"] == {"reason": "drill", "triggered_by": "user"} and pause["actor"].startswith("admin")
    assert last(client, admin, "emergency.resume")["actor"] == pause["actor"]
    history = client.get("/api/v1/emergency/events", headers=viewer)
    assert history.status_code == 200
    body = history.get_json()
    assert body["total"] == 2
    assert [(e["action"], e["reason"], e["actor"]) for e in body["items"]] == [
        ("resume", None, pause["actor"]), ("pause", "drill", pause["actor"])]


def test_budget_limit_project_and_agent_changes_are_on_the_trail(client, admin):
    limit = client.post("/api/v1/budget/limits", json=limit_body(), headers=admin).get_json()
    client.patch(f"/api/v1/budget/limits/{limit['id']}", json={"amount_usd": 75}, headers=admin)
    client.delete(f"/api/v1/budget/limits/{limit['id']}", headers=admin)
    assert [e["action"] for e in trail(client, admin, target_id=limit["id"])] == [
        "budget_limit.deleted", "budget_limit.updated", "budget_limit.created"]
    updated = last(client, admin, "budget_limit.updated")["details"]["changes"]
    assert [float(v) for v in updated["amount_usd"]] == [50.0, 75.0]

    project = client.post("/api/v1/projects", json={"name": "Audited", "github_repo": "octo/audited"},
                          headers=admin).get_json()
    client.patch(f"/api/v1/projects/{project['id']}", json={"description": "now described"}, headers=admin)
    agent = client.post(f"/api/v1/projects/{project['id']}/agents", json=agent_body(), headers=admin).get_json()
    client.patch(f"/api/v1/projects/{project['id']}/agents/{agent['id']}", json={"name": "Renamed"}, headers=admin)
    assert client.delete(f"/api/v1/projects/{project['id']}", headers=admin).status_code == 204
    assert [e["action"] for e in trail(client, admin, target_type="project", target_id=project["id"])] == [
        "project.deleted", "project.updated", "project.created"]
    assert [e["action"] for e in trail(client, admin, target_type="agent")] == ["agent.updated", "agent.created"]
    assert last(client, admin, "agent.updated")["details"]["changes"] == {"name": "Renamed"}


def test_filters_dates_pagination_and_roles(client, admin, operator):
    for i in range(3):
        make_user("viewer", username=f"batch{i}")
    page = client.get("/api/v1/audit?action=user.created&limit=2&page=1", headers=admin).get_json()
    assert page["total"] >= 4 and page["pages"] >= 2 and len(page["items"]) == 2
    assert trail(client, admin, action="user.created", since="2999-01-01T00:00:00Z") == []
    assert trail(client, admin, action="user.created", until="2000-01-01T00:00:00") == []
    assert len(trail(client, admin, action="user.created", since="2000-01-01T00:00:00Z")) == page["total"]
    assert [e["actor"] for e in trail(client, admin, actor="system", action="user.created")][:3] == ["system"] * 3
    assert_error(client.get("/api/v1/audit", headers=operator), 403, "FORBIDDEN")
    assert_error(client.get("/api/v1/audit?since=yesterday", headers=admin), 422, "VALIDATION_ERROR")


def test_nothing_can_update_or_delete_an_audit_row(db_session):
    from mcc.services import audit

    event = audit.record("test.append_only", "thing", uuid.uuid4())
    db_session.flush()
    for statement in ("UPDATE audit_events SET actor = 'forger'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with db_session.begin_nested():
                db_session.execute(text(statement))
    assert db_session.get(AuditEvent, event.id).actor == "system"
