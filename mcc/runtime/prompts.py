"""What an agent sees: its instructions and the conversation since its last reset, trimmed to fit."""
from __future__ import annotations

import re

from sqlalchemy import select

from mcc.extensions import db
from mcc.llm.gateway import estimate_tokens
from mcc.models.agent import Agent
from mcc.models.auth import User
from mcc.models.conversation import Conversation, Message
from mcc.models.project import Project

MENTION = re.compile(r'@"([^"\n]{1,100})"|@([A-Za-z0-9_.\-]{1,100})')


def mentioned_agents(text: str, agents: list[Agent], exclude: Agent | None = None) -> list[Agent]:
    """Agents named in ``text`` by @name, @"Full Name" or @type, in order of first mention."""
    found: list[Agent] = []
    active = [a for a in agents if a.is_active and a is not exclude and (exclude is None or a.id != exclude.id)]
    for match in MENTION.finditer(text or ""):
        name = (match.group(1) or match.group(2)).strip().rstrip(".,:;!?").lower()
        agent = next((a for a in active if a.name.lower() == name), None)
        if agent is None:
            agent = next((a for a in active if a.type == name), None)
        if agent is not None and agent not in found:
            found.append(agent)
    return found


def system_prompt(agent: Agent, project: Project, conversation: Conversation, rules_text: str | None) -> str:
    others = ", ".join(f"@\"{a.name}\" ({a.type})" for a in conversation.agents if a.id != agent.id) or "none"
    parts = [
        f"You are {agent.name}, the {agent.type} agent of the project {project.name!r} "
        f"(GitHub repository {project.github_repo}), working in the conversation {conversation.title!r}.",
        f"Other agents here: {others}. Mention one with @\"Name\" to hand the work over to it.",
    ]
    if agent.system_prompt:
        parts.append(agent.system_prompt)
    if rules_text:
        parts.append(f"Project rules ({agent.rules_file_path}):\n{rules_text}")
    return "\n\n".join(parts)


def _as_chat_message(row, agent: Agent) -> dict:
    """One stored message as the agent sees it: its own replies as the assistant, the rest as
    the user, each labelled with who said it."""
    if row.author_type == "agent" and row.agent_id == agent.id:
        return {"role": "assistant", "content": row.content}
    if row.author_type == "agent":
        who = f"{row.agent_name} ({row.agent_type})" if row.agent_name is not None else "another agent"
        return {"role": "user", "content": f"[{who}]: {row.content}"}
    if row.author_type == "system":
        return {"role": "user", "content": f"[MCC system notice]: {row.content}"}
    who = row.username if row.username is not None else "a user"
    return {"role": "user", "content": f"[{who}]: {row.content}"}


def build_messages(agent: Agent, project: Project, conversation: Conversation, up_to_seq: int | None,
                   context_tokens: int, rules_text: str | None = None) -> list[dict]:
    """System prompt + the conversation since the agent's reset, newest kept when trimming."""
    system = {"role": "system", "content": system_prompt(agent, project, conversation, rules_text)}
    budget = context_tokens - agent.max_tokens - estimate_tokens(system["content"])
    # The columns a prompt needs, authors' names joined in: one read, no ORM objects per message.
    query = (select(Message.author_type, Message.agent_id, Message.content, Agent.name.label("agent_name"),
                    Agent.type.label("agent_type"), User.username)
             .outerjoin(Agent, Agent.id == Message.agent_id).outerjoin(User, User.id == Message.user_id)
             .where(Message.conversation_id == conversation.id))
    if agent.memory_reset_at is not None:
        query = query.where(Message.created_at > agent.memory_reset_at)
    if up_to_seq is not None:
        query = query.where(Message.seq <= up_to_seq)
    history: list[dict] = []
    # Newest first, stop when the budget is spent: a long conversation costs one bounded read.
    for row in db.session.execute(query.order_by(Message.seq.desc()).limit(500)):
        chat = _as_chat_message(row, agent)
        cost = estimate_tokens(chat["content"]) + 4
        if cost > budget:
            break
        budget -= cost
        history.append(chat)
    history.reverse()
    return [system, *history]
