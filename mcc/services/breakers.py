"""Runaway breakers: a project spending too fast, a model repeating the same tool call.

Velocity (``MCC_VELOCITY_LIMIT``, e.g. ``5 per 10 minutes``, USD): after each recorded call the
project's ledger over the last window is summed (through its project + time index). At or above
the limit the project's agents are stopped: its active conversations are paused and their calls
in flight closed (their turns wait for the resume), a critical ``breaker_tripped`` notification
is raised and the ``breaker_tripped`` event goes to every client. Once per project per window; a
person resumes the conversations when they have looked.

Loop (``MCC_LOOP_REPEATS``, default 3, 0 = off): a turn whose model asks for the same tool with
the same arguments that many times is stopped before the repeat runs, with a system message
naming the call, a ``breaker_tripped`` notification and event.
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, select

from mcc.extensions import db
from mcc.models.conversation import Conversation
from mcc.models.project import Project
from mcc.models.turn import LedgerEntry
from mcc.models.types import utcnow
from mcc.runtime import cancellation, gate
from mcc.services.notifications import notify

log = logging.getLogger(__name__)


def _window_text(seconds: float) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def check_velocity(project_id: uuid.UUID | None) -> list[dict]:
    """After a call is on record: trip the project's velocity breaker if it spends too fast.

    Returns the events to publish after the caller commits.
    """
    setting = current_app.config["MCC_VELOCITY_LIMIT"]
    if setting is None or project_id is None:
        return []
    amount, seconds = setting
    spent = Decimal(db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
        LedgerEntry.project_id == project_id, LedgerEntry.created_at >= utcnow() - timedelta(seconds=seconds))))
    if spent < amount or not gate.once_per(f"velocity:{project_id}", seconds):
        return []
    project = db.session.get(Project, project_id)
    conversations = list(db.session.scalars(select(Conversation).where(
        Conversation.project_id == project_id, Conversation.status == "active")))
    for conversation in conversations:
        conversation.status = "paused"
    db.session.flush()
    window = _window_text(seconds)
    message = (f"Project '{project.name}' spent ${spent:.2f} in the last {window}, at or over MCC_VELOCITY_LIMIT "
               f"(${amount} per {window}): its agents are stopped and its {len(conversations)} active "
               "conversation(s) paused. Resume them once you have looked.")
    cancellation.stop_running(f"the velocity breaker tripped for project '{project.name}'", kind=cancellation.PAUSE,
                              project_id=project_id)
    data = {"breaker": "velocity", "project_id": str(project_id), "message": message, "spent": float(spent),
            "limit": float(amount), "window_seconds": seconds,
            "paused_conversations": [str(c.id) for c in conversations]}
    notify("critical", "breaker_tripped", f"Breaker: project '{project.name}' is spending too fast", message,
           data, project_id)
    log.warning("velocity breaker: %s", message)
    return [{"event": "breaker_tripped", "data": data}] + [
        {"event": "conversation_status", "room": f"conversation:{c.id}",
         "data": {"conversation_id": str(c.id), "status": "paused", "reason": "velocity breaker"}}
        for c in conversations]


def _signature(call: dict) -> tuple[str, str]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    try:
        arguments = json.dumps(json.loads(arguments), sort_keys=True)
    except (TypeError, ValueError):
        pass
    return str(function.get("name")), arguments


def repeated_call(tool_log: list[dict], calls: list[dict]) -> tuple[str, str, int] | None:
    """(tool, arguments, times) when one of ``calls`` would make a call asked for MCC_LOOP_REPEATS times."""
    limit = current_app.config["MCC_LOOP_REPEATS"]
    if limit <= 0:
        return None
    seen: dict[tuple[str, str], int] = {}
    for entry in tool_log:
        if "call" in entry:
            key = _signature(entry["call"])
            seen[key] = seen.get(key, 0) + 1
    for call in calls:
        key = _signature(call)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] >= limit:
            return key[0], key[1], seen[key]
    return None


def loop_tripped(turn, agent, conversation, loop: tuple[str, str, int]) -> tuple[str, dict]:
    """Notify of a loop (the caller commits); returns the reason for the turn and the event data."""
    name, arguments, times = loop
    shown = arguments if len(arguments) <= 200 else arguments[:200] + "..."
    why = (f"it asked for `{name}` with the same arguments {times} times ({shown}), a loop "
           f"(MCC_LOOP_REPEATS={current_app.config['MCC_LOOP_REPEATS']}); the repeat was not run")
    data = {"breaker": "loop", "project_id": str(conversation.project_id), "conversation_id": str(conversation.id),
            "agent_id": str(agent.id), "turn_id": str(turn.id), "tool": name, "times": times,
            "message": f"{agent.name} was stopped: {why}."}
    notify("warning", "breaker_tripped", f"Breaker: {agent.name} repeated `{name}`", data["message"], data,
           conversation.project_id)
    log.warning("loop breaker: %s", data["message"])
    return why, data
