"""`flask users ...` operator commands."""
from __future__ import annotations

import pyotp

from mcc.models.auth import User
from mcc.services.auth import find_user
from tests.factories import login


def invoke(app, *args, input=None):
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    return result


def test_create_list_disable(app, client):
    created = invoke(app, "users", "create", "carol", "--role", "operator", "--password", "a long password")
    assert created.exit_code == 0, created.output
    assert "carol (operator)" in created.output
    assert login(client, "carol", "a long password")["access_token"]

    listed = invoke(app, "users", "list")
    assert "carol\toperator\tactive\tno-2fa" in listed.output

    duplicate = invoke(app, "users", "create", "Carol", "--role", "viewer", "--password", "a long password")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output

    assert invoke(app, "users", "disable", "carol").exit_code == 0
    refused = client.post("/api/v1/auth/login", json={"username": "carol", "password": "a long password"})
    assert refused.status_code == 401


def test_password_prompted_when_not_given(app, client):
    result = invoke(app, "users", "create", "dave", "--role", "viewer", input="prompted password\nprompted password\n")
    assert result.exit_code == 0, result.output
    assert login(client, "dave", "prompted password")["access_token"]


def test_bad_role_and_short_password_are_refused(app, client):
    assert invoke(app, "users", "create", "erin", "--role", "god", "--password", "a long password").exit_code != 0
    short = invoke(app, "users", "create", "erin", "--role", "viewer", "--password", "short")
    assert short.exit_code != 0 and "at least" in short.output
    assert find_user("erin") is None


def test_usernames_outside_the_allowed_characters_are_refused(app):
    for bad in ("erin\n", "er in", "erin/../x", "a" * 65, ""):
        result = invoke(app, "users", "create", bad, "--role", "viewer", "--password", "a long password")
        assert result.exit_code != 0 and "Usernames are" in result.output, (bad, result.output)
    with app.app_context():
        assert [u.username for u in User.query.all()] == []


def test_set_password_and_reset_2fa(app, client, db_session):
    invoke(app, "users", "create", "frank", "--role", "viewer", "--password", "first password")
    user = find_user("frank")
    user.totp_secret = pyotp.random_base32()
    db_session.commit()
    assert client.post("/api/v1/auth/login", json={"username": "frank", "password": "first password"}
                       ).get_json()["requires_2fa"] is True

    assert invoke(app, "users", "reset-2fa", "frank").exit_code == 0
    assert invoke(app, "users", "set-password", "frank", "--password", "second password").exit_code == 0
    assert client.post("/api/v1/auth/login", json={"username": "frank", "password": "first password"}
                       ).status_code == 401
    assert login(client, "frank", "second password")["requires_2fa"] is False
    assert invoke(app, "users", "reset-2fa", "nobody").exit_code != 0


def test_quickstart_admin_creates_one_admin_only(app, client, db_session):
    first = invoke(app, "quickstart-admin")
    assert first.exit_code == 0
    password = first.output.split("password: ")[1].split()[0]
    assert login(client, "admin", password)["access_token"]
    second = invoke(app, "quickstart-admin")
    assert "already exists" in second.output
    assert db_session.query(User).filter_by(role="admin").count() == 1
