"""Conversations between people and agents, and their messages."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (JSON, BigInteger, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, Numeric,
                        String, Table, Text, Uuid)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.types import created_at_column, updated_at_column, utcnow, uuid_pk

CONVERSATION_TYPES = ("issue", "general", "task", "review")
CONVERSATION_STATUSES = ("active", "paused", "completed")
AUTHOR_TYPES = ("user", "agent", "system")

conversation_agents = Table(
    "conversation_agents",
    db.metadata,
    Column("conversation_id", Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("agent_id", Uuid, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("added_at", DateTime(timezone=True), nullable=False, default=utcnow),
)


class Conversation(db.Model):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("type IN ('issue', 'general', 'task', 'review')", name="type"),
        CheckConstraint("status IN ('active', 'paused', 'completed')", name="status"),
        Index("ix_conversations_project_status", "project_id", "status"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False, default="general")
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="active")
    issue_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("issues.id", ondelete="SET NULL"), index=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    agents: Mapped[list[Agent]] = relationship(
        Agent, secondary=conversation_agents, order_by=conversation_agents.c.added_at, lazy="selectin")


class Message(db.Model):
    """A message. ``seq`` orders messages and is the keyset of cursor pagination."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("author_type IN ('user', 'agent', 'system')", name="author_type"),
        # Cursor pages: WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT n.
        Index("ix_messages_conversation_seq", "conversation_id", "seq"),
        Index("ix_messages_agent_created", "agent_id", "created_at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, nullable=False, default=uuid.uuid4)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False)
    author_type: Mapped[str] = mapped_column(String(10), nullable=False)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agents.id", ondelete="SET NULL"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL"), index=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    tokens_in: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), nullable=False, default=Decimal("0"))
    reply_to_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("messages.id", ondelete="SET NULL"))
    meta: Mapped[dict | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = created_at_column()

    agent: Mapped[Agent | None] = relationship(Agent, lazy="joined")
    user = relationship("User", lazy="joined")
