"""Liveness and readiness probes for load balancers and orchestrators (outside /api/v1).

``/readyz`` answers 200 when this web process can serve: database and Redis reachable. It also
reports, under their own names and without failing the probe, whether the database schema is at
the migrations' head and whether at least one RQ worker is alive (``informational``): a web
process serves without workers, but agents do not answer.
"""
from __future__ import annotations

import functools

from flask import Blueprint, jsonify
from sqlalchemy import text

from mcc.config import PROJECT_ROOT
from mcc.extensions import db
from mcc.redis_store import get_redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@functools.cache
def _migration_heads() -> frozenset[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def _migrations() -> str:
    try:
        current = set(db.session.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception as exc:
        db.session.rollback()
        return f"unknown: {type(exc).__name__}"
    if current == set(_migration_heads()):
        return "ok"
    return (f"not at head: database at {', '.join(sorted(current)) or 'nothing'}, code at "
            f"{', '.join(sorted(_migration_heads()))} (run `flask --app wsgi db upgrade`)")


def _workers(redis) -> str:
    from rq import Worker

    try:
        alive = len(Worker.all(connection=redis))
    except Exception as exc:
        return f"unknown: {type(exc).__name__}"
    return "ok" if alive else "no live worker (agents will not answer; start `python -m workers`)"


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
    informational = {"migrations": _migrations() if checks["database"] == "ok" else "unknown: database unreachable"}
    if redis is not None:
        informational["workers"] = _workers(redis) if checks["redis"] == "ok" else "unknown: redis unreachable"
    return (jsonify(status="ready" if ready else "not ready", checks=checks, informational=informational),
            (200 if ready else 503))
