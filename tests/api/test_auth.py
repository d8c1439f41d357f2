"""Login, tokens, 2FA and roles over HTTP."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pyotp
from flask_jwt_extended import create_access_token

from tests.factories import PASSWORD, assert_error, auth_headers, login, make_user


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_login_returns_the_spec_token_body(client):
    """A correct login answers access and refresh tokens that expire in 900 s."""
    user = make_user("viewer")
    body = login(client, user.username)
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["requires_2fa"] is False
    assert body["access_token"] and body["refresh_token"]
    me = client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["username"] == user.username
    assert me.get_json()["role"] == "viewer"


def test_username_is_case_insensitive(client):
    make_user("viewer", username="Alice")
    assert login(client, "ALICE")["access_token"]


def test_wrong_password_and_unknown_user_look_the_same(client):
    """No hint whether the user exists."""
    user = make_user()
    wrong = client.post("/api/v1/auth/login", json={"username": user.username, "password": "nope-nope-nope"})
    unknown = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope-nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["error"]["code"] == unknown.get_json()["error"]["code"] == "UNAUTHORIZED"
    assert wrong.get_json()["error"]["message"] == unknown.get_json()["error"]["message"]


def test_disabled_user_cannot_log_in(client):
    from mcc.extensions import db

    user = make_user()
    user.is_active = False
    db.session.commit()
    response = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD})
    assert response.status_code == 401


def test_repeated_failures_lock_the_username_from_that_address(client):
    """Five failures from one IP lock that username there; another IP still logs in."""
    user = make_user()
    attacker = {"REMOTE_ADDR": "10.9.9.9"}
    for _ in range(5):
        r = client.post("/api/v1/auth/login", json={"username": user.username, "password": "wrong-wrong"},
                        environ_base=attacker)
        assert r.status_code == 401
    locked = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD},
                         environ_base=attacker)
    assert locked.status_code == 429
    assert locked.get_json()["error"]["code"] == "RATE_LIMITED"
    assert int(locked.headers["Retry-After"]) > 0
    # The real user, elsewhere, is not locked out.
    assert login(client, user.username, REMOTE_ADDR="10.1.1.1")["access_token"]


def test_successful_logins_from_many_addresses_are_not_throttled(client):
    user = make_user()
    for i in range(15):
        assert login(client, user.username, REMOTE_ADDR=f"10.2.0.{i}")["access_token"]


def test_login_has_a_tighter_per_ip_limit(client):
    """MCC_LOGIN_RATE_LIMIT (10/min) applies per client IP to the login endpoint."""
    user = make_user()
    codes = [client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD},
                         environ_base={"REMOTE_ADDR": "10.3.3.3"}).status_code for _ in range(11)]
    assert codes[:10] == [200] * 10
    assert codes[10] == 429


def test_expired_access_token_is_refused(app, client):
    user = make_user()
    with app.test_request_context():
        token = create_access_token(identity=str(user.id), expires_delta=timedelta(seconds=-5))
    response = client.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.get_json()["error"]["message"]


def test_garbage_and_malformed_authorization_are_refused(client):
    for header in ("Bearer not-a-jwt", "Basic Zm9vOmJhcg==", "Bearer", "Bearer a.b.c"):
        response = client.get("/api/v1/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_token_signed_with_another_key_is_refused(client):
    import jwt as pyjwt

    forged = pyjwt.encode({"sub": "x", "type": "access", "jti": "j", "fresh": False, "iat": int(time.time()),
                           "exp": int(time.time()) + 600}, "some-other-key", algorithm="HS256")
    assert client.get("/api/v1/auth/me", headers=bearer(forged)).status_code == 401


def test_refresh_token_is_not_an_access_token(client):
    user = make_user()
    tokens = login(client, user.username)
    assert client.get("/api/v1/auth/me", headers=bearer(tokens["refresh_token"])).status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client):
    """Each refresh gives a new refresh token; replaying a used one ends the whole session."""
    user = make_user()
    first = login(client, user.username)
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["expires_in"] == 900
    assert client.get("/api/v1/auth/me", headers=bearer(second["access_token"])).status_code == 200

    rotated_ago(first["refresh_token"], seconds=11)  # past MCC_REFRESH_REUSE_GRACE_SECONDS (10)
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error"]["message"]
    # The thief's reuse also kills the legitimate continuation of that session...
    later = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert later.status_code == 401
    # ...and the access tokens minted from it.
    assert client.get("/api/v1/auth/me", headers=bearer(second["access_token"])).status_code == 401
    # Another session of the same user is untouched.
    other = login(client, user.username)
    assert client.get("/api/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200


def rotated_ago(refresh_token: str, seconds: float) -> None:
    """Make the rotation of ``refresh_token`` look ``seconds`` old (its row's revoked_at)."""
    from flask_jwt_extended import decode_token
    from sqlalchemy import update

    from mcc.extensions import db
    from mcc.models.auth import RefreshToken
    from mcc.models.types import utcnow

    jti = decode_token(refresh_token)["jti"]
    db.session.execute(update(RefreshToken).where(RefreshToken.jti == jti)
                       .values(revoked_at=utcnow() - timedelta(seconds=seconds)))
    db.session.commit()


def refresh(client, refresh_token: str):
    return client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


def test_a_rotated_token_presented_again_within_the_grace_gets_a_new_pair_in_the_same_session(client, caplog):
    """A tab reloaded while its refresh was in flight presents the token the server just rotated:
    within MCC_REFRESH_REUSE_GRACE_SECONDS it gets a fresh pair, and the session lives on."""
    caplog.set_level(logging.INFO, logger="mcc.services.auth")
    user = make_user()
    first = login(client, user.username)
    lost = refresh(client, first["refresh_token"]).get_json()  # the answer the reloaded tab never saw
    rotated_ago(first["refresh_token"], seconds=9)

    again = refresh(client, first["refresh_token"])
    assert again.status_code == 200, again.get_json()
    retry = again.get_json()
    assert retry["refresh_token"] not in (first["refresh_token"], lost["refresh_token"])
    assert "presented again 9." in caplog.text and "within MCC_REFRESH_REUSE_GRACE_SECONDS" in caplog.text
    # The new pair works, and rotates on like any other.
    assert client.get("/api/v1/auth/me", headers=bearer(retry["access_token"])).status_code == 200
    onward = refresh(client, retry["refresh_token"])
    assert onward.status_code == 200
    # Same family: one logout ends every branch of it, the lost answer's too.
    out = client.post("/api/v1/auth/logout", json={"refresh_token": onward.get_json()["refresh_token"]},
                      headers=bearer(onward.get_json()["access_token"]))
    assert out.status_code == 204
    assert refresh(client, lost["refresh_token"]).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(retry["access_token"])).status_code == 401


