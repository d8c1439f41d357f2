"""Stop controls and what people are told: emergency pause events and notifications."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, ForeignKey, Index, String, Table, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, utcnow, uuid_pk


class EmergencyEvent(db.Model):
    """Every pause-all and resume-all, in order; the newest one is the current state."""

    __tablename__ = "emergency_events"
    __table_args__ = (
        CheckConstraint("action IN ('pause', 'resume')", name="action"),
        CheckConstraint("triggered_by IN ('user', 'system')", name="triggered_by"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    action: Mapped[str] = mapped_column(String(10), nullable=False)
    triggered_by: Mapped[str] = mapped_column(String(10), nullable=False)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(100), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class Notification(db.Model):
    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
        Index("ix_notifications_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    severity: Mapped[str] = mapped_column(String(10), nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict | None] = mapped_column(JSON)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = created_at_column()


# Read state is per user: a row here means that user has read that notification.
notification_reads = Table(
    "notification_reads",
    db.metadata,
    Column("notification_id", Uuid, ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("read_at", DateTime(timezone=True), nullable=False, default=utcnow),
)
