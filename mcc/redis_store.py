"""The shared Redis connection, or None in embedded mode.

One blocking pool per process serves MCC's own keys, RQ's enqueues and the rate limiter: under
pressure a caller waits up to MCC_REDIS_POOL_TIMEOUT for a free connection, then gets a
``redis.exceptions.ConnectionError`` (a 503, or a socket connect_error), never a hang and never an
instant failure because the pool is momentarily full.
"""
from __future__ import annotations

from flask import current_app
from redis import BlockingConnectionPool, Redis


def blocking_pool(url: str, config, **options) -> BlockingConnectionPool:
    """A pool sized and timed from the configuration; ``options`` override the connection kwargs."""
    timeout = config["MCC_REDIS_TIMEOUT"]
    kwargs = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "health_check_interval": 30,
              **options}
    return BlockingConnectionPool.from_url(url, max_connections=config["MCC_REDIS_MAX_CONNECTIONS"],
                                           timeout=config["MCC_REDIS_POOL_TIMEOUT"], **kwargs)


def init_app(app) -> None:
    url = app.config.get("REDIS_URL")
    pool = blocking_pool(url, app.config) if url else None
    app.extensions["mcc_redis"] = Redis(connection_pool=pool) if pool else None
    if pool is not None:
        # Flask-Limiter's storage draws from the same pool (it is read when the limiter binds).
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"connection_pool": pool})


def get_redis() -> Redis | None:
    return current_app.extensions.get("mcc_redis")
