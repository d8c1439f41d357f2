"""Agents: an LLM with a role, a model configuration and instructions, inside one project."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, uuid_pk

AGENT_TYPES = ("architect", "coder", "tester", "reviewer", "orchestrator")
AGENT_STATUSES = ("idle", "working", "error")


class Agent(db.Model):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("type IN ('architect', 'coder', 'tester', 'reviewer', 'orchestrator')", name="type"),
        CheckConstraint("status IN ('idle', 'working', 'error')", name="status"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    temperature: Mapped[float] = mapped_column(Float, nullable=False)
    max_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    rules_file_path: Mapped[str | None] = mapped_column(String(500))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="idle")
    # The agent's memory starts here: its turns see no message created before this instant.
    memory_reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    @property
    def model_config(self) -> dict:
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}


# Names are how people @mention agents: unique within a project, whatever the case.
Index("uq_agents_project_name_lower", Agent.project_id, func.lower(Agent.name), unique=True)
