"""The access-token blocklist: Redis when configured (shared, fast), always backed by the database.

Every revocation is written to the ``revoked_tokens`` table first, so it survives a Redis restart
or flush: when Redis has lost its copy (the ``loaded`` marker is gone) it is reloaded from the
database before the next check. In embedded mode the table alone serves.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from mcc.extensions import db
from mcc.models.auth import RefreshToken, RevokedToken
from mcc.models.types import as_utc, utcnow
from mcc.redis_store import get_redis

PREFIX = "mcc:revoked:"
LOADED_MARKER = "mcc:revoked:__loaded__"


def _delete_expired_revocations(now: datetime) -> int:
    return db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now)).rowcount


def purge_expired() -> dict:
    """Delete revocations and refresh tokens past their expiry: they can no longer be presented.
    Caller commits."""
    now = utcnow()
    revoked = _delete_expired_revocations(now)
    refresh = db.session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now)).rowcount
    return {"revoked_tokens": revoked, "refresh_tokens": refresh}


def revoke(key: str, expires_at: datetime) -> None:
    """Block ``key`` ("jti:<id>" or "family:<id>") until ``expires_at``. Caller commits."""
    expires_at = as_utc(expires_at)
    now = utcnow()
    if expires_at <= now:
        return
    _delete_expired_revocations(now)
    db.session.merge(RevokedToken(key=key, expires_at=expires_at))
    db.session.flush()
    redis = get_redis()
    if redis is not None:
        redis.set(PREFIX + key, 1, exat=int(expires_at.timestamp()) + 1)


def _reload_into_redis(redis) -> None:
    now = utcnow()
    rows = db.session.execute(
        select(RevokedToken.key, RevokedToken.expires_at).where(RevokedToken.expires_at > now)
    ).all()
    pipe = redis.pipeline()
    for key, expires_at in rows:
        pipe.set(PREFIX + key, 1, exat=int(as_utc(expires_at).timestamp()) + 1)
    pipe.set(LOADED_MARKER, 1)
    pipe.execute()


def is_revoked(*keys: str) -> bool:
    redis = get_redis()
    if redis is not None:
        pipe = redis.pipeline(transaction=False)  # one round trip on every authenticated request
        pipe.exists(LOADED_MARKER)
        pipe.exists(*(PREFIX + key for key in keys))
        loaded, found = pipe.execute()
        if not loaded:
            _reload_into_redis(redis)
            found = redis.exists(*(PREFIX + key for key in keys))
        return found > 0
    found = db.session.execute(
        select(RevokedToken.key).where(RevokedToken.key.in_(keys), RevokedToken.expires_at > utcnow())
    ).first()
    return found is not None
