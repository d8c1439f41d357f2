"""Agent turns (one agent answering once) and the cost ledger of every LLM call they make."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, Numeric, String, Text,
                        UniqueConstraint, Uuid)
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, uuid_pk

TURN_STATUSES = ("queued", "held", "running", "succeeded", "failed", "cancelled")
OPEN_TURN_STATUSES = ("queued", "held", "running")


class Turn(db.Model):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'held', 'running', 'succeeded', 'failed', 'cancelled')",
                        name="status"),
        # The pump takes the oldest open turn of a conversation.
        Index("ix_turns_conversation_status_created", "conversation_id", "status", "created_at"),
        Index("ix_turns_agent_status", "agent_id", "status"),
        Index("ix_turns_chain", "chain_id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    # The human message whose chain this turn belongs to (MCC_MAX_CHAIN counts per chain).
    chain_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    depth: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # The message this turn answers.
    reply_to_message_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="SET NULL"))
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Unique: whatever happens to the job, a turn stores at most one reply.
    reply_message_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="SET NULL"), unique=True)
    # The conversation sent to the model so far, with tool calls and results, so a turn held
    # between two tool steps continues where it stopped.
    transcript: Mapped[list | None] = mapped_column(JSON)
    tool_log: Mapped[list | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LedgerEntry(db.Model):
    """One row per LLM call: what it cost, for whom. Budgets and reports aggregate this."""

    __tablename__ = "cost_ledger"
    __table_args__ = (
        UniqueConstraint("turn_id", "attempt", "call_index", name="uq_cost_ledger_call"),
        Index("ix_cost_ledger_created", "created_at"),
        Index("ix_cost_ledger_project_created", "project_id", "created_at"),
        Index("ix_cost_ledger_agent_created", "agent_id", "created_at"),
        Index("ix_cost_ledger_task_created", "task_id", "created_at"),  # task and issue budgets, by-task
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    turn_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("turns.id", ondelete="SET NULL"))
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    call_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="SET NULL"))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agents.id", ondelete="SET NULL"))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="SET NULL"))
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    tokens_in: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), nullable=False, default=Decimal("0"))
    # False: the model had no known price, the cost is recorded as 0 and flagged.
    price_known: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    cost_source: Mapped[str] = mapped_column(String(20), nullable=False, default="price_table")
    simulated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = created_at_column()
