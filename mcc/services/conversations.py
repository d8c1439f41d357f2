"""Conversations: who takes part, their state, and the messages in them."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select

from mcc.errors import Conflict, ValidationFailed
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.conversation import Conversation, Message
from mcc.models.github import Issue
from mcc.models.types import utcnow
from mcc.runtime import cancellation
from mcc.runtime.engine import cancel_waiting_turns, release_held, schedule_for_human_message
from mcc.services.budget import blocked_agents
from mcc.services.lookup import get_scoped
from mcc.services.projects import get_project


def get_conversation(project_id: uuid.UUID | None, conversation_id: uuid.UUID) -> Conversation:
    return get_scoped(Conversation, conversation_id, project_id, "Conversation")


def _project_agents(project_id: uuid.UUID, agent_ids: list[uuid.UUID], field: str = "agent_ids") -> list[Agent]:
    """The agents, in the order given; any id that is not an agent of this project is a 422 naming ``field``."""
    unique = list(dict.fromkeys(agent_ids))
    found = {a.id: a for a in db.session.scalars(
        select(Agent).where(Agent.id.in_(unique), Agent.project_id == project_id))}
    missing = [str(a) for a in unique if a not in found]
    if missing:
        raise ValidationFailed("Some agents do not belong to this project.",
                               {field: [f"Not an agent of this project: {m}" for m in missing]})
    return [found[a] for a in unique]


def list_conversations(project_id: uuid.UUID, page: int, limit: int, type_: str | None = None,
                       status: str | None = None) -> tuple[list[Conversation], int]:
    get_project(project_id)
    query = select(Conversation).where(Conversation.project_id == project_id)
    if type_:
        query = query.where(Conversation.type == type_)
    if status:
        query = query.where(Conversation.status == status)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = db.session.scalars(query.order_by(Conversation.updated_at.desc(), Conversation.id)
                               .offset((page - 1) * limit).limit(limit))
    return list(items), total


def create_conversation(project_id: uuid.UUID, user_id: uuid.UUID | None, data: dict) -> Conversation:
    get_project(project_id)
    issue_id = data.get("issue_id")
    if issue_id is not None:
        issue = db.session.get(Issue, issue_id)
        if issue is None or issue.project_id != project_id:
            raise ValidationFailed("The issue does not belong to this project.",
                                   {"issue_id": ["Not an issue of this project."]})
    conversation = Conversation(project_id=project_id, title=data["title"], type=data.get("type", "general"),
                                issue_id=issue_id, created_by_id=user_id)
    conversation.agents = _project_agents(project_id, data.get("agent_ids") or [])
    db.session.add(conversation)
    db.session.flush()
    return conversation


def update_conversation(project_id: uuid.UUID, conversation_id: uuid.UUID, data: dict) -> Conversation:
    conversation = get_conversation(project_id, conversation_id)
    if "title" in data:
        conversation.title = data["title"]
    if "status" in data:
        conversation.status = data["status"]
        db.session.flush()
        if data["status"] == "completed":
            cancel_waiting_turns(conversation_id=conversation.id, why="a person completed the conversation")
        else:
            # Reopening a paused conversation is a resume: the turns held by the pause run again
            # (the caller kicks the conversation after the commit).
            release_held(conversation.id)
    db.session.flush()
    return conversation


def set_paused(project_id: uuid.UUID, conversation_id: uuid.UUID, paused: bool) -> Conversation:
    """Pause: turns not yet calling the LLM wait; a call in flight is closed and its turn ends
    ``cancelled``. Resume: the held turns are queued again, in order.

    The caller commits, then kicks the conversation on resume.
    """
    conversation = get_conversation(project_id, conversation_id)
    if conversation.status == "completed":
        raise Conflict("The conversation is completed; reopen it (PATCH status=active) first.")
    conversation.status = "paused" if paused else "active"
    db.session.flush()
    if paused:
        cancellation.stop_running("the conversation was paused", kind=cancellation.PAUSE,
                                  conversation_id=conversation.id)
    else:
        release_held(conversation.id)
    return conversation


def add_agent(project_id: uuid.UUID, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> Conversation:
    conversation = get_conversation(project_id, conversation_id)
    agent = _project_agents(project_id, [agent_id], field="agent_id")[0]
    if agent not in conversation.agents:
        conversation.agents.append(agent)
    db.session.flush()
    return conversation


def remove_agent(project_id: uuid.UUID, conversation_id: uuid.UUID, agent_id: uuid.UUID) -> Conversation:
    conversation = get_conversation(project_id, conversation_id)
    remaining = [a for a in conversation.agents if a.id != agent_id]
    if len(remaining) == len(conversation.agents):
        raise ValidationFailed("That agent is not in this conversation.", {"agent_id": ["Not a participant."]})

    conversation.agents = remaining
    # A removed agent no longer answers here: drop its turns still waiting in this conversation.
    cancel_waiting_turns(agent_id=agent_id, conversation_id=conversation.id,
                         why="the agent was removed from the conversation")
    db.session.flush()
    return conversation


def post_message(project_id: uuid.UUID | None, conversation_id: uuid.UUID, user_id: uuid.UUID, content: str,
                 reply_to: uuid.UUID | None = None) -> tuple[Message, list]:
    """Store a person's message and queue the agent turns it calls for.

    REST and the socket ``send_message`` both come here; the caller commits, then calls
    ``engine.announce(message, queued)``.
    """
    conversation = get_conversation(project_id, conversation_id)
    if conversation.status == "completed":
        raise Conflict("The conversation is completed; reopen it (PATCH status=active) to post.")
    if reply_to is not None:
        parent = db.session.scalar(select(Message.conversation_id).where(Message.id == reply_to))
        if parent != conversation.id:
            raise ValidationFailed("reply_to must be a message of this conversation.",
                                   {"reply_to": ["Not a message of this conversation."]})
    message = Message(conversation_id=conversation.id, author_type="user", user_id=user_id, content=content,
                      reply_to_id=reply_to)
    db.session.add(message)
    conversation.updated_at = utcnow()
    db.session.flush()
    queued = schedule_for_human_message(message)
    # Stored either way; the answer says which responders a budget block will stop.
    message.blocked_agents = blocked_agents([t.agent_id for t in queued], conversation.project_id) if queued else []
    return message, queued


def message_page(conversation_id: uuid.UUID, before: uuid.UUID | None, limit: int) -> tuple[list[Message], bool]:
    """Newest first. Keyset on (conversation_id, seq): the cost does not grow with history."""
    # The range (not equality) on conversation_id keeps PostgreSQL on ix_messages_conversation_seq:
    # with "=" it drops conversation_id from the ORDER BY and may walk the primary key backwards
    # through every newer message of other conversations (bench/message_pages.py, phases B and C).
    query = select(Message).where(Message.conversation_id >= conversation_id,
                                  Message.conversation_id <= conversation_id)
    if before is not None:
        cursor = db.session.scalar(
            select(Message.seq).where(Message.id == before, Message.conversation_id == conversation_id))
        if cursor is None:
            raise ValidationFailed("before must be the id of a message of this conversation.",
                                   {"before": ["Unknown message."]})
        query = query.where(Message.seq < cursor)
    rows = list(db.session.scalars(query.order_by(Message.conversation_id.desc(), Message.seq.desc())
                                   .limit(limit + 1)))
    return rows[:limit], len(rows) > limit
