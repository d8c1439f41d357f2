"""The task pipeline: issue -> architect plan -> tasks -> coder -> tester -> reviewer -> human.

Everything runs as ordinary agent turns (so pause, pause-all, budgets and runaway limits apply):
this module only decides which agent's turn to queue next and with what instructions. A stage
starts when its agent is free (no other started stage); otherwise the task waits and starts
when the agent frees up (``dispatch``).
"""
from __future__ import annotations

import logging
import uuid

from flask import current_app
from sqlalchemy import select

from mcc.errors import ApiError, Conflict, NotFound, ValidationFailed
from mcc.extensions import db
from mcc.github.auth import client_for
from mcc.models.agent import Agent
from mcc.models.conversation import Conversation, Message
from mcc.models.github import Issue
from mcc.models.task import Task
from mcc.models.turn import Turn
from mcc.models.types import as_utc, utcnow
from mcc.services import outbox, tasks
from mcc.services.notifications import notify
from mcc.services.projects import get_project
from mcc.runtime.feed import publish_message
from mcc.runtime.scheduling import kick
from mcc.runtime.tools import specs_for as agent_tools

log = logging.getLogger(__name__)

STAGE_INSTRUCTIONS = {
    "in_progress": (
        "Implement this task. Read the repository with `list_files` and `read_file`, report progress "
        "with `report_progress`, and when done call `submit_changes` with every file you change (full "
        "contents). That opens or updates the pull request and hands the task to testing."),
    "testing": (
        "Test this task's pull request: read it with `read_pull_request` (diff and checks), then call "
        "`report_test_result` with passed=true or passed=false and a summary the coder can act on."),
    "review": (
        "Review this task's pull request: read it with `read_pull_request`, then call `submit_review` "
        "with verdict approve or request_changes and a summary. Approval leaves the merge to a person."),
}

# The tool that ends each stage. A turn that ends without it leaves the stage open.
DECISIVE_TOOL = {"in_progress": "submit_changes", "testing": "report_test_result", "review": "submit_review"}


def _announce(message: Message) -> None:
    outbox.later(publish_message, message)


def _kick(conversation_id: uuid.UUID) -> None:
    outbox.later(kick, conversation_id)


def _queue_turn(conversation: Conversation, agent: Agent, content: str, task: Task | None,
                meta: dict | None = None) -> Turn:
    """A system message addressed to ``agent`` and the agent's turn answering it."""
    if agent not in conversation.agents:
        conversation.agents.append(agent)
    message = Message(conversation_id=conversation.id, author_type="system", content=content, meta=meta)
    db.session.add(message)
    db.session.flush()
    turn = Turn(conversation_id=conversation.id, agent_id=agent.id, chain_id=message.id, depth=1,
                reply_to_message_id=message.id, task_id=task.id if task else None)
    db.session.add(turn)
    db.session.flush()
    _announce(message)
    _kick(conversation.id)
    return turn


# --- issue -> architect ---------------------------------------------------------------------------

def start_issue(project_id: uuid.UUID, issue_id: uuid.UUID, user) -> Conversation:
    """Open an `issue` conversation with the project's architect and queue its planning turn."""
    project = get_project(project_id)
    issue = db.session.get(Issue, issue_id)
    if issue is None or issue.project_id != project.id:
        raise NotFound("Issue not found.", {"id": str(issue_id)})
    existing = db.session.scalars(select(Conversation).where(
        Conversation.issue_id == issue.id, Conversation.type == "issue",
        Conversation.status != "completed")).first()
    if existing is not None:
        raise Conflict(f"Work on issue #{issue.number} has already started.",
                       {"conversation_id": str(existing.id)})
    architect = db.session.scalars(select(Agent).where(
        Agent.project_id == project.id, Agent.type == "architect", Agent.is_active.is_(True))
        .order_by(Agent.created_at)).first()
    if architect is None:
        raise ValidationFailed("The project has no active architect to plan this issue.",
                               {"agent_type": ["No active agent of type architect."]})
    conversation = Conversation(project_id=project.id, title=f"#{issue.number} {issue.title}"[:300], type="issue",
                                issue_id=issue.id, created_by_id=user.id if user else None)
    conversation.agents = [architect]
    db.session.add(conversation)
    db.session.flush()
    _queue_turn(conversation, architect,
                f"GitHub issue #{issue.number}: {issue.title}\n\n{issue.body or '(no description)'}\n\n"
                "Plan this issue: break it into tasks with `create_tasks` (title, description, priority, "
                "definition_of_done, assignee_type — usually coder). Keep each task small and testable.",
                None, {"issue_id": str(issue.id), "kind": "issue_start"})
    return conversation


def create_planned_tasks(conversation: Conversation, planned: list[dict], architect: Agent) -> list[Task]:
    created = []
    for item in planned:
        task = tasks.create_task(conversation.project_id, {
            "title": item["title"], "description": item.get("description"), "priority": item.get("priority"),
            "definition_of_done": item.get("definition_of_done"), "issue_id": conversation.issue_id,
            "_actor_type": "agent"}, enforce_limit=False)
        agent = tasks.least_loaded(conversation.project_id, item.get("assignee_type") or "coder")
        if agent is not None:
            tasks.assign(task, agent.id, enforce_limit=False)
        created.append(task)
    dispatch(conversation.project_id)
    return created


