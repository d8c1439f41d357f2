"""Projects, bound to one GitHub repository each."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Index, String, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, updated_at_column, uuid_pk

MERGE_METHODS = ("merge", "squash", "rebase")  # github_merge_method (checked by the code that sets it)


class Project(db.Model):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    github_repo: Mapped[str] = mapped_column(String(140), nullable=False)
    github_app_id: Mapped[str | None] = mapped_column(String(64))
    github_installation_id: Mapped[str | None] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # GitHub integration (docs/github.md): how approve merges, and an optional own webhook secret
    # (write-only: never serialised).
    github_merge_method: Mapped[str] = mapped_column(String(10), nullable=False, default="squash",
                                                     server_default="squash")
    allow_merge_without_checks: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                             server_default=false())
    github_webhook_secret: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


# owner/repo is case-insensitive on GitHub: one project per repository.
Index("uq_projects_github_repo_lower", func.lower(Project.github_repo), unique=True)
