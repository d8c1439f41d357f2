"""Stop controls shared by REST and the CLI: what follows a pause or resume once committed."""
from __future__ import annotations

from mcc.events import now_iso, publish
from mcc.extensions import db
from mcc.services import emergency
from mcc.runtime import engine


def announce_pause(state: dict) -> None:
    publish("emergency_pause", {"triggered_by": state["triggered_by"], "reason": state["reason"],
                                "timestamp": state["timestamp"]})


def resume_everything(actor: str, user_id) -> dict:
    """Record the resume, lift the flag, queue the held work again and start it. Commits."""
    result = emergency.resume_all(actor, user_id)
    conversations = engine.release_held()
    db.session.commit()
    emergency.lift_flag()
    announce_resume(actor)
    for conversation_id in conversations:
        engine.kick(conversation_id)
    return {**result, "resumed_conversations": len(conversations)}


def announce_resume(actor: str) -> None:
    publish("emergency_resume", {"resumed_by": actor, "timestamp": now_iso()})
