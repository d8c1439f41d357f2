"""GitHub mirrored into MCC: issues, pull requests, their reviews and check results, and every
webhook delivery received. Webhooks and the full sync write the same rows (matched by project and
number), and never overwrite a newer GitHub state with an older one (``github_updated_at``).
"""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, Uuid)
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, updated_at_column, utcnow, uuid_pk

PR_STATES = ("open", "closed", "merged")
CHECKS_STATES = ("pending", "success", "failure", "none")
REVIEW_STATES = ("none", "commented", "approved", "changes_requested")
REVIEW_VERDICTS = ("commented", "approved", "changes_requested", "dismissed")
DELIVERY_STATUSES = ("received", "processed", "ignored", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class GitHubItem:
    """Columns issues and pull requests share (one number space per repository)."""

    github_id: Mapped[int | None] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(String(512), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="open")
    author: Mapped[str | None] = mapped_column(String(100))  # GitHub login
    html_url: Mapped[str | None] = mapped_column(String(500))
    comments: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    github_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    github_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    github_closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Issue(GitHubItem, db.Model):
    __tablename__ = "issues"
    __table_args__ = (
        UniqueConstraint("project_id", "number", name="uq_issues_project_number"),
        Index("ix_issues_project_state", "project_id", "state"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    labels: Mapped[list] = mapped_column(JSON, nullable=False, default=list)  # label names
    assignees: Mapped[list] = mapped_column(JSON, nullable=False, default=list)  # logins
    # Deleted or transferred away on GitHub: kept (tasks and conversations may point here), never listed.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class PullRequest(GitHubItem, db.Model):
    __tablename__ = "pull_requests"
    __table_args__ = (
        UniqueConstraint("project_id", "number", name="uq_pull_requests_project_number"),
        CheckConstraint(_in("state", PR_STATES), name="state"),
        CheckConstraint(_in("checks_state", CHECKS_STATES), name="checks_state"),
        CheckConstraint(_in("review_state", REVIEW_STATES), name="review_state"),
        Index("ix_pull_requests_project_state", "project_id", "state"),
        Index("ix_pull_requests_project_head_sha", "project_id", "head_sha"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    draft: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    head_ref: Mapped[str | None] = mapped_column(String(255))
    base_ref: Mapped[str | None] = mapped_column(String(255))
    head_sha: Mapped[str | None] = mapped_column(String(64))
    checks_state: Mapped[str] = mapped_column(String(10), nullable=False, default="none")
    review_state: Mapped[str] = mapped_column(String(20), nullable=False, default="none")
    # The task pipeline links its task; the issue comes from a closing keyword ("Fixes #12").
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    issue_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("issues.id", ondelete="SET NULL"), index=True)
    merged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    merge_commit_sha: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class PullRequestReview(db.Model):
    """Approve/reject history: reviews seen on GitHub, and MCC's own verdicts (what the coder reads)."""

    __tablename__ = "pr_reviews"
    __table_args__ = (
        CheckConstraint(_in("verdict", REVIEW_VERDICTS), name="verdict"),
        CheckConstraint(_in("source", ("github", "mcc")), name="source"),
        CheckConstraint(_in("github_kind", ("review", "comment", "merge")), name="github_kind"),
        UniqueConstraint("pull_request_id", "github_kind", "github_id", name="uq_pr_reviews_github_object"),
        Index("ix_pr_reviews_pull_request_created", "pull_request_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    pull_request_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("pull_requests.id", ondelete="CASCADE"), nullable=False)
    verdict: Mapped[str] = mapped_column(String(20), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(10), nullable=False)  # github | mcc
    github_kind: Mapped[str] = mapped_column(String(10), nullable=False, default="review")
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    author: Mapped[str | None] = mapped_column(String(100))  # GitHub login
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class CommitCheck(db.Model):
    """The latest check run (by name) or commit status (by context) of one commit."""

    __tablename__ = "commit_checks"
    __table_args__ = (
        CheckConstraint(_in("kind", ("check_run", "status")), name="kind"),
        UniqueConstraint("project_id", "sha", "kind", "name", name="uq_commit_checks_identity"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    sha: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), nullable=False)  # queued|in_progress|completed
    conclusion: Mapped[str | None] = mapped_column(String(20))  # success|failure|neutral|... (statuses: state)
    url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class WebhookDelivery(db.Model):
    """Every signed delivery, kept for audit and replay (X-GitHub-Delivery is unique)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        Index("ix_webhook_deliveries_status_received", "status", "received_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    delivery_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    event: Mapped[str] = mapped_column(String(60), nullable=False)
    action: Mapped[str | None] = mapped_column(String(60))
    repo_full_name: Mapped[str | None] = mapped_column(String(140))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="received")
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GitHubSyncState(db.Model):
    """Per project: the ETags of the last complete listings (conditional polling) and the last outcome."""

    __tablename__ = "github_sync_states"
    __table_args__ = (CheckConstraint(_in("last_status", ("running", "ok", "failed")), name="last_status"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    issues_etag: Mapped[str | None] = mapped_column(String(200))
    pulls_etag: Mapped[str | None] = mapped_column(String(200))
    last_status: Mapped[str | None] = mapped_column(String(10))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
