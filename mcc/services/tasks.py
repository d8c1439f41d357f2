"""Tasks and their one state machine.

pending -> in_progress -> testing -> review -> completed; failed from any open state; testing and
review may send a task back to in_progress (a loop back, counted: MCC_MAX_TASK_ATTEMPTS of them
fail the task). Every change goes through ``transition``, is recorded, and becomes a
``task_progress`` event after the caller commits (``flush_events``).
"""
from __future__ import annotations

import logging
import uuid

from flask import current_app
from sqlalchemy import func, select

from mcc.errors import ApiError, Conflict, NotFound, ValidationFailed
from mcc.events import publish
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.github import Issue
from mcc.models.task import Task, TaskTransition
from mcc.models.types import utcnow
from mcc.services import outbox
from mcc.services.lookup import get_scoped
from mcc.services.notifications import notify
from mcc.services.projects import get_project

log = logging.getLogger(__name__)

TRANSITIONS = {
    "pending": ("in_progress", "failed"),
    "in_progress": ("testing", "failed"),
    "testing": ("review", "in_progress", "failed"),
    "review": ("completed", "in_progress", "failed"),
    "completed": (),
    "failed": (),
}
OPEN_STATUSES = ("pending", "in_progress", "testing", "review")
# Where progress stands when a stage begins; report_progress moves it within in_progress.
STAGE_PROGRESS = {"pending": 0, "in_progress": 10, "testing": 70, "review": 85, "completed": 100}
STAGE_ROLE = {"in_progress": "coder", "testing": "tester", "review": "reviewer"}


class AgentBusy(ApiError):
    status, code = 409, "AGENT_BUSY"


class IllegalTransition(ApiError):
    status, code = 409, "INVALID_TRANSITION"