def test_a_rotated_token_presented_again_after_the_grace_revokes_the_family(client):
    user = make_user()
    first = login(client, user.username)
    second = refresh(client, first["refresh_token"]).get_json()
    rotated_ago(first["refresh_token"], seconds=10.5)

    replay = refresh(client, first["refresh_token"])
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error"]["message"]
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(second["access_token"])).status_code == 401


def test_a_grace_of_zero_makes_every_reuse_revoke(app, client):
    user = make_user()
    first = login(client, user.username)
    second = refresh(client, first["refresh_token"]).get_json()
    saved = app.config["MCC_REFRESH_REUSE_GRACE"]
    app.config["MCC_REFRESH_REUSE_GRACE"] = timedelta(0)
    try:
        assert refresh(client, first["refresh_token"]).status_code == 401
    finally:
        app.config["MCC_REFRESH_REUSE_GRACE"] = saved
    assert refresh(client, second["refresh_token"]).status_code == 401


def test_the_grace_never_reopens_a_session_ended_by_logout(client):
    """Logout within the grace: the token rotated just before it is not honoured."""
    user = make_user()
    first = login(client, user.username)
    second = refresh(client, first["refresh_token"]).get_json()
    out = client.post("/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]},
                      headers=bearer(second["access_token"]))
    assert out.status_code == 204
    assert refresh(client, first["refresh_token"]).status_code == 401
    assert refresh(client, second["refresh_token"]).status_code == 401


def test_the_grace_never_honours_a_token_of_a_disabled_user_or_a_changed_password(client):
    from mcc.extensions import db
    from mcc.services.users import set_password

    disabled, changed = make_user(), make_user()
    tokens = {}
    for user in (disabled, changed):
        first = login(client, user.username)
        assert refresh(client, first["refresh_token"]).status_code == 200
        tokens[user.username] = first["refresh_token"]
    disabled.is_active = False  # only that: the user check alone must refuse
    set_password(changed.username, "a brand new password")
    db.session.commit()
    for user in (disabled, changed):
        assert refresh(client, tokens[user.username]).status_code == 401, user.username


