"""/projects/{project_id}/tasks and the issue pipeline entry points (start, tasks of an issue)."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint
from sqlalchemy import select

from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.github import Issue, PullRequest
from mcc.models.task import TaskTransition
from mcc.schemas.common import PageQuerySchema, page_of
from mcc.schemas.conversations import ConversationSchema
from mcc.schemas.tasks import (TaskAssignSchema, TaskCompleteSchema, TaskCreateSchema, TaskDetailSchema,
                               TaskPageSchema, TaskQueryArgsSchema, TaskSchema)
from mcc.security import requires_role
from mcc.services import outbox, reports, tasks as service
from mcc.services.lookup import get_scoped
from mcc.pipeline import stages

URL_PREFIX = "/projects/<uuid:project_id>"
blp = Blueprint("tasks", __name__, description="Tasks and the issue -> plan -> code -> test -> review pipeline")


def present(items: list, history: bool = False) -> list:
    """Attach what the task shape shows: its agent, issue, pull request, spend (and history)."""
    spent = reports.spent_on_tasks([task.id for task in items])
    for task in items:
        task.spent = spent.get(task.id, 0.0)
        task.assigned_to = db.session.get(Agent, task.assigned_agent_id) if task.assigned_agent_id else None
        task.issue = db.session.get(Issue, task.issue_id) if task.issue_id else None
        task.pr = db.session.scalars(select(PullRequest).where(PullRequest.task_id == task.id)
                                     .order_by(PullRequest.created_at.desc())).first()
        if history:
            task.history = db.session.scalars(select(TaskTransition).where(TaskTransition.task_id == task.id)
                                              .order_by(TaskTransition.created_at)).all()
    return items


def _commit() -> None:
    db.session.commit()
    outbox.flush()


@blp.route("/tasks")
class Tasks(MethodView):
    @blp.arguments(TaskQueryArgsSchema, location="query")
    @blp.response(200, TaskPageSchema)
    def get(self, args, project_id):
        """List tasks (`status`, `assigned_to`, `issue_id`)"""
        items, total = service.list_tasks(project_id, args["page"], args["limit"], args.get("status"),
                                          args.get("assigned_to"), args.get("issue_id"))
        return page_of(present(items), total, args["page"], args["limit"])

    @requires_role("operator")
    @blp.arguments(TaskCreateSchema)
    @blp.response(201, TaskSchema)
    def post(self, body, project_id):
        """Create a task by hand (operator); an assigned agent starts it when free"""
        task = service.create_task(project_id, body)
        stages.dispatch(project_id)
        _commit()
        return present([task])[0]


@blp.route("/tasks/<uuid:task_id>")
class TaskById(MethodView):
    @blp.response(200, TaskDetailSchema)
    def get(self, project_id, task_id):
        """Get a task with its status history"""
        return present([service.get_task(project_id, task_id)], history=True)[0]


@blp.route("/tasks/<uuid:task_id>/assign")
class TaskAssign(MethodView):
    @requires_role("operator")
    @blp.arguments(TaskAssignSchema)
    @blp.response(200, TaskSchema)
    def post(self, body, project_id, task_id):
        """Assign a task to an agent of the project (operator)

        An agent already at MCC_AGENT_TASK_LIMIT open tasks: 409 AGENT_BUSY. The agent starts the
        task's current stage when free.
        """
        task = service.assign(service.get_task(project_id, task_id), body["agent_id"])
        stages.dispatch(project_id)
        _commit()
        return present([task])[0]


@blp.route("/tasks/<uuid:task_id>/complete")
class TaskComplete(MethodView):
    @requires_role("operator")
    @blp.arguments(TaskCompleteSchema)
    @blp.response(200, TaskSchema)
    def post(self, body, project_id, task_id):
        """Mark a task as completed, manually (operator)

        From any open status (pending, in progress, testing, review); the task's history records a
        manual completion and who did it. A completed or failed task: 409 INVALID_TRANSITION.
        """
        task = service.complete_manually(service.get_task(project_id, task_id), current_user, body.get("reason"))
        stages.dispatch(project_id)  # its agent is free for the next task
        _commit()
        return present([task])[0]


@blp.route("/issues/<uuid:issue_id>/start")
class IssueStart(MethodView):
    @requires_role("operator")
    @blp.response(202, ConversationSchema)
    def post(self, project_id, issue_id):
        """Start work on an issue (operator): the architect plans it in a new `issue` conversation

        No active architect: 422. Already started: 409 with the existing conversation id.
        """
        conversation = stages.start_issue(project_id, issue_id, current_user)
        _commit()
        return conversation


@blp.route("/issues/<uuid:issue_id>/tasks")
class IssueTasks(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, TaskPageSchema)
    def get(self, args, project_id, issue_id):
        """Tasks created from an issue"""
        get_scoped(Issue, issue_id, project_id, "Issue")
        items, total = service.list_tasks(project_id, args["page"], args["limit"], issue_id=issue_id)
        return page_of(present(items), total, args["page"], args["limit"])