def get_task(project_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    return get_scoped(Task, task_id, project_id, "Task")


def list_tasks(project_id: uuid.UUID, page: int, limit: int, status: str | None = None,
               assigned_to: uuid.UUID | None = None, issue_id: uuid.UUID | None = None) -> tuple[list[Task], int]:
    get_project(project_id)
    query = select(Task).where(Task.project_id == project_id)
    if status:
        query = query.where(Task.status == status)
    if assigned_to:
        query = query.where(Task.assigned_agent_id == assigned_to)
    if issue_id:
        query = query.where(Task.issue_id == issue_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = db.session.scalars(query.order_by(Task.created_at, Task.id).offset((page - 1) * limit).limit(limit))
    return list(items), total


# --- events ---------------------------------------------------------------------------------------

def queue_event(task: Task, message: str) -> None:
    outbox.later(publish, "task_progress", {"task_id": str(task.id), "progress": task.progress,
                                            "status": task.status, "message": message})


# --- the state machine ----------------------------------------------------------------------------

def transition(task: Task, to: str, *, actor_type: str, actor_id=None, actor_name: str | None = None,
               reason: str | None = None) -> Task:
    allowed = TRANSITIONS[task.status]
    if to not in allowed:
        raise IllegalTransition(f"A {task.status} task cannot become {to}.",
                                {"from": task.status, "to": to, "allowed": list(allowed)})
    looping_back = to == "in_progress" and task.status in ("testing", "review")
    db.session.add(TaskTransition(task_id=task.id, from_status=task.status, to_status=to, actor_type=actor_type,
                                  actor_id=actor_id, actor_name=actor_name, reason=reason))
    task.status = to
    task.progress = STAGE_PROGRESS.get(to, task.progress)
    task.stage_started_at = None
    if to == "completed":
        task.completed_at = utcnow()
    if looping_back:
        task.attempts += 1
        task.feedback = reason
        if task.attempts >= current_app.config["MCC_MAX_TASK_ATTEMPTS"]:
            return _exhausted(task, reason)
        task.assigned_agent_id = task.coder_agent_id
    db.session.flush()
    queue_event(task, reason or f"{task.status}")
    log.info("task %s -> %s by %s %s: %s", task.id, to, actor_type, actor_name or actor_id or "", reason or "")
    return task


def _exhausted(task: Task, reason: str | None) -> Task:
    limit = current_app.config["MCC_MAX_TASK_ATTEMPTS"]
    db.session.add(TaskTransition(task_id=task.id, from_status="in_progress", to_status="failed",
                                  actor_type="system", reason=f"{limit} attempts used"))
    task.status, task.stage_started_at = "failed", None
    db.session.flush()
    notify("warning", "task_failed", f"Task failed: {task.title}",
           f"The task went back to its coder {task.attempts} times (MCC_MAX_TASK_ATTEMPTS={limit}). "
           f"Last reason: {reason or 'none given'}", {"task_id": str(task.id)}, task.project_id)
    queue_event(task, f"failed after {task.attempts} attempts: {reason or ''}".strip())
    return task


def set_progress(task: Task, progress: int, message: str) -> Task:
    if task.status != "in_progress":
        raise Conflict(f"Progress is reported while in progress; the task is {task.status}.")
    task.progress = max(STAGE_PROGRESS["in_progress"], min(int(progress), STAGE_PROGRESS["testing"] - 1))
    db.session.flush()
    queue_event(task, message)
    return task


# --- assignment -----------------------------------------------------------------------------------

def agent_load(agent_id: uuid.UUID) -> int:
    return db.session.scalar(select(func.count()).select_from(Task).where(
        Task.assigned_agent_id == agent_id, Task.status.in_(OPEN_STATUSES)))


def least_loaded(project_id: uuid.UUID, agent_type: str) -> Agent | None:
    load = (select(func.count()).select_from(Task)
            .where(Task.assigned_agent_id == Agent.id, Task.status.in_(OPEN_STATUSES)).scalar_subquery())
    return db.session.scalars(select(Agent).where(Agent.project_id == project_id, Agent.type == agent_type,
                                                  Agent.is_active.is_(True))
                              .order_by(load, Agent.created_at, Agent.id).limit(1)).first()


def assign(task: Task, agent_id: uuid.UUID, *, enforce_limit: bool = True) -> Task:
    agent = get_scoped(Agent, agent_id, task.project_id, "Agent")
    if task.status not in OPEN_STATUSES:
        raise IllegalTransition(f"A {task.status} task cannot be assigned.", {"allowed": []})
    if enforce_limit and agent.id != task.assigned_agent_id:
        limit = current_app.config["MCC_AGENT_TASK_LIMIT"]
        if agent_load(agent.id) >= limit:
            raise AgentBusy(f"{agent.name} already has {limit} open task(s) (MCC_AGENT_TASK_LIMIT).",
                            {"agent_id": str(agent.id), "limit": limit})
    task.assigned_agent_id = agent.id
    if agent.type == "coder" or task.coder_agent_id is None and task.status in ("pending", "in_progress"):
        task.coder_agent_id = agent.id
    task.stage_started_at = None
    db.session.flush()
    queue_event(task, f"assigned to {agent.name}")
    return task


def create_task(project_id: uuid.UUID, data: dict, *, enforce_limit: bool = True) -> Task:
    get_project(project_id)
    issue_id = data.get("issue_id")
    if issue_id is not None:
        issue = db.session.get(Issue, issue_id)
        if issue is None or issue.project_id != project_id:
            raise ValidationFailed("The issue does not belong to this project.",
                                   {"issue_id": ["Not an issue of this project."]})
    task = Task(project_id=project_id, title=data["title"], description=data.get("description"),
                priority=data.get("priority") or "medium", issue_id=issue_id,
                definition_of_done=data.get("definition_of_done"))
    db.session.add(task)
    db.session.flush()
    db.session.add(TaskTransition(task_id=task.id, from_status=None, to_status="pending",
                                  actor_type=data.get("_actor_type", "user"), reason="created"))
    if data.get("assigned_to_agent_id"):
        assign(task, data["assigned_to_agent_id"], enforce_limit=enforce_limit)
    db.session.flush()
    queue_event(task, "created")
    return task


def complete_manually(task: Task, user, reason: str | None = None) -> Task:
    """A person marks the task done from any open status (the spec's manual completion), outside
    the agents' pipeline; the transition says it was manual and who did it. 409 once finished."""
    if task.status not in OPEN_STATUSES:
        raise IllegalTransition(f"A {task.status} task cannot become completed.",
                                {"from": task.status, "to": "completed", "allowed": []})
    from_status = task.status
    db.session.add(TaskTransition(task_id=task.id, from_status=from_status, to_status="completed", actor_type="user",
                                  actor_id=user.id, actor_name=user.username,
                                  reason=f"completed manually by {user.username}" + (f": {reason}" if reason else "")))
    task.status, task.progress, task.stage_started_at = "completed", 100, None
    task.completed_at = utcnow()
    task.assigned_agent_id = None
    db.session.flush()
    queue_event(task, f"completed manually by {user.username}")
    log.info("task %s %s -> completed manually by %s", task.id, from_status, user.username)
    return task


def summary(task_id: uuid.UUID | None) -> dict | None:
    if task_id is None:
        return None
    task = db.session.get(Task, task_id)
    return {"id": str(task.id), "title": task.title} if task else None


def require_open(task: Task) -> None:
    if task.status not in OPEN_STATUSES:
        raise NotFound("The task is finished.")