def test_access_token_cannot_be_used_to_refresh(client):
    user = make_user()
    tokens = login(client, user.username)
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 401


def test_logout_revokes_access_and_refresh_tokens(client):
    user = make_user()
    tokens = login(client, user.username)
    out = client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                      headers=bearer(tokens["access_token"]))
    assert out.status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert client.post("/api/v1/auth/refresh",
                       json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_revocation_survives_a_redis_flush(client, redis_client):
    """Revocations are kept in the database and reloaded when Redis has lost them."""
    user = make_user()
    tokens = login(client, user.username)
    client.post("/api/v1/auth/logout", json={}, headers=bearer(tokens["access_token"]))
    redis_client.flushdb()
    assert client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 401


def test_password_change_voids_existing_tokens(client):
    from mcc.extensions import db
    from mcc.services.users import set_password

    user = make_user()
    tokens = login(client, user.username)
    set_password(user.username, "a brand new password")
    db.session.commit()
    assert client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert client.post("/api/v1/auth/refresh",
                       json={"refresh_token": tokens["refresh_token"]}).status_code == 401


# --- 2FA --------------------------------------------------------------------------------------

def enable_2fa(client, headers) -> pyotp.TOTP:
    setup = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD}, headers=headers)
    assert setup.status_code == 200
    body = setup.get_json()
    assert body["provisioning_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(body["secret"])
    # A code from the previous time step: the step the login test uses next must be newer.
    enabled = client.post("/api/v1/auth/2fa/enable", json={"code": totp.at(time.time() - 30), "password": PASSWORD},
                          headers=headers)
    assert enabled.status_code == 200, enabled.get_json()
    assert enabled.get_json()["requires_2fa"] is False
    return totp


def test_two_factor_login_flow(client):
    user = make_user()
    totp = enable_2fa(client, auth_headers(client, user))

    first = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}).get_json()
    assert first["requires_2fa"] is True
    assert first["access_token"] is None and first["refresh_token"] is None
    temp = first["temp_token"]
    # A temp token opens nothing else.
    assert client.get("/api/v1/auth/me", headers=bearer(temp)).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": temp}).status_code == 401

    verified = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": totp.now()})
    assert verified.status_code == 200, verified.get_json()
    body = verified.get_json()
    assert body["requires_2fa"] is False and body["expires_in"] == 900
    assert client.get("/api/v1/auth/me", headers=bearer(body["access_token"])).get_json()["two_factor_enabled"]

    # The temp token is single use, and so is the code.
    again = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": totp.now()})
    assert again.status_code == 401
    second = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}).get_json()
    replay = client.post("/api/v1/auth/2fa/verify", json={"temp_token": second["temp_token"], "code": totp.now()})
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error"]["message"]


def test_enabling_two_factor_ends_the_sessions_opened_with_the_password_alone(client):
    user = make_user()
    other_device = login(client, user.username)
    this_device = login(client, user.username)
    setup = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD},
                        headers=bearer(this_device["access_token"])).get_json()
    code = pyotp.TOTP(setup["secret"]).now()
    enabled = client.post("/api/v1/auth/2fa/enable", json={"code": code, "password": PASSWORD},
                          headers=bearer(this_device["access_token"]))
    assert enabled.status_code == 200, enabled.get_json()
    fresh = enabled.get_json()

    for old in (other_device, this_device):
        assert client.get("/api/v1/auth/me", headers=bearer(old["access_token"])).status_code == 401
        assert client.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}).status_code == 401
    me = client.get("/api/v1/auth/me", headers=bearer(fresh["access_token"]))
    assert me.status_code == 200 and me.get_json()["two_factor_enabled"] is True
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 200


def _stored_secrets(user_id) -> tuple[str | None, str | None]:
    from sqlalchemy import text

    from mcc.extensions import db
    return tuple(db.session.execute(text("SELECT totp_secret, totp_pending_secret FROM users WHERE id = :id"),
                                    {"id": user_id}).one())


