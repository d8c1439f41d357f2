"""Projects and their live statistics."""
from __future__ import annotations

import uuid
from decimal import Decimal

from flask import current_app
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from mcc.errors import Forbidden, ValidationFailed
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.budget import BudgetLimit
from mcc.models.conversation import Conversation
from mcc.models.github import Issue
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.models.turn import LedgerEntry
from mcc.services import audit
from mcc.services.clock import start_of_today
from mcc.services.lookup import get_scoped


def get_project(project_id: uuid.UUID) -> Project:
    return get_scoped(Project, project_id, label="Project")


def list_projects(page: int, limit: int, is_active: bool | None = None) -> tuple[list[Project], int]:
    query = select(Project)
    if is_active is not None:
        query = query.where(Project.is_active.is_(is_active))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = db.session.scalars(
        query.order_by(Project.created_at.desc(), Project.id).offset((page - 1) * limit).limit(limit)).all()
    return list(items), total


def project_stats(project_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    """Stats for many projects in three grouped queries, whatever their number."""
    stats = {pid: {"open_issues": 0, "active_conversations": 0, "today_cost": 0.0} for pid in project_ids}
    if not project_ids:
        return stats
    open_issues = db.session.execute(
        select(Issue.project_id, func.count())
        .where(Issue.project_id.in_(project_ids), Issue.state == "open")
        .group_by(Issue.project_id))
    for pid, count in open_issues:
        stats[pid]["open_issues"] = count
    active = db.session.execute(
        select(Conversation.project_id, func.count())
        .where(Conversation.project_id.in_(project_ids), Conversation.status == "active")
        .group_by(Conversation.project_id))
    for pid, count in active:
        stats[pid]["active_conversations"] = count
    # The ledger, not messages: a call whose turn failed was paid for and left no reply.
    cost = db.session.execute(
        select(LedgerEntry.project_id, func.coalesce(func.sum(LedgerEntry.cost_usd), 0))
        .where(LedgerEntry.project_id.in_(project_ids), LedgerEntry.created_at >= start_of_today())
        .group_by(LedgerEntry.project_id))
    for pid, total in cost:
        stats[pid]["today_cost"] = float(Decimal(total))
    return stats


REPO_INDEX = "uq_projects_github_repo_lower"


def _repo_taken(github_repo: str, clash_name: str | None = None, clash_id=None) -> ValidationFailed:
    by = f"project {clash_name!r}" if clash_name else "another project"
    return ValidationFailed(f"The repository {github_repo} is already bound to {by}.",
                            {"github_repo": [f"Already used by project {clash_id}." if clash_id
                                             else "Already used by another project."]})


def _check_repo_free(github_repo: str, except_id: uuid.UUID | None = None) -> None:
    query = select(Project.id, Project.name).where(func.lower(Project.github_repo) == github_repo.lower())
    if except_id is not None:
        query = query.where(Project.id != except_id)
    clash = db.session.execute(query).first()
    if clash:
        raise _repo_taken(github_repo, clash.name, clash.id)


def _save_in_savepoint(github_repo: str | None, change) -> None:
    """Apply ``change`` and flush inside a savepoint, so a concurrent request binding the same
    repository (the unique index) is a 422 rather than a 500, and the session stays usable."""
    try:
        with db.session.begin_nested():
            change()
            db.session.flush()
    except IntegrityError as exc:
        if github_repo and getattr(getattr(exc.orig, "diag", None), "constraint_name", None) == REPO_INDEX:
            raise _repo_taken(github_repo) from exc
        raise


def repo_allowed(github_repo: str, allowed: list[str] | None) -> bool:
    """``allowed`` holds owners (``acme``) and repositories (``acme/app``), case-insensitive; None: all."""
    if allowed is None:
        return True
    wanted = github_repo.lower()
    owner = wanted.split("/", 1)[0]
    return any(entry.lower() in (owner, wanted) for entry in allowed)


def _check_repo_allowed(github_repo: str) -> None:
    if not repo_allowed(github_repo, current_app.config.get("MCC_GITHUB_ALLOWED_REPOS")):
        raise ValidationFailed(f"The repository {github_repo} is not in MCC_GITHUB_ALLOWED_REPOS.",
                               {"github_repo": ["Not an allowed repository; an administrator sets "
                                                "MCC_GITHUB_ALLOWED_REPOS."]})


def _check_installation_fields(data: dict, project: Project | None, user) -> None:
    """Which App and installation a project uses decides which credential reaches which
    repositories: only an admin sets them (sending the current value, or null on create, is fine)."""
    if user is None or user.role == "admin":
        return
    for field in ("github_app_id", "github_installation_id"):
        if field in data and data[field] != (getattr(project, field) if project is not None else None):
            raise Forbidden(f"Only an admin may set {field}.")


def create_project(data: dict, user=None) -> Project:
    _check_installation_fields(data, None, user)
    _check_repo_allowed(data["github_repo"])
    _check_repo_free(data["github_repo"])
    project = Project(**data)
    _save_in_savepoint(data["github_repo"], lambda: db.session.add(project))
    audit.record("project.created", "project", project.id, data)
    return project


def update_project(project_id: uuid.UUID, data: dict, user=None) -> Project:
    project = get_project(project_id)
    _check_installation_fields(data, project, user)
    if "github_repo" in data:
        _check_repo_allowed(data["github_repo"])
        _check_repo_free(data["github_repo"], except_id=project.id)
    audit.record_update("project", project, data)

    def change():
        for key, value in data.items():
            setattr(project, key, value)

    _save_in_savepoint(data.get("github_repo"), change)
    return project


def delete_project(project_id: uuid.UUID) -> None:
    """Delete the project; the database cascades to everything that belongs to it, and its budget
    limits (scoped by id, not by foreign key) are deleted here."""
    project = get_project(project_id)
    _delete_budget_limits(project.id)
    audit.record("project.deleted", "project", project.id, {"name": project.name, "github_repo": project.github_repo})
    db.session.delete(project)
    db.session.flush()


def _delete_budget_limits(project_id: uuid.UUID) -> None:
    """The limits of the project, and of its agents, tasks and issues."""
    agent_ids = select(Agent.id).where(Agent.project_id == project_id)
    task_ids = select(Task.id).where(Task.project_id == project_id)
    issue_ids = select(Issue.id).where(Issue.project_id == project_id)
    db.session.execute(delete(BudgetLimit).where(or_(
        (BudgetLimit.scope_type == "project") & (BudgetLimit.scope_id == project_id),
        (BudgetLimit.scope_type == "agent") & (BudgetLimit.scope_id.in_(agent_ids)),
        (BudgetLimit.scope_type == "task") & (BudgetLimit.scope_id.in_(task_ids)),
        (BudgetLimit.scope_type == "issue") & (BudgetLimit.scope_id.in_(issue_ids)))))
