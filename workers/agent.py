"""Agent jobs: drive a conversation's turns, and recover turns whose worker died."""
from __future__ import annotations

import uuid

from mcc.runtime import engine
from workers.context import job


@job
def drive_conversation(conversation_id: str) -> str:
    return engine.pump(uuid.UUID(conversation_id))


@job
def reap_abandoned_turns() -> int:
    return len(engine.reap_abandoned())
