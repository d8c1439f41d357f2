"""One factory per model, and helpers to act as a user over HTTP."""
from __future__ import annotations

import itertools
import uuid

from mcc.extensions import db

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def make_user(role: str = "operator", username: str | None = None, password: str = PASSWORD):
    from mcc.services.users import create_user

    user = create_user(username or f"{role}{next(_counter)}", password, role)
    db.session.commit()
    return user


def login(client, username: str, password: str = PASSWORD, **environ) -> dict:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password},
                           environ_base=environ)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def auth_headers(client, user) -> dict:
    tokens = login(client, user.username)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def make_project(name: str | None = None, github_repo: str | None = None, is_active: bool = True, **fields):
    from mcc.models.project import Project

    n = next(_counter)
    project = Project(name=name or f"Project {n}", github_repo=github_repo or f"octo-org/repo-{n}",
                      is_active=is_active, **fields)
    db.session.add(project)
    db.session.commit()
    return project


def make_agent(project, name: str | None = None, type: str = "coder", model: str = "anthropic/claude-3.5-sonnet",
               temperature: float = 0.2, max_tokens: int = 4096, **fields):
    from mcc.models.agent import Agent

    agent = Agent(project_id=project.id, name=name or f"{type.title()} {next(_counter)}", type=type, model=model,
                  temperature=temperature, max_tokens=max_tokens, **fields)
    db.session.add(agent)
    db.session.commit()
    return agent


def make_issue(project, number: int | None = None, state: str = "open", title: str | None = None, **fields):
    from mcc.models.github import Issue

    n = number if number is not None else next(_counter)
    issue = Issue(project_id=project.id, number=n, state=state, title=title or f"Issue #{n}", **fields)
    db.session.add(issue)
    db.session.commit()
    return issue


def make_conversation(project, agents=(), title: str | None = None, type: str = "general", status: str = "active",
                      issue=None, **fields):
    from mcc.models.conversation import Conversation

    conversation = Conversation(project_id=project.id, title=title or f"Conversation {next(_counter)}", type=type,
                                status=status, issue_id=issue.id if issue is not None else None, **fields)
    conversation.agents = list(agents)
    db.session.add(conversation)
    db.session.commit()
    return conversation


def make_message(conversation, content: str | None = None, agent=None, user=None, author_type: str | None = None,
                 tokens_in: int = 0, tokens_out: int = 0, cost_usd="0", created_at=None, reply_to=None,
                 commit: bool = True, **fields):
    """A message; the author type follows from ``agent``/``user`` unless given (``system`` otherwise)."""
    from decimal import Decimal

    from mcc.models.conversation import Message

    if author_type is None:
        author_type = "agent" if agent is not None else "user" if user is not None else "system"
    if created_at is not None:
        fields["created_at"] = created_at
    message = Message(conversation_id=conversation.id, author_type=author_type,
                      agent_id=agent.id if agent is not None else None,
                      user_id=user.id if user is not None else None,
                      content=content or f"message {next(_counter)}", tokens_in=tokens_in, tokens_out=tokens_out,
                      cost_usd=Decimal(str(cost_usd)), reply_to_id=reply_to.id if reply_to is not None else None,
                      **fields)
    db.session.add(message)
    if commit:
        db.session.commit()
    return message


def make_spend(project, agent=None, cost_usd="0", created_at=None, commit: bool = True):
    """One LLM call in the cost ledger, as the turn engine records it (the source of every spend figure)."""
    from decimal import Decimal

    from mcc.models.turn import LedgerEntry

    fields = {"created_at": created_at} if created_at is not None else {}
    entry = LedgerEntry(project_id=project.id, agent_id=agent.id if agent is not None else None,
                        model="anthropic/claude-3.5-sonnet", cost_usd=Decimal(str(cost_usd)), **fields)
    db.session.add(entry)
    if commit:
        db.session.commit()
    return entry


def assert_error(response, status: int, code: str) -> dict:
    """The one error format: status, JSON, exactly code/message/details/request_id, the request id echoed."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def project_url(project, collection: str, item=None, suffix: str = "") -> str:
    """``/api/v1/projects/{project}/{collection}[/{item}]{suffix}``, from objects or ids."""
    def id_of(thing):
        return thing if isinstance(thing, (str, uuid.UUID)) else thing.id
    url = f"/api/v1/projects/{id_of(project)}/{collection}"
    if item is not None:
        url += f"/{id_of(item)}"
    return url + suffix
