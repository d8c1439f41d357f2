"""GitHub issues mirrored from the project's repository (webhooks and sync fill them)."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, uuid_pk


class Issue(db.Model):
    __tablename__ = "issues"
    __table_args__ = (
        UniqueConstraint("project_id", "number", name="uq_issues_project_number"),
        Index("ix_issues_project_state", "project_id", "state"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(String(512), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="open")
    labels: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    author: Mapped[str | None] = mapped_column(String(100))
    assignees: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    html_url: Mapped[str | None] = mapped_column(String(500))
    comments: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    github_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    github_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
