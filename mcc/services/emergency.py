"""Emergency stop: pause every agent system-wide, and resume them, on record."""
from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select

from mcc.errors import Conflict
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.control import EmergencyEvent
from mcc.models.conversation import Conversation
from mcc.models.types import as_utc
from mcc.services import audit
from mcc.services.lookup import paginate
from mcc.runtime import cancellation, gate
from mcc.services.notifications import notify

log = logging.getLogger(__name__)

PAUSE_MESSAGE = "All agents paused. Manual resume required."


def _state_of(event: EmergencyEvent | None) -> dict:
    if event is None or event.action != "pause":
        return {}
    return {"triggered_by": event.triggered_by, "actor": event.actor, "reason": event.reason,
            "timestamp": as_utc(event.created_at).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _latest_event() -> EmergencyEvent | None:
    return db.session.scalars(select(EmergencyEvent).order_by(EmergencyEvent.created_at.desc()).limit(1)).first()


def state_from_database() -> dict:
    return _state_of(_latest_event())


def current_state() -> dict | None:
    """The pause in force ({triggered_by, actor, reason, timestamp}), or None when running."""
    return gate.emergency_flag(state_from_database) or None


def pause_all(actor: str, user_id: uuid.UUID | None, reason: str | None, triggered_by: str = "user") -> dict:
    """Stop every new LLM call now, and the calls in flight within a poll (their turns end
    ``cancelled``). The caller commits, then publishes ``emergency_pause``."""
    reason = reason or ("Budget limit exceeded" if triggered_by == "system" else "Emergency pause")
    event = EmergencyEvent(action="pause", triggered_by=triggered_by, user_id=user_id, actor=actor, reason=reason)
    db.session.add(event)
    db.session.flush()
    state = _state_of(event)
    audit.record("emergency.pause", "emergency", event.id, {"reason": reason, "triggered_by": triggered_by},
                 actor=actor, actor_id=user_id)
    # The flag goes up first: from here on no call starts, whatever happens to this transaction.
    in_flight, cancelled = gate.set_emergency_flag(state, cancel_reason=cancellation.emergency_reason(state))
    paused_agents = db.session.scalar(select(func.count()).select_from(Agent).where(Agent.is_active.is_(True)))
    active = db.session.scalar(select(func.count()).select_from(Conversation)
                               .where(Conversation.status == "active"))
    notify("critical", "emergency_pause", "Emergency pause: all agents stopped",
           f"{actor} paused all agents ({triggered_by}): {reason}", {"event_id": str(event.id)})
    log.warning("EMERGENCY PAUSE by %s (%s): %s; %s LLM call(s) were under way, %s told to stop",
                actor, triggered_by, reason, in_flight, cancelled)
    return {"paused_agents": paused_agents, "active_conversations": active, "message": PAUSE_MESSAGE,
            "calls_in_flight": in_flight, "cancelled": cancelled, "state": state}


def resume_all(actor: str, user_id: uuid.UUID | None) -> dict:
    if not state_from_database():
        raise Conflict("Agents are not paused.")
    event = EmergencyEvent(action="resume", triggered_by="user", user_id=user_id, actor=actor)
    db.session.add(event)
    db.session.flush()
    audit.record("emergency.resume", "emergency", event.id, actor=actor, actor_id=user_id)
    notify("info", "emergency_resume", "Agents resumed", f"{actor} resumed all agents.",
           {"event_id": str(event.id)})
    log.warning("emergency pause lifted by %s", actor)
    return {"message": "All agents resumed.", "resumed_by": actor}


def list_events(page: int, limit: int) -> tuple[list[EmergencyEvent], int]:
    """Every pause and resume, newest first."""
    return paginate(select(EmergencyEvent), page, limit, EmergencyEvent.created_at.desc(), EmergencyEvent.id.desc())


def lift_flag() -> None:
    """After the resume is committed: let calls start again."""
    gate.set_emergency_flag(None)
