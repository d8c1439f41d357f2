"""Agent jobs: drive a conversation's turns, and recover turns whose worker died."""
from __future__ import annotations

import uuid

from mcc.services import turns
from workers.context import job


@job
def drive_conversation(conversation_id: str) -> str:
    return turns.pump(uuid.UUID(conversation_id))


@job
def reap_abandoned_turns() -> int:
    return len(turns.reap_abandoned())