def test_totp_secrets_are_stored_sealed_never_in_plain_text(client):
    user = make_user()
    headers = auth_headers(client, user)
    secret = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD},
                         headers=headers).get_json()["secret"]
    _, pending = _stored_secrets(user.id)
    assert pending.startswith("v1:") and secret not in pending
    enabled = client.post("/api/v1/auth/2fa/enable",
                          json={"code": pyotp.TOTP(secret).at(time.time() - 30), "password": PASSWORD},
                          headers=headers)
    assert enabled.status_code == 200
    stored, pending = _stored_secrets(user.id)
    assert stored.startswith("v1:") and secret not in stored and pending is None

    temp = login(client, user.username)["temp_token"]
    verified = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": pyotp.TOTP(secret).now()})
    assert verified.status_code == 200, verified.get_json()


def test_a_plain_text_secret_from_before_sealing_still_works_and_is_sealed_at_its_next_use(client, app):
    from mcc.extensions import db
    from mcc.models.auth import User

    user = make_user()
    secret = pyotp.random_base32()
    db.session.get(User, user.id).totp_secret = secret
    db.session.commit()
    temp = login(client, user.username)["temp_token"]
    verified = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": pyotp.TOTP(secret).now()})
    assert verified.status_code == 200, verified.get_json()
    stored, _ = _stored_secrets(user.id)
    assert stored.startswith("v1:") and secret not in stored


def test_a_secret_sealed_under_another_key_is_refused_with_a_way_out(client, app):
    user = make_user()
    headers = auth_headers(client, user)
    totp = enable_2fa(client, headers)
    saved = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "another-key-" + "x" * 40
    try:
        temp = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD})
        response = client.post("/api/v1/auth/2fa/verify",
                               json={"temp_token": temp.get_json()["temp_token"], "code": totp.now()})
    finally:
        app.config["SECRET_KEY"] = saved
    assert response.status_code == 401
    assert "reset-2fa" in response.get_json()["error"]["message"]


def test_two_factor_enable_refuses_a_wrong_code(client):
    user = make_user()
    headers = auth_headers(client, user)
    client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD}, headers=headers)
    response = client.post("/api/v1/auth/2fa/enable", json={"code": "000000", "password": PASSWORD}, headers=headers)
    assert response.status_code == 422
    assert "code" in response.get_json()["error"]["details"]
    # Still not enabled: the password alone logs in.
    assert login(client, user.username)["requires_2fa"] is False


def test_two_factor_brute_force_is_bounded(client):
    user = make_user()
    totp = enable_2fa(client, auth_headers(client, user))
    temp = client.post("/api/v1/auth/login",
                       json={"username": user.username, "password": PASSWORD}).get_json()["temp_token"]
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    codes = [client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": wrong},
                         environ_base={"REMOTE_ADDR": f"10.4.0.{i}"}).status_code for i in range(5)]
    assert codes == [401] * 5
    # Even the right code is refused now, from any address.
    locked = client.post("/api/v1/auth/2fa/verify", json={"temp_token": temp, "code": totp.now()},
                         environ_base={"REMOTE_ADDR": "10.4.1.1"})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0


# --- roles ------------------------------------------------------------------------------------

def test_only_admins_manage_users(client):
    admin, operator, viewer = make_user("admin"), make_user("operator"), make_user("viewer")
    for user in (operator, viewer):
        response = client.get("/api/v1/users", headers=auth_headers(client, user))
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "FORBIDDEN"
    listing = client.get("/api/v1/users", headers=auth_headers(client, admin))
    assert listing.status_code == 200
    assert listing.get_json()["total"] == 3
    created = client.post("/api/v1/users", headers=auth_headers(client, admin),
                          json={"username": "newbie", "password": "long enough pw", "role": "viewer"})
    assert created.status_code == 201
    assert created.get_json()["role"] == "viewer"


def test_role_change_takes_effect_at_once(client):
    admin, target = make_user("admin"), make_user("admin")
    target_headers = auth_headers(client, target)
    demoted = client.patch(f"/api/v1/users/{target.id}", json={"role": "viewer"},
                           headers=auth_headers(client, admin))
    assert demoted.status_code == 200
    # The old admin token is void; a new login carries the new role.
    assert client.get("/api/v1/users", headers=target_headers).status_code == 401
    assert client.get("/api/v1/users", headers=auth_headers(client, target)).status_code == 403


# --- a stolen access token cannot change 2FA -----------------------------------------------------

