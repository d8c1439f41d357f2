"""Agent turns as an operator sees them (``GET /turns``, ``flask jobs``): list, inspect, retry, cancel."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select

from mcc.errors import Conflict, NotFound
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.conversation import Conversation
from mcc.models.turn import LedgerEntry, Turn
from mcc.services import audit, outbox
from mcc.runtime import gate
from mcc.services.lookup import paginate
from mcc.runtime.engine import cancel_turn, kick
from mcc.runtime.tools import calls_of

RETRYABLE = ("failed", "cancelled")


def _cost_by_turn(turn_ids: list[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
    if not turn_ids:
        return {}
    return dict(db.session.execute(select(LedgerEntry.turn_id, func.sum(LedgerEntry.cost_usd))
                                   .where(LedgerEntry.turn_id.in_(turn_ids)).group_by(LedgerEntry.turn_id)).all())


def _item(turn: Turn, project_id: uuid.UUID, cost: Decimal | None) -> dict:
    return {"id": turn.id, "status": turn.status, "attempts": turn.attempts, "project_id": project_id,
            "agent_id": turn.agent_id, "conversation_id": turn.conversation_id, "task_id": turn.task_id,
            "created_at": turn.created_at, "started_at": turn.started_at, "finished_at": turn.finished_at,
            "heartbeat_age_s": (gate.beat_age(f"turn:{turn.id}") if turn.status == "running" else None),
            "error": turn.error, "cost_usd": cost or Decimal(0)}


def list_turns(page: int, limit: int, status: str | None = None, project_id: uuid.UUID | None = None,
               agent_id: uuid.UUID | None = None, conversation_id: uuid.UUID | None = None) -> tuple[list[dict], int]:
    """Newest first, with their project (through the conversation) and cost so far."""
    query = select(Turn, Conversation.project_id).join(Conversation, Conversation.id == Turn.conversation_id)
    if status:
        query = query.where(Turn.status == status)
    if project_id:
        query = query.where(Conversation.project_id == project_id)
    if agent_id:
        query = query.where(Turn.agent_id == agent_id)
    if conversation_id:
        query = query.where(Turn.conversation_id == conversation_id)
    rows, total = paginate(query, page, limit, Turn.created_at.desc(), Turn.id.desc(), scalars=False)
    costs = _cost_by_turn([turn.id for turn, _ in rows])
    return [_item(turn, project, costs.get(turn.id)) for turn, project in rows], total


def _get(turn_id: uuid.UUID, lock: bool = False) -> tuple[Turn, Conversation]:
    query = select(Turn).where(Turn.id == turn_id)
    turn = db.session.scalars(query.with_for_update() if lock else query).first()
    if turn is None:
        raise NotFound("Turn not found.", {"id": str(turn_id)})
    return turn, db.session.get(Conversation, turn.conversation_id)


def turn_detail(turn_id: uuid.UUID) -> dict:
    """One turn with the tool calls it made and the ledger rows of its LLM calls."""
    turn, conversation = _get(turn_id)
    ledger = db.session.scalars(select(LedgerEntry).where(LedgerEntry.turn_id == turn.id)
                                .order_by(LedgerEntry.attempt, LedgerEntry.call_index)).all()
    return {**_item(turn, conversation.project_id, sum((e.cost_usd for e in ledger), Decimal(0))),
            "reply_to_message_id": turn.reply_to_message_id, "reply_message_id": turn.reply_message_id,
            "chain_id": turn.chain_id, "depth": turn.depth, "tool_calls": calls_of(turn.tool_log), "ledger": ledger}


def retry(turn_id: uuid.UUID) -> dict:
    """A failed or cancelled turn is queued again; its next run is a new attempt (409 otherwise)."""
    turn, conversation = _get(turn_id, lock=True)
    if turn.status not in RETRYABLE:
        raise Conflict(f"Only a failed or cancelled turn can be retried; this one is {turn.status}.",
                       {"status": turn.status})
    if turn.task_id is not None:
        raise Conflict("This turn is a stage of a task pipeline, which handed the task to a person when "
                       "the turn ended; act on the task instead.", {"task_id": str(turn.task_id)})
    if conversation.status == "completed":
        raise Conflict("The conversation is completed; its turns do not run again.",
                       {"conversation_id": str(conversation.id)})
    agent = db.session.get(Agent, turn.agent_id)
    if agent is None or not agent.is_active:
        raise Conflict("The turn's agent is inactive.", {"agent_id": str(turn.agent_id)})
    audit.record("turn.retried", "turn", turn.id, {"conversation_id": turn.conversation_id, "error": turn.error,
                                                   "attempts": turn.attempts})
    turn.status, turn.error, turn.finished_at = "queued", None, None
    db.session.commit()
    kick(turn.conversation_id)
    return turn_detail(turn.id)


def cancel(turn_id: uuid.UUID) -> dict:
    """A queued or held turn is cancelled now; a running one is told to stop (its call in flight is
    closed within a second and the worker ends it ``cancelled``); 409 for a finished one."""
    turn, _ = _get(turn_id, lock=True)
    if turn.status not in ("queued", "held", "running"):
        raise Conflict(f"Only a queued, held or running turn can be cancelled; this one is {turn.status}.",
                       {"status": turn.status})
    audit.record("turn.cancelled", "turn", turn.id, {"conversation_id": turn.conversation_id, "was": turn.status})
    cancel_turn(turn.id, "a person cancelled the turn")
    db.session.commit()
    outbox.flush()
    return turn_detail(turn.id)
