"""Authentication: passwords, login lockout, TOTP 2FA, token issue, rotation and revocation.

Callers (routes, CLI) own the transaction: these functions flush, the caller commits.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from jwt.exceptions import PyJWTError
from limits import parse
from sqlalchemy import select, update

from mcc.errors import Conflict, Forbidden, TooManyAttempts, TwoFactorRequired, Unauthorized, ValidationFailed
from mcc.extensions import db, limiter
from mcc.models.auth import RefreshToken, User
from mcc.models.types import as_utc, utcnow
from mcc.secretbox import SealBroken, is_sealed, seal, unseal
from mcc.services import audit, tokens
from mcc.services.notifications import notify

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both paths cost one argon2 verification.
_DUMMY_HASH = _hasher.hash("mcc-timing-equaliser")

TOTP_PURPOSE = "2fa"
BAD_CREDENTIALS = "Invalid username or password."


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _password_matches(user: User | None, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


def find_user(username: str) -> User | None:
    return db.session.execute(select(User).where(User.username == username.lower())).scalar_one_or_none()


# --- lockout: failure counters in the limiter's storage (Redis, or memory when embedded) -------

def _ensure_not_locked(checks: list[tuple[str, tuple[str, ...]]], what: str) -> None:
    for config_key, identifiers in checks:
        item = parse(current_app.config[config_key])
        if not limiter.limiter.test(item, *identifiers):
            reset_at = limiter.limiter.get_window_stats(item, *identifiers).reset_time
            retry_after = max(1, int(reset_at - time.time()) + 1)
            log.warning("%s locked out (%s)", what, config_key)
            raise TooManyAttempts(f"Too many failed {what} attempts; try again later.", retry_after)


def _record_failure(checks: list[tuple[str, tuple[str, ...]]]) -> None:
    for config_key, identifiers in checks:
        limiter.limiter.hit(parse(current_app.config[config_key]), *identifiers)


def _login_checks(username: str, client_ip: str):
    return [
        ("MCC_LOGIN_LOCKOUT", ("login-fail", username.lower(), client_ip)),
        ("MCC_LOGIN_IP_LOCKOUT", ("login-fail-ip", client_ip)),
    ]


# --- tokens -----------------------------------------------------------------------------------

def _expiry(delta: timedelta) -> datetime:
    return utcnow() + delta


def issue_tokens(user: User, family_id: uuid.UUID | None = None) -> dict:
    """A new access token and a new refresh token in ``family_id`` (a new family when None)."""
    family_id = family_id or uuid.uuid4()
    claims = {"role": user.role, "fam": str(family_id), "gen": user.token_generation}
    access = create_access_token(identity=str(user.id), additional_claims=claims)
    refresh_jti = str(uuid.uuid4())
    refresh_expires = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    refresh = create_refresh_token(
        identity=str(user.id), additional_claims={"fam": str(family_id), "jti": refresh_jti, "gen": user.token_generation})
    db.session.add(RefreshToken(jti=refresh_jti, user_id=user.id, family_id=family_id,
                                expires_at=_expiry(refresh_expires)))
    db.session.flush()
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
        "requires_2fa": False,
    }


def token_is_current(user: User, claims: dict) -> bool:
    return claims.get("gen") == user.token_generation


def revoke_family(family_id: uuid.UUID) -> None:
    """Revoke every refresh token of a family, and every access token minted from it."""
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    tokens.revoke(f"family:{family_id}", _expiry(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]))


def void_all_tokens(user: User) -> None:
    """Password change, disable, 2FA enable or reset: every token issued so far stops working."""
    # In SQL, not in Python: two voids racing (password change, 2FA enable) must both count.
    user.token_generation = User.token_generation + 1
    db.session.flush()
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _decode(token: str, expected_type: str) -> dict:
    try:
        claims = decode_token(token)
    except PyJWTError as exc:
        raise Unauthorized(f"The {expected_type} token is invalid or expired.") from exc
    if claims.get("type") != expected_type and claims.get("purpose") != expected_type:
        raise Unauthorized(f"This is not a {expected_type} token.")
    return claims


def _active_user(user_id: str) -> User:
    try:
        user = db.session.get(User, uuid.UUID(user_id))
    except ValueError:
        user = None
    if user is None or not user.is_active:
        raise Unauthorized("The account is disabled or does not exist.")
    return user


# --- flows ------------------------------------------------------------------------------------

def _audit_failed_login(username: str, user: User | None, why: str) -> None:
    """A refused login is on the trail whatever the request does next (its own transaction)."""
    audit.record("auth.login_failed", "user", user.id if user else None, {"username": username[:64], "reason": why},
                 actor=username[:64] or "-")
    db.session.commit()


def login(username: str, password: str, client_ip: str) -> dict:
    checks = _login_checks(username, client_ip)
    try:
        _ensure_not_locked(checks, "login")
    except TooManyAttempts:
        _audit_failed_login(username, None, "locked out")
        raise
    user = find_user(username)
    if not _password_matches(user, password) or not user.is_active:
        _record_failure(checks)
        log.info("failed login for %r from %s", username[:64], client_ip)
        _audit_failed_login(username, user, "bad credentials" if user is None or user.is_active else "disabled")
        raise Unauthorized(BAD_CREDENTIALS)
    if user.two_factor_enabled:
        temp = create_access_token(
            identity=str(user.id),
            additional_claims={"purpose": TOTP_PURPOSE, "gen": user.token_generation},
            expires_delta=current_app.config["MCC_2FA_TOKEN_EXPIRES"],
        )
        return {
            "access_token": None,
            "refresh_token": None,
            "token_type": "bearer",
            "expires_in": int(current_app.config["MCC_2FA_TOKEN_EXPIRES"].total_seconds()),
            "requires_2fa": True,
            "temp_token": temp,
        }
    user.last_login_at = utcnow()
    log.info("login of %s (%s)", user.username, user.role)
    audit.record("auth.login", "user", user.id, {"two_factor": False}, actor=user.username, actor_id=user.id)
    return issue_tokens(user)


def _readable_secret(user: User, stored: str) -> str:
    try:
        return unseal(stored)
    except SealBroken:
        log.error("the 2FA secret of %s cannot be unsealed: MCC_SECRET_KEY changed since it was set", user.username)
        raise Unauthorized("Two-factor authentication cannot be checked for this account; an administrator "
                           "must reset it (flask users reset-2fa).")


def _accept_totp_code(user: User, secret: str, code: str) -> bool:
    """True when ``code`` is valid now (±1 step) and its step is newer than any used before.

    The step is claimed with one conditional UPDATE, so two requests racing with the same code
    cannot both win.
    """
    totp = pyotp.TOTP(secret)
    now = time.time()
    for drift in (0, -1, 1):
        at = now + drift * totp.interval
        if hmac.compare_digest(totp.at(at), code):
            step = int(at // totp.interval)
            claimed = db.session.execute(
                update(User)
                .where(User.id == user.id)
                .where((User.totp_last_step.is_(None)) | (User.totp_last_step < step))
                .values(totp_last_step=step)
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed:
                user.totp_last_step = step
            return bool(claimed)
    return False


def verify_two_factor(temp_token: str, code: str, client_ip: str) -> dict:
    claims = _decode(temp_token, TOTP_PURPOSE)
    if claims.get("purpose") != TOTP_PURPOSE:
        raise Unauthorized("This is not a 2FA temp token.")
    if tokens.is_revoked(f"jti:{claims['jti']}"):
        raise Unauthorized("This 2FA temp token was already used.")
    user = _active_user(claims["sub"])
    if not token_is_current(user, claims) or not user.two_factor_enabled:
        raise Unauthorized("This 2FA temp token is no longer valid.")
    checks = [("MCC_2FA_LOCKOUT", ("2fa-fail", str(user.id)))]
    _ensure_not_locked(checks, "2FA")
    if not _accept_totp_code(user, _readable_secret(user, user.totp_secret), code):
        _record_failure(checks)
        log.info("wrong or reused 2FA code for %s from %s", user.username, client_ip)
        _audit_failed_login(user.username, user, "wrong 2FA code")
        raise Unauthorized("Invalid or already used 2FA code.")
    if not is_sealed(user.totp_secret):  # stored before secrets were sealed
        user.totp_secret = seal(user.totp_secret)
    tokens.revoke(f"jti:{claims['jti']}", datetime.fromtimestamp(claims["exp"], timezone.utc))
    user.last_login_at = utcnow()
    log.info("login of %s (%s) with 2FA", user.username, user.role)
    audit.record("auth.login", "user", user.id, {"two_factor": True}, actor=user.username, actor_id=user.id)
    return issue_tokens(user)


def _within_reuse_grace(row: RefreshToken) -> bool:
    """True when ``row`` was rotated (not revoked) less than MCC_REFRESH_REUSE_GRACE ago and its
    session is still open: a tab reloaded, or an answer lost, while its refresh was in flight.

    A rotated row has ``replaced_by`` set and ``revoked_at`` = the rotation's time; logout, reuse
    and password changes leave ``replaced_by`` empty on the token they revoke, and revoke every
    token of the family, so a family without a live token is over and is never reopened here.
    Disabled users and voided tokens are refused before this is asked (``_active_user``, "gen").
    """
    grace = current_app.config["MCC_REFRESH_REUSE_GRACE"]
    if not grace or row.replaced_by is None or row.revoked_at is None or utcnow() - as_utc(row.revoked_at) > grace:
        return False
    return db.session.execute(
        select(RefreshToken.jti)
        .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None),
               RefreshToken.expires_at > utcnow())
        .limit(1)
    ).first() is not None


def _lock_sessions_of(user_id: str) -> None:
    """Refresh and logout of one user take turns on the user's row.

    Without it a logout racing a refresh revokes the family's rows it can see, while the refresh's
    new row, not yet committed, stays live: a session outliving its logout. Under the lock the
    logout's UPDATE runs after the refresh has committed (and sees its row), or the refresh finds
    its family closed. The user row comes first, as in ``void_all_tokens``.
    """
    try:
        user_uuid = uuid.UUID(user_id)
    except ValueError:
        raise Unauthorized("The account is disabled or does not exist.") from None
    # FOR NO KEY UPDATE: rows that merely reference the user (its messages, its new tokens) are not held up.
    db.session.execute(select(User.id).where(User.id == user_uuid).with_for_update(key_share=True))


def refresh(refresh_token: str) -> dict:
    """New tokens for a refresh token, which is rotated (revoked, linked to its successor).

    Presenting a rotated token again revokes its whole family (a stolen token was replayed),
    except within MCC_REFRESH_REUSE_GRACE of the rotation while the family is still open: then it
    gets a new pair in the same family, so a tab reloaded mid-refresh keeps its session.
    """
    claims = _decode(refresh_token, "refresh")
    _lock_sessions_of(claims["sub"])
    user = _active_user(claims["sub"])
    row = db.session.get(RefreshToken, claims["jti"])
    if row is None or not token_is_current(user, claims):
        raise Unauthorized("The refresh token is not valid.")
    new_tokens_family = row.family_id
    # Conditional update: exactly one caller can rotate a given refresh token.
    rotated = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == row.jti, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not rotated:
        # A rotation racing with this one has committed by now (the UPDATE waited for its lock).
        db.session.refresh(row)
        if _within_reuse_grace(row):
            log.info("refresh token of %s presented again %.1f s after its rotation (within "
                     "MCC_REFRESH_REUSE_GRACE_SECONDS): new tokens in family %s", user.username,
                     (utcnow() - as_utc(row.revoked_at)).total_seconds(), row.family_id)
            return issue_tokens(user, row.family_id)
        # A revoked refresh token came back: it was stolen or replayed. End the whole session.
        revoke_family(row.family_id)
        db.session.commit()
        log.warning("refresh token reuse for %s; family %s revoked", user.username, row.family_id)
        raise Unauthorized("This refresh token was already used; the session has been revoked. Log in again.")
    issued = issue_tokens(user, new_tokens_family)
    row.replaced_by = decode_token(issued["refresh_token"])["jti"]
    return issued


def logout(access_claims: dict, refresh_token: str | None) -> None:
    # Check everything first: a refused logout must not leave a half-applied revocation behind.
    claims = _decode(refresh_token, "refresh") if refresh_token else None
    if claims is not None and claims["sub"] != access_claims["sub"]:
        raise Unauthorized("The refresh token belongs to another user.")
    _lock_sessions_of(access_claims["sub"])  # first: tokens.revoke writes rows a refresh's reuse path writes too
    tokens.revoke(f"jti:{access_claims['jti']}", datetime.fromtimestamp(access_claims["exp"], timezone.utc))
    if claims is not None:
        revoke_family(uuid.UUID(claims["fam"]))


def confirm_password(user: User, password: str, client_ip: str) -> None:
    """Re-authentication for account changes: the current password, or 403. Failures count like
    failed logins (MCC_LOGIN_LOCKOUT, MCC_LOGIN_IP_LOCKOUT), so a stolen token cannot guess it."""
    checks = _login_checks(user.username, client_ip)
    _ensure_not_locked(checks, "password")
    if not _password_matches(user, password):
        _record_failure(checks)
        log.info("wrong password confirming an account change for %r from %s", user.username, client_ip)
        raise Forbidden("The password is not correct.")


def two_factor_changed(user: User, what: str) -> None:
    notify("warning", "two_factor_changed", f"Two-factor authentication {what} for {user.username}",
           f"Two-factor authentication was {what} for {user.username}. If this was not you, ask an "
           "administrator to reset it (flask --app wsgi users reset-2fa) and change your password.",
           {"user_id": str(user.id), "username": user.username})


def begin_two_factor_setup(user: User, password: str, client_ip: str) -> dict:
    confirm_password(user, password, client_ip)
    if user.two_factor_enabled:
        raise Conflict("Two-factor authentication is already enabled; reset it first.")
    secret = pyotp.random_base32()
    user.totp_pending_secret = seal(secret)
    audit.record("auth.2fa_setup", "user", user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="MCC")
    return {"secret": secret, "provisioning_uri": uri}


def enable_two_factor(user: User, code: str, password: str, client_ip: str) -> dict:
    """Confirm the pending secret. Sessions opened with the password alone end; the caller gets new tokens."""
    confirm_password(user, password, client_ip)
    if user.two_factor_enabled:
        raise Conflict("Two-factor authentication is already enabled.")
    if not user.totp_pending_secret:
        raise Conflict("Call /auth/2fa/setup first.")
    checks = [("MCC_2FA_LOCKOUT", ("2fa-fail", str(user.id)))]
    _ensure_not_locked(checks, "2FA")
    try:
        pending = unseal(user.totp_pending_secret)
    except SealBroken:  # set up under another MCC_SECRET_KEY: a new setup fixes it
        raise Conflict("This 2FA setup can no longer be read; call /auth/2fa/setup again.")
    if not _accept_totp_code(user, pending, code):
        _record_failure(checks)
        raise ValidationFailed("The code does not match the secret.", {"code": ["Invalid code."]})
    user.totp_secret, user.totp_pending_secret = seal(pending), None
    audit.record("auth.2fa_enabled", "user", user.id)
    void_all_tokens(user)
    two_factor_changed(user, "enabled")
    return issue_tokens(user)


# --- step-up: a fresh code for dangerous acts -----------------------------------------------------

STEP_UP_HEADER = "X-MCC-TOTP"
STEP_UP_ACTS = {"resume": "Resuming all agents", "limits": "Raising or deleting a budget limit",
                "merge": "Approving a merge"}


def step_up(user: User, act: str, code: str | None) -> None:
    """Resume-all, raising or deleting a budget limit and approving a merge need a fresh TOTP code
    (``X-MCC-TOTP``) from a user with 2FA on: one never used before, the login's included (the
    code's step must be newer than the last one accepted). ``MCC_REQUIRE_2FA_FOR`` makes 2FA itself
    mandatory for the acts it lists. Wrong codes count towards MCC_2FA_LOCKOUT. Raises
    TwoFactorRequired (403) with ``details.reason``: two_factor_not_enabled, code_missing or
    code_invalid_or_used. The caller commits (the code's step is claimed with the act)."""
    what = STEP_UP_ACTS[act]
    details = {"act": act, "header": STEP_UP_HEADER}
    if not user.two_factor_enabled:
        if act in current_app.config["MCC_REQUIRE_2FA_FOR"]:
            raise TwoFactorRequired(
                f"{what} requires two-factor authentication (MCC_REQUIRE_2FA_FOR), which is off for your account: "
                f"turn it on (POST /auth/2fa/setup, then /auth/2fa/enable) and send a fresh code in {STEP_UP_HEADER}.",
                {**details, "reason": "two_factor_not_enabled"})
        return
    if not code:
        raise TwoFactorRequired(f"{what} needs a fresh code from your authenticator app in the {STEP_UP_HEADER} "
                                "header.", {**details, "reason": "code_missing"})
    checks = [("MCC_2FA_LOCKOUT", ("2fa-fail", str(user.id)))]
    _ensure_not_locked(checks, "2FA")
    if not (len(code) <= 10 and code.isdigit()) or not _accept_totp_code(
            user, _readable_secret(user, user.totp_secret), code):
        _record_failure(checks)
        log.info("step-up for %s refused: wrong or reused code (%s)", user.username, act)
        raise TwoFactorRequired(f"The code in {STEP_UP_HEADER} is wrong or was already used (each code counts once, "
                                "the login's too); send the next one.", {**details, "reason": "code_invalid_or_used"})
    log.info("step-up of %s accepted for %s", user.username, act)
