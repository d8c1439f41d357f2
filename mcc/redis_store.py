"""The shared Redis connection, or None in embedded mode."""
from __future__ import annotations

from flask import current_app
from redis import Redis


def init_app(app) -> None:
    url = app.config.get("REDIS_URL")
    app.extensions["mcc_redis"] = Redis.from_url(url, health_check_interval=30) if url else None


def get_redis() -> Redis | None:
    return current_app.extensions.get("mcc_redis")
