"""The Socket.IO channel: server setup in the web process, ``publish()`` from anywhere.

With REDIS_URL set, Socket.IO uses Redis as its message queue so that an event published by any
web process or RQ worker reaches clients connected to any web process.
"""
from __future__ import annotations

import logging

from flask import current_app

from mcc.extensions import socketio

log = logging.getLogger(__name__)


def init_app(app) -> None:
    socketio.init_app(
        app,
        message_queue=app.config.get("REDIS_URL"),
        async_mode=app.config["MCC_SOCKETIO_ASYNC_MODE"],
        cors_allowed_origins=app.config["MCC_CORS_ORIGINS"] or [],
        logger=False,
        engineio_logger=False,
    )


def publish(event: str, data: dict, room: str | None = None) -> None:
    """Emit ``event`` to ``room`` (or every connection). Call only after the commit it reports."""
    socketio.emit(event, data, to=room)
    log.debug("published %s to %s", event, room or "all", extra={"app": current_app.name})
