"""Queuing: a conversation with queued turns gets a worker to drive them.

Below the engine (which runs the turns) and the pipeline (which queues them), so both import it
at module level.
"""
from __future__ import annotations

import uuid

from mcc.jobs import enqueue


def kick(conversation_id: uuid.UUID, delay: float | None = None) -> None:
    """Make sure a worker drives this conversation's queued turns."""
    enqueue("workers.agent.drive_conversation", str(conversation_id), queue="agent",
            description=f"drive conversation {conversation_id}: run its queued agent turns", delay=delay)
