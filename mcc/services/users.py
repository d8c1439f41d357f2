"""User administration (the CLI and, later, an admin API call these)."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from mcc.errors import Conflict, NotFound, ValidationFailed
from mcc.extensions import db
from mcc.models.auth import ROLES, User
from mcc.services import audit
from mcc.services.auth import find_user, hash_password, two_factor_changed, void_all_tokens

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
MIN_PASSWORD_LENGTH = 10


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
                               {"password": ["Too short."]})


def create_user(username: str, password: str, role: str) -> User:
    if not USERNAME.match(username):
        raise ValidationFailed("Usernames are 1-64 letters, digits or . _ @ -", {"username": ["Invalid."]})
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}.", {"role": ["Invalid."]})
    _check_password(password)
    if find_user(username):
        raise Conflict(f"User {username!r} already exists.")
    user = User(username=username.lower(), password_hash=hash_password(password), role=role)
    db.session.add(user)
    db.session.flush()
    audit.record("user.created", "user", user.id, {"username": user.username, "role": role})
    return user


def get_user(username: str) -> User:
    user = find_user(username)
    if user is None:
        raise NotFound(f"User {username!r} not found.")
    return user


def list_users() -> list[User]:
    return list(db.session.execute(select(User).order_by(User.username)).scalars())


def set_password(username: str, password: str) -> User:
    _check_password(password)
    user = get_user(username)
    user.password_hash = hash_password(password)
    audit.record("user.password_set", "user", user.id, {"username": user.username})
    void_all_tokens(user)
    return user


def ensure_an_admin_remains(user: User, role: str | None = None, is_active: bool | None = None) -> None:
    """Refuse a change that would leave no active admin: nobody could manage users or resume."""
    demoted = role is not None and role != "admin"
    disabled = is_active is False
    if user.role != "admin" or not user.is_active or not (demoted or disabled):
        return
    others = db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.is_active.is_(True), User.id != user.id))
    if not others:
        raise Conflict("This is the last active admin; make another admin first.")


def disable_user(username: str) -> User:
    user = get_user(username)
    ensure_an_admin_remains(user, is_active=False)
    user.is_active = False
    audit.record("user.disabled", "user", user.id, {"username": user.username})
    void_all_tokens(user)
    return user


def reset_two_factor(username: str) -> User:
    user = get_user(username)
    user.totp_secret = None
    user.totp_pending_secret = None
    user.totp_last_step = None
    audit.record("auth.2fa_reset", "user", user.id, {"username": user.username})
    void_all_tokens(user)
    two_factor_changed(user, "reset")
    return user
