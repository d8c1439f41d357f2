"""Liveness and readiness probes for load balancers and orchestrators (outside /api/v1)."""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from mcc.extensions import db
from mcc.redis_store import get_redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: this endpoint exists to say what is down
        checks["database"] = f"unreachable: {type(exc).__name__}"
        db.session.rollback()
    redis = get_redis()
    if redis is None:
        checks["redis"] = "not configured (embedded mode)"
    else:
        try:
            redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)