# --- stages ---------------------------------------------------------------------------------------

def _task_conversation(task: Task) -> Conversation:
    if task.conversation_id is not None:
        conversation = db.session.get(Conversation, task.conversation_id)
        if conversation is not None:
            if conversation.status == "completed":
                conversation.status = "active"
            return conversation
    conversation = Conversation(project_id=task.project_id, title=f"Task: {task.title}"[:300], type="task",
                                issue_id=task.issue_id)
    conversation.agents = []
    db.session.add(conversation)
    db.session.flush()
    task.conversation_id = conversation.id
    return conversation


def _agent_busy(agent_id: uuid.UUID, except_task: uuid.UUID) -> bool:
    return db.session.scalar(select(Task.id).where(
        Task.assigned_agent_id == agent_id, Task.id != except_task, Task.stage_started_at.is_not(None),
        Task.status.in_(("in_progress", "testing", "review"))).limit(1)) is not None


def _brief(task: Task) -> str:
    parts = [f"Task: {task.title} (priority {task.priority}, attempt {task.attempts + 1})"]
    if task.description:
        parts.append(task.description)
    if task.definition_of_done:
        parts.append(f"Definition of done: {task.definition_of_done}")
    if task.feedback and task.status == "in_progress":
        parts.append(f"Feedback to address from the last round:\n{task.feedback}")
    if task.branch:
        parts.append(f"Branch: {task.branch}")
    parts.append(STAGE_INSTRUCTIONS[task.status])
    return "\n\n".join(parts)


def _start_stage(task: Task, agent: Agent) -> None:
    if task.status == "pending":
        tasks.transition(task, "in_progress", actor_type="system", reason=f"{agent.name} starts")
        if task.status != "in_progress":
            return
    conversation = _task_conversation(task)
    task.stage_started_at = utcnow()
    _queue_turn(conversation, agent, _brief(task), task,
                {"task_id": str(task.id), "stage": task.status, "round": _round(task)})


def _round(task: Task) -> str:
    """Which start of the task's current stage a turn belongs to (a reassignment starts a new one)."""
    return as_utc(task.stage_started_at).isoformat()


def stage_turn_ended(turn: Turn, agent: Agent, failure: str | None = None) -> None:
    """A turn that was to move a task's stage has ended or was cancelled (the caller commits).

    If the stage is still open with this agent (its decisive tool was not called, or the turn
    failed), the agent is reminded and gets another turn, at most MCC_STAGE_REMINDERS times; a
    failed or cancelled turn, or one more turn without the tool, hands the task to a person
    instead, so the agent is free again and nobody waits on a task that no turn will move.
    """
    if turn.task_id is None:
        return
    # Locked: a person may be reassigning the task right now; their decision must not be overwritten.
    task = db.session.get(Task, turn.task_id, with_for_update=True, populate_existing=True)
    if (task is None or task.status not in DECISIVE_TOOL or task.assigned_agent_id != agent.id
            or task.stage_started_at is None):
        return  # the stage moved on (or was never this agent's)
    prompt = db.session.scalar(select(Message).where(Message.id == turn.reply_to_message_id))
    meta = (prompt.meta or {}) if prompt is not None else {}
    if (meta.get("task_id") != str(task.id) or meta.get("stage") != task.status
            or meta.get("round") != _round(task)):
        return  # a hand-off, a person's question, or a turn of an earlier start of this stage
    tool = DECISIVE_TOOL[task.status]
    reminders = int(meta.get("reminder") or 0)
    conversation = db.session.get(Conversation, turn.conversation_id)
    if failure is None and not agent.is_active:
        failure = f"{agent.name} was deactivated"
    elif failure is None and conversation is not None and conversation.status == "completed":
        failure = "a person completed the task conversation"
    elif failure is None and tool not in {spec["function"]["name"] for spec in agent_tools(agent)}:
        failure = f"{agent.name} ({agent.type}) has no `{tool}` tool"
    if failure is None and reminders < current_app.config["MCC_STAGE_REMINDERS"]:
        _queue_turn(conversation, agent,
                    f"{agent.name}, your turn ended without `{tool}`, so task '{task.title}' is still in "
                    f"{task.status}. Finish this stage now: call `{tool}`.", task,
                    {"task_id": str(task.id), "stage": task.status, "round": _round(task),
                     "reminder": reminders + 1})
        return
    reason = failure or f"{agent.name} ended {reminders + 1} turns without calling `{tool}`"
    _hand_to_person(task, agent, conversation, reason)