def test_two_factor_setup_and_enable_need_the_current_password(client):
    """The reproduction: with only an access token, setup + enable locked the owner out for the
    refresh lifetime. Without the password (or with a wrong one) nothing changes."""
    user = make_user()
    headers = auth_headers(client, user)
    assert "password" in assert_error(client.post("/api/v1/auth/2fa/setup", headers=headers), 422,
                                      "VALIDATION_ERROR")["details"]
    assert_error(client.post("/api/v1/auth/2fa/setup", json={"password": "not-the-password"}, headers=headers),
                 403, "FORBIDDEN")
    assert _stored_secrets(user.id) == (None, None)
    secret = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD}, headers=headers).get_json()["secret"]
    code = pyotp.TOTP(secret).now()
    response = client.post("/api/v1/auth/2fa/enable", json={"code": code}, headers=headers)
    assert "password" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    response = client.post("/api/v1/auth/2fa/enable", json={"code": code, "password": "wrong-password"},
                           headers=headers)
    assert_error(response, 403, "FORBIDDEN")
    me = client.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200 and me.get_json()["two_factor_enabled"] is False  # the session still works


def test_guessing_the_password_through_2fa_setup_is_locked_out_like_login(client, app):
    user = make_user()
    headers = auth_headers(client, user)
    attempts = int(app.config["MCC_LOGIN_LOCKOUT"].split()[0])
    for _ in range(attempts):
        assert client.post("/api/v1/auth/2fa/setup", json={"password": "guess"}, headers=headers).status_code == 403
    locked = client.post("/api/v1/auth/2fa/setup", json={"password": PASSWORD}, headers=headers)
    assert_error(locked, 429, "RATE_LIMITED")


def test_enabling_and_resetting_two_factor_notify(client):
    from sqlalchemy import select

    from mcc.extensions import db
    from mcc.models.control import Notification
    from mcc.services.users import reset_two_factor

    user = make_user()
    enable_2fa(client, auth_headers(client, user))
    reset_two_factor(user.username)
    notes = db.session.scalars(select(Notification).where(Notification.kind == "two_factor_changed")).all()
    assert all(n.data["user_id"] == str(user.id) for n in notes)
    titles = [n.title for n in notes]
    assert f"Two-factor authentication enabled for {user.username}" in titles
    assert f"Two-factor authentication reset for {user.username}" in titles


def test_a_logout_racing_a_refresh_ends_the_refreshed_session_too(test_env, committed_db, app, tmp_path):
    """A refresh is inside its transaction (its new refresh token inserted, held there by a slow
    trigger) when the same session logs out: the refreshed pair must not outlive the logout.
    Before refresh and logout took turns on the user's row, the logout revoked only the rows it
    could see, and the new refresh token went on working."""
    import threading

    import requests
    from sqlalchemy import text

    from tests.live import start_web

    with app.app_context():
        username = make_user("operator").username
    web, base = start_web(test_env, tmp_path / "web.log")
    try:
        first = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD},
                              timeout=10).json()
        with app.app_context():
            committed_db.session.execute(text(
                "CREATE FUNCTION slow_refresh() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(1.5); "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            committed_db.session.execute(text(
                "CREATE TRIGGER slow_refresh BEFORE INSERT ON refresh_tokens FOR EACH ROW EXECUTE FUNCTION slow_refresh()"))
            committed_db.session.commit()
        try:
            refreshed = {}
            refreshing = threading.Thread(target=lambda: refreshed.update(response=requests.post(
                f"{base}/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}, timeout=30)))
            refreshing.start()
            # Log out once the refresh is in its trigger's sleep (seen from another connection; a
            # new one each time, as pg_stat_activity is a snapshot per transaction).
            sleeping, deadline = 0, time.monotonic() + 10
            while sleeping != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
                with app.app_context(), committed_db.engine.connect() as connection:
                    sleeping = connection.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                        "AND datname = current_database()")).scalar()
            assert sleeping == 1, "the refresh never reached its trigger's sleep"
            logout = requests.post(f"{base}/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]},
                                   headers=bearer(first["access_token"]), timeout=30)
            refreshing.join(30)
        finally:
            with app.app_context():
                committed_db.session.execute(text("DROP TRIGGER IF EXISTS slow_refresh ON refresh_tokens"))
                committed_db.session.execute(text("DROP FUNCTION IF EXISTS slow_refresh()"))
                committed_db.session.commit()
        assert logout.status_code == 204
        assert refreshed["response"].status_code == 200  # it began before the logout: it was answered
        again = requests.post(f"{base}/api/v1/auth/refresh",
                              json={"refresh_token": refreshed["response"].json()["refresh_token"]}, timeout=10)
        assert again.status_code == 401, again.text
    finally:
        web.stop()
