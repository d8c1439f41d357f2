"""Housekeeping jobs."""
from __future__ import annotations

import logging

from sqlalchemy import delete

from mcc.extensions import db
from mcc.models.auth import RefreshToken, RevokedToken
from mcc.models.types import utcnow
from workers.context import job

log = logging.getLogger(__name__)


@job
def purge_expired_tokens() -> dict:
    """Delete revocations and refresh tokens past their expiry: they can no longer be presented."""
    now = utcnow()
    revoked = db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now)).rowcount
    refresh = db.session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now)).rowcount
    db.session.commit()
    log.info("purged %s revocations and %s refresh tokens", revoked, refresh)
    return {"revoked_tokens": revoked, "refresh_tokens": refresh}


@job
def reconcile_cost_rollup() -> int:
    """The daily cost rollup of today and yesterday agrees with the cost ledger again."""
    from mcc.services.rollup import reconcile

    return reconcile()