def _hand_to_person(task: Task, agent: Agent, conversation: Conversation | None, reason: str) -> None:
    task.assigned_agent_id, task.stage_started_at = None, None
    text = (f"Task '{task.title}' stopped in {task.status}: {reason}. It waits for a person: assign it "
            "again to restart the stage, or complete or fail it.")
    if conversation is not None:  # told where the work happened, without reopening it
        note = Message(conversation_id=conversation.id, author_type="system", content=text,
                       meta={"task_id": str(task.id), "reason": "stage_stalled"})
        db.session.add(note)
        db.session.flush()
        _announce(note)
    notify("warning", "task_stalled", f"Task stalled: {task.title}", text,
           {"task_id": str(task.id), "agent_id": str(agent.id), "status": task.status}, task.project_id)
    tasks.queue_event(task, text)
    log.warning("task %s handed to a person in %s: %s", task.id, task.status, reason)
    dispatch(task.project_id)  # the agent's next waiting task may start


def dispatch(project_id: uuid.UUID) -> int:
    """Start every waiting stage whose agent is free; tasks of a busy agent wait their turn."""
    started = 0
    waiting = db.session.scalars(select(Task).where(
        Task.project_id == project_id, Task.stage_started_at.is_(None), Task.assigned_agent_id.is_not(None),
        Task.status.in_(("pending", "in_progress", "testing", "review")))
        .order_by(Task.created_at, Task.id).with_for_update(skip_locked=True)).all()
    claimed: set[uuid.UUID] = set()
    for task in waiting:
        agent = db.session.get(Agent, task.assigned_agent_id)
        if agent is None or not agent.is_active or agent.id in claimed or _agent_busy(agent.id, task.id):
            continue
        claimed.add(agent.id)
        _start_stage(task, agent)
        started += 1
    db.session.flush()
    return started


def hand_to_role(task: Task, role: str) -> None:
    """After a task reaches testing or review: the least-loaded agent of that role takes it."""
    agent = tasks.least_loaded(task.project_id, role)
    if agent is None:
        task.assigned_agent_id = None
        conversation = _task_conversation(task)
        note = Message(conversation_id=conversation.id, author_type="system",
                       content=f"Task '{task.title}' is in {task.status}, and the project has no active {role}: "
                               "it waits for a person.", meta={"task_id": str(task.id), "reason": f"no_{role}"})
        db.session.add(note)
        db.session.flush()
        _announce(note)
        return
    tasks.assign(task, agent.id, enforce_limit=False)


def advance(task: Task, to: str, *, actor: Agent | None = None, user=None, reason: str | None = None) -> Task:
    """Move a task along the pipeline and hand it to whoever acts next."""
    if actor is not None:
        tasks.transition(task, to, actor_type="agent", actor_id=actor.id, actor_name=actor.name, reason=reason)
    else:
        tasks.transition(task, to, actor_type="user" if user else "system", actor_id=getattr(user, "id", None),
                         actor_name=getattr(user, "username", None), reason=reason)
    if task.status in ("testing", "review"):
        hand_to_role(task, "tester" if task.status == "testing" else "reviewer")
    if task.status in ("completed", "failed"):
        task.assigned_agent_id = None if task.status == "completed" else task.assigned_agent_id
    dispatch(task.project_id)
    return task


def await_human(task: Task, summary: str) -> None:
    """The reviewer approved: the task stays in review until a person approves the merge."""
    task.assigned_agent_id = None
    task.stage_started_at = None
    tasks.queue_event(task, f"reviewer approved; waiting for a person to approve the merge: {summary}")
    db.session.flush()
    dispatch(task.project_id)


# --- a person's decision on the pull request ------------------------------------------------------

def on_pull_request_merged(pr, user) -> None:
    """The merge completes the task; the issue closes on GitHub once all its tasks are completed."""
    task = db.session.get(Task, pr.task_id) if pr.task_id else None
    if task is None or task.status != "review":
        return
    advance(task, "completed", user=user, reason=f"pull request #{pr.number} merged")
    if task.issue_id is None:
        return
    open_tasks = db.session.scalar(select(Task.id).where(Task.issue_id == task.issue_id,
                                                         Task.status != "completed").limit(1))
    if open_tasks is None:
        _close_issue(task)


def _close_issue(task: Task) -> None:
    issue = db.session.get(Issue, task.issue_id)
    project = get_project(task.project_id)
    try:
        client_for(project).request("PATCH", f"/repos/{project.github_repo}/issues/{issue.number}",
                                    json={"state": "closed", "state_reason": "completed"})
    except ApiError as exc:  # the merge stands; a person closes the issue
        notify("warning", "github_failure", f"Could not close issue #{issue.number}",
               f"All tasks of #{issue.number} are completed but GitHub refused to close it: {exc.message}",
               {"issue_id": str(issue.id)}, project.id)
        return
    issue.state = "closed"
    db.session.flush()


def on_pull_request_rejected(pr, user, feedback: str) -> None:
    """A person's rejection sends the task back to its coder with the feedback (a loop back)."""
    task = db.session.get(Task, pr.task_id) if pr.task_id else None
    if task is None or task.status not in ("testing", "review"):
        return
    advance(task, "in_progress", user=user, reason=f"rejected by {getattr(user, 'username', 'a person')}: "
                                                   f"{feedback}")
