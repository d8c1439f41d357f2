"""Step-up 2FA: resume-all, raising or deleting a budget limit and approving a merge need a fresh
TOTP code in X-MCC-TOTP from users with 2FA on; MCC_REQUIRE_2FA_FOR makes 2FA mandatory for them."""
from __future__ import annotations

import time
import uuid

import pyotp
import pytest

from mcc.extensions import db
from mcc.models.auth import User
from mcc.secretbox import seal
from tests.factories import assert_error, auth_headers, login, make_project, make_user


def with_2fa(client, role: str) -> tuple[dict, pyotp.TOTP, str]:
    """A user with 2FA on, logged in with a code: (headers, their TOTP, the code the login used)."""
    user = make_user(role)
    secret = pyotp.random_base32()
    db.session.get(User, user.id).totp_secret = seal(secret)
    db.session.commit()
    totp = pyotp.TOTP(secret)
    temp = login(client, user.username)["temp_token"]
    code = totp.now()
    verified = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": code})
    assert verified.status_code == 200, verified.get_json()
    return {"Authorization": f"Bearer {verified.get_json()['access_token']}"}, totp, code


def fresh(totp: pyotp.TOTP) -> str:
    """The next step's code: newer than the login's, and accepted (one step of clock drift)."""
    return totp.at(time.time() + totp.interval)


def reason(response) -> str:
    body = response.get_json()
    assert response.status_code == 403 and body["error"]["code"] == "TWO_FACTOR_REQUIRED", body
    return body["error"]["details"]["reason"]


def pause(client):
    operator = auth_headers(client, make_user("operator"))
    assert client.post("/api/v1/emergency/pause-all", json={}, headers=operator).status_code == 200


def test_resume_all_without_a_code_with_a_replayed_one_and_with_a_fresh_one(client, db_session):
    admin, totp, login_code = with_2fa(client, "admin")
    pause(client)
    missing = client.post("/api/v1/emergency/resume-all", headers=admin)
    assert reason(missing) == "code_missing" and "X-MCC-TOTP" in missing.get_json()["error"]["message"]
    replayed = client.post("/api/v1/emergency/resume-all", headers={**admin, "X-MCC-TOTP": login_code})
    assert reason(replayed) == "code_invalid_or_used"
    wrong = client.post("/api/v1/emergency/resume-all", headers={**admin, "X-MCC-TOTP": "12345x"})
    assert reason(wrong) == "code_invalid_or_used"
    code = fresh(totp)
    resumed = client.post("/api/v1/emergency/resume-all", headers={**admin, "X-MCC-TOTP": code})
    assert resumed.status_code == 200, resumed.get_json()
    pause(client)
    again = client.post("/api/v1/emergency/resume-all", headers={**admin, "X-MCC-TOTP": code})
    assert reason(again) == "code_invalid_or_used"  # a code counts once


def test_without_2fa_the_acts_pass_unless_the_admin_setting_requires_it(client, app, db_session, monkeypatch):
    admin = auth_headers(client, make_user("admin"))
    pause(client)
    assert client.post("/api/v1/emergency/resume-all", headers=admin).status_code == 200
    monkeypatch.setitem(app.config, "MCC_REQUIRE_2FA_FOR", frozenset({"resume", "limits", "merge"}))
    pause(client)
    refused = client.post("/api/v1/emergency/resume-all", headers=admin)
    assert reason(refused) == "two_factor_not_enabled"
    assert "/auth/2fa/setup" in refused.get_json()["error"]["message"]
    created = client.post("/api/v1/budget/limits", headers=admin, json={
        "name": "cap", "scope_type": "global", "amount_usd": 5, "period": "daily"}).get_json()
    assert reason(client.delete(f"/api/v1/budget/limits/{created['id']}", headers=admin)) == "two_factor_not_enabled"


def test_raising_or_deleting_a_limit_steps_up_lowering_does_not(client, db_session):
    admin, totp, _ = with_2fa(client, "admin")
    created = client.post("/api/v1/budget/limits", headers=admin, json={
        "name": "cap", "scope_type": "global", "amount_usd": 5, "period": "daily"})
    assert created.status_code == 201  # creating a limit tightens: no code
    url = f"/api/v1/budget/limits/{created.get_json()['id']}"
    assert client.patch(url, json={"amount_usd": 2}, headers=admin).status_code == 200
    assert reason(client.patch(url, json={"amount_usd": 50}, headers=admin)) == "code_missing"
    raised = client.patch(url, json={"amount_usd": 50}, headers={**admin, "X-MCC-TOTP": fresh(totp)})
    assert raised.status_code == 200 and raised.get_json()["amount_usd"] == 50
    assert reason(client.delete(url, headers=admin)) == "code_missing"
    assert client.get(url, headers=admin).status_code == 200


def test_approving_a_merge_steps_up_before_anything_is_read(client, db_session):
    operator, _, _ = with_2fa(client, "operator")
    project = make_project()
    response = client.post(f"/api/v1/projects/{project.id}/pull-requests/{uuid.uuid4()}/approve", headers=operator)
    assert reason(response) == "code_missing"  # not 404: the code is asked for first


def test_the_openapi_document_describes_the_step_up(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, method in (("/emergency/resume-all", "post"), ("/budget/limits/{limit_id}", "delete"),
                         ("/budget/limits/{limit_id}", "patch"),
                         ("/projects/{project_id}/pull-requests/{pull_request_id}/approve", "post")):
        operation = next(op for p, item in spec["paths"].items() if p.endswith(path) for m, op in item.items()
                         if m == method)
        assert "X-MCC-TOTP" in [p["name"] for p in operation.get("parameters", [])], path
        assert "TWO_FACTOR_REQUIRED" in operation["responses"]["403"]["description"], path


@pytest.mark.parametrize("value", ["resume,everything", "merge,deploy"])
def test_an_unknown_act_in_the_setting_refuses_to_start(value, tmp_path):
    from mcc.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="MCC_REQUIRE_2FA_FOR"):
        load_config({"MCC_INSTANCE_PATH": str(tmp_path), "MCC_REQUIRE_2FA_FOR": value})
