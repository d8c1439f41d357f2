"""Live events: ``publish()`` from anywhere (web process or worker), and the rooms they go to.

A leaf: it imports nothing of MCC but the unbound ``socketio`` extension, so every layer (API,
services, runtime, pipeline, workers) may import it without joining a cycle. The Socket.IO
handlers that clients talk to are in ``mcc/api/socket.py``.

With REDIS_URL set, Socket.IO uses Redis as its message queue, so an event published by any web
process or RQ worker reaches clients connected to any web process. Only authenticated clients
stay connected, so an event published without a room reaches every authenticated connection.
"""
from __future__ import annotations

from datetime import datetime, timezone

from mcc.extensions import socketio


def conversation_room(conversation_id) -> str:
    return f"conversation:{conversation_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def publish(event: str, data: dict, room: str | None = None) -> None:
    """Emit ``event`` to ``room``, or to every connection. Call only after the commit it reports."""
    socketio.emit(event, data, to=room)


def publish_agent_status(agent, current_task: dict | None = None) -> None:
    publish("agent_status", {"agent_id": str(agent.id), "status": agent.status, "current_task": current_task,
                             "timestamp": now_iso()})


def publish_conversation_status(conversation) -> None:
    publish("conversation_status", {"conversation_id": str(conversation.id), "status": conversation.status,
                                    "timestamp": now_iso()}, conversation_room(conversation.id))
