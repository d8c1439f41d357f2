"""Housekeeping jobs."""
from __future__ import annotations

import logging

from mcc.extensions import db
from mcc.services import tokens
from mcc.services.rollup import reconcile
from workers.context import job

log = logging.getLogger(__name__)


@job
def purge_expired_tokens() -> dict:
    """Delete revocations and refresh tokens past their expiry (``tokens.purge_expired``)."""
    purged = tokens.purge_expired()
    db.session.commit()
    log.info("purged %s revocations and %s refresh tokens", purged["revoked_tokens"], purged["refresh_tokens"])
    return purged


@job
def reconcile_cost_rollup() -> int:
    """The daily cost rollup of today and yesterday agrees with the cost ledger again."""
    return reconcile()
