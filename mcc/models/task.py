"""Tasks: units of work planned from an issue, assigned to an agent, tracked to completion."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, updated_at_column, uuid_pk

TASK_STATUSES = ("pending", "in_progress", "testing", "review", "completed", "failed")
PRIORITIES = ("low", "medium", "high", "urgent")


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'in_progress', 'testing', 'review', 'completed', 'failed')",
                        name="status"),
        CheckConstraint("priority IN ('low', 'medium', 'high', 'urgent')", name="priority"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        Index("ix_tasks_project_status", "project_id", "status"),
        Index("ix_tasks_agent_status", "assigned_agent_id", "status"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    issue_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("issues.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    definition_of_done: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="pending")
    priority: Mapped[str] = mapped_column(String(8), nullable=False, default="medium")
    assigned_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("agents.id", ondelete="SET NULL"))
    # The coder who owns the change; assigned_agent_id moves to the tester and reviewer and back.
    coder_agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agents.id", ondelete="SET NULL"))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="SET NULL"))
    # Null while the task waits for its agent to be free; set when the agent's turn is queued.
    stage_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the coder must address next (failed tests, requested changes, a rejection).
    feedback: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Loops back to the coder so far; MCC_MAX_TASK_ATTEMPTS of them fail the task.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskTransition(db.Model):
    """Every status change of a task: from, to, who or which agent, when and why."""

    __tablename__ = "task_transitions"

    id: Mapped[uuid.UUID] = uuid_pk()
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True)
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12), nullable=False)
    actor_type: Mapped[str] = mapped_column(String(10), nullable=False)  # user | agent | system
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_name: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
