"""Agents of a project: configuration, memory reset, live statistics."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mcc.errors import ValidationFailed
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.conversation import Message
from mcc.models.turn import LedgerEntry
from mcc.models.types import utcnow
from mcc.services import audit
from mcc.services.clock import start_of_today
from mcc.runtime import cancellation
from mcc.runtime.engine import cancel_waiting_turns
from mcc.services.lookup import get_scoped
from mcc.services.projects import get_project

MODEL_CONFIG_FIELDS = ("model", "temperature", "max_tokens")


def get_agent(project_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    return get_scoped(Agent, agent_id, project_id, "Agent")


def list_agents(project_id: uuid.UUID, page: int, limit: int) -> tuple[list[Agent], int]:
    get_project(project_id)
    query = select(Agent).where(Agent.project_id == project_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = db.session.scalars(query.order_by(Agent.created_at, Agent.id).offset((page - 1) * limit).limit(limit))
    return list(items), total


def agent_stats(agent_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    stats = {aid: {"messages_today": 0, "cost_today": 0.0} for aid in agent_ids}
    if agent_ids:
        since = start_of_today()
        messages = db.session.execute(
            select(Message.agent_id, func.count())
            .where(Message.agent_id.in_(agent_ids), Message.created_at >= since)
            .group_by(Message.agent_id))
        for aid, count in messages:
            stats[aid]["messages_today"] = count
        # The ledger, not messages: a call whose turn failed was paid for and left no reply.
        spend = db.session.execute(
            select(LedgerEntry.agent_id, func.coalesce(func.sum(LedgerEntry.cost_usd), 0))
            .where(LedgerEntry.agent_id.in_(agent_ids), LedgerEntry.created_at >= since)
            .group_by(LedgerEntry.agent_id))
        for aid, cost in spend:
            stats[aid]["cost_today"] = float(Decimal(cost))
    return stats


NAME_INDEX = "uq_agents_project_name_lower"


def _name_taken(name: str) -> ValidationFailed:
    return ValidationFailed(f"An agent named {name!r} already exists in this project.",
                            {"name": ["Already used in this project."]})


def _check_name_free(project_id: uuid.UUID, name: str, except_id: uuid.UUID | None = None) -> None:
    query = select(Agent.id).where(Agent.project_id == project_id, func.lower(Agent.name) == name.lower())
    if except_id is not None:
        query = query.where(Agent.id != except_id)
    if db.session.scalar(query) is not None:
        raise _name_taken(name)


def _save_in_savepoint(name: str, change) -> None:
    """Apply ``change`` and flush inside a savepoint.

    The name was checked first; a concurrent request taking it meanwhile trips the unique index,
    which rolls back only the savepoint: a 422, and the session stays usable. (The change must
    happen inside the savepoint: ``begin_nested`` flushes pending changes *before* the SAVEPOINT,
    so a clash flushed there would abort the whole transaction.)
    """
    try:
        with db.session.begin_nested():
            change()
            db.session.flush()
    except IntegrityError as exc:
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) == NAME_INDEX:
            raise _name_taken(name) from exc
        raise


def _apply(agent: Agent, data: dict) -> None:
    for key, value in (data.pop("model_config", None) or {}).items():
        setattr(agent, key, value)
    for key, value in data.items():
        setattr(agent, key, value)


def create_agent(project_id: uuid.UUID, data: dict) -> Agent:
    get_project(project_id)
    _check_name_free(project_id, data["name"])
    agent = Agent(project_id=project_id)
    _apply(agent, dict(data))
    _save_in_savepoint(agent.name, lambda: db.session.add(agent))
    audit.record("agent.created", "agent", agent.id, {"project_id": project_id, **data})
    return agent


def update_agent(project_id: uuid.UUID, agent_id: uuid.UUID, data: dict) -> Agent:
    agent = get_agent(project_id, agent_id)
    if "name" in data:
        _check_name_free(project_id, data["name"], except_id=agent.id)
    audit.record("agent.updated", "agent", agent.id, {"project_id": project_id, "changes": data})
    _save_in_savepoint(data.get("name", agent.name), lambda: _apply(agent, dict(data)))
    if data.get("is_active") is False:
        cancellation.stop_running(f"{agent.name} was deactivated", agent_id=agent.id)
    return agent


def reset_agent(project_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    """Forget: later turns see no message from before now, and its waiting turns are cancelled.

    History stays for audit.
    """
    agent = get_agent(project_id, agent_id)
    agent.memory_reset_at = utcnow()
    agent.status = "idle"
    audit.record("agent.reset", "agent", agent.id, {"project_id": project_id, "name": agent.name})
    cancel_waiting_turns(agent_id=agent.id, why=f"{agent.name} was reset")
    cancellation.stop_running(f"{agent.name} was reset", agent_id=agent.id)
    db.session.flush()
    return agent
