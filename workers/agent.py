"""Agent jobs: drive a conversation's turns. (Turns whose worker died are recovered by the reaper
thread of every worker, ``mcc.runtime.recovery.reaper_pass``, not by a job.)"""
from __future__ import annotations

import uuid

from mcc.runtime import engine
from workers.context import job


@job
def drive_conversation(conversation_id: str) -> str:
    return engine.pump(uuid.UUID(conversation_id))
