"""Conversations and messages over REST: filters, cursor pages, posting, pause/resume, participants."""
from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from mcc.extensions import db
from tests.factories import (assert_error, auth_headers, make_agent, make_conversation, make_issue, make_message,
                             make_project, make_user, project_url)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CONVERSATION_FIELDS = {"id", "project_id", "title", "type", "status", "issue_id", "agents", "created_at",
                       "updated_at"}
MESSAGE_FIELDS = {"id", "conversation_id", "author_type", "agent", "user", "content", "tokens_in", "tokens_out",
                  "cost_usd", "created_at", "reply_to", "metadata"}


def url(project, conversation=None, suffix: str = "") -> str:
    return project_url(project, "conversations", conversation, suffix)


@pytest.fixture
def operator_user():
    return make_user("operator")


@pytest.fixture
def operator(client, operator_user):
    return auth_headers(client, operator_user)


@pytest.fixture
def project():
    return make_project()


def fill(conversation, count: int, **kwargs) -> list:
    """``count`` messages, oldest first, one commit."""
    messages = [make_message(conversation, content=f"m{i}", commit=False, **kwargs) for i in range(count)]
    db.session.commit()
    return messages


# --- create ---------------------------------------------------------------------------------------------

def test_create_conversation_answers_its_fields_and_agents_in_order(client, operator, project):
    architect = make_agent(project, name="Senior Architect", type="architect")
    coder = make_agent(project, name="Coder", type="coder")
    issue = make_issue(project)
    body = {"title": "Design the API", "type": "issue", "agent_ids": [str(coder.id), str(architect.id)],
            "issue_id": str(issue.id)}
    response = client.post(url(project), json=body, headers=operator)
    assert response.status_code == 201, response.get_json()
    conversation = response.get_json()
    assert set(conversation) == CONVERSATION_FIELDS
    assert conversation["title"] == "Design the API"
    assert conversation["type"] == "issue"
    assert conversation["status"] == "active"
    assert conversation["issue_id"] == str(issue.id)
    assert conversation["project_id"] == str(project.id)
    assert conversation["agents"] == [{"id": str(coder.id), "name": "Coder", "type": "coder"},
                                      {"id": str(architect.id), "name": "Senior Architect", "type": "architect"}]
    assert ISO_Z.match(conversation["created_at"])

    fetched = client.get(url(project, conversation["id"]), headers=operator).get_json()
    assert {k: fetched[k] for k in CONVERSATION_FIELDS} == conversation
    assert fetched["messages"] == [] and fetched["has_more"] is False


def test_create_defaults_to_a_general_conversation_without_agents(client, operator, project):
    response = client.post(url(project), json={"title": "Chat"}, headers=operator)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["type"], body["agents"], body["issue_id"]) == ("general", [], None)


def test_duplicate_agent_ids_count_once(client, operator, project):
    agent = make_agent(project)
    response = client.post(url(project), json={"title": "t", "agent_ids": [str(agent.id)] * 3}, headers=operator)
    assert response.status_code == 201
    assert [a["id"] for a in response.get_json()["agents"]] == [str(agent.id)]


def _conversation_count(project) -> int:
    from mcc.models.conversation import Conversation

    return db.session.scalar(select(func.count()).select_from(Conversation).where(
        Conversation.project_id == project.id))


def test_agent_ids_must_belong_to_the_project(client, operator, project):
    """An agent of another project, or no agent at all, is 422 naming agent_ids, and nothing is created."""
    mine = make_agent(project)
    foreign = make_agent(make_project())
    for agent_ids in ([str(mine.id), str(foreign.id)], [str(uuid.uuid4())]):
        response = client.post(url(project), json={"title": "t", "agent_ids": agent_ids}, headers=operator)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert set(error["details"]) == {"agent_ids"}
        assert agent_ids[-1] in " ".join(error["details"]["agent_ids"])
        assert str(mine.id) not in " ".join(error["details"]["agent_ids"])
    response = client.post(url(project), json={"title": "t", "agent_ids": ["not-a-uuid"]}, headers=operator)
    assert "agent_ids" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert _conversation_count(project) == 0


def test_issue_id_must_be_an_issue_of_the_project(client, operator, project):
    foreign_issue = make_issue(make_project())
    for issue_id in (str(foreign_issue.id), str(uuid.uuid4()), "nope"):
        response = client.post(url(project), json={"title": "t", "issue_id": issue_id}, headers=operator)
        assert "issue_id" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert _conversation_count(project) == 0


@pytest.mark.parametrize("body, field", [({"type": "chat", "title": "t"}, "type"), ({}, "title"),
                                         ({"title": ""}, "title"), ({"title": "t", "agent_ids": "x"}, "agent_ids"),
                                         ({"title": "t", "status": "active"}, "status")])
def test_invalid_create_bodies_are_422_naming_the_field(client, operator, project, body, field):
    response = client.post(url(project), json=body, headers=operator)
    assert field in assert_error(response, 422, "VALIDATION_ERROR")["details"]


# --- list and filters -----------------------------------------------------------------------------------

def test_list_filters_by_type_and_status(client, operator, project):
    made = {}
    for conversation_type in ("issue", "general", "task", "review"):
        for status in ("active", "paused", "completed"):
            made[(conversation_type, status)] = str(make_conversation(project, type=conversation_type,
                                                                      status=status).id)
    make_conversation(make_project(), type="task", status="active")  # another project's

    def ids(**query):
        body = client.get(url(project), query_string=query, headers=operator).get_json()
        assert body["total"] == len(body["items"])
        return {c["id"] for c in body["items"]}

    assert ids() == set(made.values())
    assert ids(type="task") == {v for (t, _), v in made.items() if t == "task"}
    assert ids(status="paused") == {v for (_, s), v in made.items() if s == "paused"}
    assert ids(type="review", status="completed") == {made[("review", "completed")]}
    body = client.get(url(project), query_string={"status": "active"}, headers=operator).get_json()
    assert all(c["status"] == "active" for c in body["items"]) and len(body["items"]) == 4
    assert set(body) == {"items", "total", "page", "pages"}
    assert set(body["items"][0]) == CONVERSATION_FIELDS


@pytest.mark.parametrize("query", [{"type": "chat"}, {"status": "done"}, {"limit": 101}])
def test_bad_list_filters_are_422(client, operator, project, query):
    response = client.get(url(project), query_string=query, headers=operator)
    assert set(query) <= set(assert_error(response, 422, "VALIDATION_ERROR")["details"])


def test_list_is_paged_most_recently_active_first(client, operator, project):
    older = make_conversation(project, title="older")
    newer = make_conversation(project, title="newer")
    for _ in range(3):
        make_conversation(project)
    first = client.get(url(project), query_string={"limit": 2}, headers=operator).get_json()
    assert (first["total"], first["pages"], len(first["items"])) == (5, 3, 2)
    # A new message makes the older conversation the most recently active one.
    assert client.post(url(project, older, "/messages"), json={"content": "bump"}, headers=operator).status_code == 201
    items = client.get(url(project), headers=operator).get_json()["items"]
    assert items[0]["id"] == str(older.id)
    assert str(newer.id) in {c["id"] for c in items[1:]}


# --- get with messages and cursor pages ---------------------------------------------------------------------

def test_get_returns_messages_in_the_spec_shape_newest_first(client, operator, operator_user, project):
    agent = make_agent(project, name="Senior Architect", type="architect")
    conversation = make_conversation(project, agents=[agent], type="issue")
    question = make_message(conversation, user=operator_user, content="How should we split it?")
    answer = make_message(conversation, agent=agent, content="Two services.", tokens_in=1500, tokens_out=800,
                          cost_usd="0.045", reply_to=question)
    notice = make_message(conversation, content="Chain stopped.")

    body = client.get(url(project, conversation), headers=operator).get_json()
    assert set(body) == CONVERSATION_FIELDS | {"messages", "has_more"}
    assert body["has_more"] is False
    assert [m["id"] for m in body["messages"]] == [str(notice.id), str(answer.id), str(question.id)]
    by_id = {m["id"]: m for m in body["messages"]}
    for message in body["messages"]:
        assert set(message) == MESSAGE_FIELDS
        assert ISO_Z.match(message["created_at"])

    agent_message = by_id[str(answer.id)]
    assert agent_message["author_type"] == "agent"
    assert agent_message["agent"] == {"id": str(agent.id), "name": "Senior Architect", "type": "architect"}
    assert agent_message["user"] is None
    assert (agent_message["tokens_in"], agent_message["tokens_out"]) == (1500, 800)
    assert agent_message["cost_usd"] == 0.045
    assert agent_message["reply_to"] == str(question.id)
    assert agent_message["content"] == "Two services."

    user_message = by_id[str(question.id)]
    assert user_message["author_type"] == "user"
    assert user_message["user"] == {"id": str(operator_user.id), "username": operator_user.username}
    assert user_message["agent"] is None
    assert user_message["reply_to"] is None

    system_message = by_id[str(notice.id)]
    assert system_message["author_type"] == "system"
    assert system_message["agent"] is None and system_message["user"] is None


def test_default_page_is_50_messages_with_has_more(client, operator, project):
    conversation = make_conversation(project)
    messages = fill(conversation, 60)
    body = client.get(url(project, conversation), headers=operator).get_json()
    assert len(body["messages"]) == 50
    assert body["has_more"] is True
    assert body["messages"][0]["id"] == str(messages[-1].id)
    assert body["messages"][-1]["id"] == str(messages[10].id)

    rest = client.get(url(project, conversation), query_string={"before": body["messages"][-1]["id"]},
                      headers=operator).get_json()
    assert [m["id"] for m in rest["messages"]] == [str(m.id) for m in reversed(messages[:10])]
    assert rest["has_more"] is False


def test_has_more_is_false_when_the_page_holds_exactly_the_rest(client, operator, project):
    conversation = make_conversation(project)
    fill(conversation, 50)
    body = client.get(url(project, conversation), headers=operator).get_json()
    assert len(body["messages"]) == 50 and body["has_more"] is False
    body = client.get(url(project, conversation, "/messages"), query_string={"limit": 49},
                      headers=operator).get_json()
    assert len(body["items"]) == 49 and body["has_more"] is True


@pytest.mark.parametrize("path", ["", "/messages"])
def test_before_cursor_walks_every_message_exactly_once_newest_first(client, operator, project, path):
    """Following `before` from page to page yields each message of the conversation once, newest first,
    and never a message of another conversation."""
    conversation = make_conversation(project)
    other = make_conversation(project)
    ours = []
    for i in range(23):  # interleave another conversation's messages
        ours.append(make_message(conversation, content=f"ours {i}", commit=False))
        make_message(other, content=f"theirs {i}", commit=False)
    db.session.commit()
    key = "messages" if path == "" else "items"

    seen, before, pages = [], None, 0
    while True:
        query = {"limit": 7} if before is None else {"limit": 7, "before": before}
        body = client.get(url(project, conversation, path), query_string=query, headers=operator).get_json()
        pages += 1
        assert len(body[key]) <= 7
        seen += [m["id"] for m in body[key]]
        if not body["has_more"]:
            break
        assert len(body[key]) == 7
        before = body[key][-1]["id"]
    assert pages == 4
    assert seen == [str(m.id) for m in reversed(ours)]


def test_messages_endpoint_answers_items_and_has_more_only(client, operator, project):
    conversation = make_conversation(project)
    messages = fill(conversation, 3)
    body = client.get(url(project, conversation, "/messages"), query_string={"limit": 2}, headers=operator).get_json()
    assert set(body) == {"items", "has_more"}
    assert [m["id"] for m in body["items"]] == [str(messages[2].id), str(messages[1].id)]
    assert body["has_more"] is True
    assert set(body["items"][0]) == MESSAGE_FIELDS


def test_limit_is_1_to_100(client, operator, project):
    conversation = make_conversation(project)
    fill(conversation, 105)
    for path, key in (("", "messages"), ("/messages", "items")):
        body = client.get(url(project, conversation, path), query_string={"limit": 100}, headers=operator).get_json()
        assert len(body[key]) == 100 and body["has_more"] is True
        for bad in (101, 0, "ten"):
            response = client.get(url(project, conversation, path), query_string={"limit": bad}, headers=operator)
            assert "limit" in assert_error(response, 422, "VALIDATION_ERROR")["details"]


def test_before_must_be_a_message_of_this_conversation(client, operator, project):
    conversation = make_conversation(project)
    fill(conversation, 2)
    foreign = make_message(make_conversation(project))
    for path in ("", "/messages"):
        for before in (str(foreign.id), str(uuid.uuid4()), "not-a-uuid"):
            response = client.get(url(project, conversation, path), query_string={"before": before},
                                  headers=operator)
            assert "before" in assert_error(response, 422, "VALIDATION_ERROR")["details"]


# --- posting messages -----------------------------------------------------------------------------------

def test_post_message_stores_a_user_message_in_the_spec_shape(client, operator, operator_user, project):
    conversation = make_conversation(project, agents=[make_agent(project)])
    response = client.post(url(project, conversation, "/messages"), json={"content": "Hello, agents"},
                           headers=operator)
    assert response.status_code == 201, response.get_json()
    message = response.get_json()
    assert MESSAGE_FIELDS <= set(message)
    assert message["author_type"] == "user"
    assert message["user"] == {"id": str(operator_user.id), "username": operator_user.username}
    assert message["agent"] is None
    assert message["content"] == "Hello, agents"
    assert (message["tokens_in"], message["tokens_out"], message["cost_usd"]) == (0, 0, 0.0)
    assert message["reply_to"] is None
    assert message["conversation_id"] == str(conversation.id)
    assert ISO_Z.match(message["created_at"])

    page = client.get(url(project, conversation, "/messages"), headers=operator).get_json()["items"]
    assert page[0] == {k: message[k] for k in MESSAGE_FIELDS}


def test_post_message_with_reply_to(client, operator, project):
    conversation = make_conversation(project)
    parent = make_message(conversation, content="parent")
    response = client.post(url(project, conversation, "/messages"),
                           json={"content": "child", "reply_to": str(parent.id)}, headers=operator)
    assert response.status_code == 201
    assert response.get_json()["reply_to"] == str(parent.id)
    explicit_null = client.post(url(project, conversation, "/messages"), json={"content": "x", "reply_to": None},
                                headers=operator)
    assert explicit_null.status_code == 201 and explicit_null.get_json()["reply_to"] is None


def _message_count(conversation) -> int:
    from mcc.models.conversation import Message

    return db.session.scalar(select(func.count()).select_from(Message).where(
        Message.conversation_id == conversation.id))


def test_reply_to_must_be_a_message_of_this_conversation(client, operator, project):
    conversation = make_conversation(project)
    foreign = make_message(make_conversation(project), content="elsewhere")
    for reply_to in (str(foreign.id), str(uuid.uuid4())):
        response = client.post(url(project, conversation, "/messages"),
                               json={"content": "x", "reply_to": reply_to}, headers=operator)
        assert "reply_to" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    response = client.post(url(project, conversation, "/messages"), json={"content": "x", "reply_to": "abc"},
                           headers=operator)
    assert "reply_to" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert _message_count(conversation) == 0


@pytest.mark.parametrize("body, field", [({}, "content"), ({"content": ""}, "content"),
                                         ({"content": "x" * 100_001}, "content"), ({"content": 5}, "content"),
                                         ({"content": "x", "author_type": "agent"}, "author_type")])
def test_invalid_message_bodies_are_422(client, operator, project, body, field):
    conversation = make_conversation(project)
    response = client.post(url(project, conversation, "/messages"), json=body, headers=operator)
    assert field in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert _message_count(conversation) == 0


def test_posting_to_a_completed_conversation_is_409(client, operator, project):
    conversation = make_conversation(project, status="completed")
    response = client.post(url(project, conversation, "/messages"), json={"content": "anyone?"}, headers=operator)
    assert_error(response, 409, "CONFLICT")
    assert _message_count(conversation) == 0


def test_posting_to_a_paused_conversation_stores_the_message(client, operator, project):
    conversation = make_conversation(project, status="paused")
    response = client.post(url(project, conversation, "/messages"), json={"content": "for later"}, headers=operator)
    assert response.status_code == 201
    assert _message_count(conversation) == 1


# --- status: pause, resume, patch -----------------------------------------------------------------------------

def _status(client, headers, project, conversation) -> str:
    return client.get(url(project, conversation), headers=headers).get_json()["status"]


def test_pause_and_resume_change_the_status(client, operator, project):
    conversation = make_conversation(project)
    paused = client.post(url(project, conversation, "/pause"), headers=operator)
    assert paused.status_code == 200 and paused.get_json()["status"] == "paused"
    assert set(paused.get_json()) == CONVERSATION_FIELDS
    assert _status(client, operator, project, conversation) == "paused"
    listed = client.get(url(project), query_string={"status": "paused"}, headers=operator).get_json()
    assert [c["id"] for c in listed["items"]] == [str(conversation.id)]
    resumed = client.post(url(project, conversation, "/resume"), headers=operator)
    assert resumed.status_code == 200 and resumed.get_json()["status"] == "active"
    assert _status(client, operator, project, conversation) == "active"


def test_a_completed_conversation_cannot_be_paused_or_resumed(client, operator, project):
    conversation = make_conversation(project, status="completed")
    assert_error(client.post(url(project, conversation, "/pause"), headers=operator), 409, "CONFLICT")
    assert_error(client.post(url(project, conversation, "/resume"), headers=operator), 409, "CONFLICT")
    assert _status(client, operator, project, conversation) == "completed"


def test_patch_renames_and_completes_and_reopens(client, operator, project):
    conversation = make_conversation(project, title="Old")
    renamed = client.patch(url(project, conversation), json={"title": "New"}, headers=operator)
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "New"
    assert renamed.get_json()["status"] == "active"
    completed = client.patch(url(project, conversation), json={"status": "completed"}, headers=operator)
    assert completed.get_json()["status"] == "completed"
    assert completed.get_json()["title"] == "New"
    assert _status(client, operator, project, conversation) == "completed"
    reopened = client.patch(url(project, conversation), json={"status": "active"}, headers=operator)
    assert reopened.get_json()["status"] == "active"
    assert client.post(url(project, conversation, "/messages"), json={"content": "back"},
                       headers=operator).status_code == 201


@pytest.mark.parametrize("body, field", [({"status": "paused"}, "status"), ({"status": "archived"}, "status"),
                                         ({"title": ""}, "title"), ({"type": "task"}, "type")])
def test_patch_refuses_other_fields_and_statuses(client, operator, project, body, field):
    """Pausing has its own endpoint; type is fixed at creation."""
    conversation = make_conversation(project, title="Same")
    response = client.patch(url(project, conversation), json=body, headers=operator)
    assert field in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    after = client.get(url(project, conversation), headers=operator).get_json()
    assert (after["status"], after["title"], after["type"]) == ("active", "Same", "general")


def _turn_statuses(conversation) -> list[str]:
    from mcc.models.turn import Turn

    db.session.expire_all()
    return db.session.scalars(select(Turn.status).where(Turn.conversation_id == conversation.id)
                              .order_by(Turn.created_at)).all()


def test_completing_cancels_waiting_turns(client, operator, project):
    conversation = make_conversation(project, agents=[make_agent(project)])
    assert client.post(url(project, conversation, "/messages"), json={"content": "do it"},
                       headers=operator).status_code == 201
    assert _turn_statuses(conversation) == ["queued"]
    client.patch(url(project, conversation), json={"status": "completed"}, headers=operator)
    assert _turn_statuses(conversation) == ["cancelled"]


@pytest.mark.parametrize("how", ["resume", "patch"])
def test_resuming_requeues_the_turns_held_by_the_pause(client, operator, project, redis_client, how):
    """Turns held while paused are queued again and a worker job is enqueued, by /resume or PATCH status=active."""
    from mcc.jobs import get_queue
    from mcc.models.turn import Turn

    conversation = make_conversation(project, agents=[make_agent(project)])
    assert client.post(url(project, conversation, "/pause"), headers=operator).status_code == 200
    assert client.post(url(project, conversation, "/messages"), json={"content": "queued while paused"},
                       headers=operator).status_code == 201
    # What a worker does with a paused conversation's turns: hold them.
    db.session.execute(Turn.__table__.update().where(Turn.conversation_id == conversation.id).values(status="held"))
    db.session.commit()
    jobs_before = get_queue("agent").count

    if how == "resume":
        response = client.post(url(project, conversation, "/resume"), headers=operator)
    else:
        response = client.patch(url(project, conversation), json={"status": "active"}, headers=operator)
    assert response.status_code == 200 and response.get_json()["status"] == "active"
    assert _turn_statuses(conversation) == ["queued"]
    assert get_queue("agent").count == jobs_before + 1


# --- participants --------------------------------------------------------------------------------------------

def test_agents_can_be_added_and_removed(client, operator, project):
    first, second = make_agent(project, name="First"), make_agent(project, name="Second")
    conversation = make_conversation(project, agents=[first])
    added = client.post(url(project, conversation, "/agents"), json={"agent_id": str(second.id)}, headers=operator)
    assert added.status_code == 200, added.get_json()
    assert [a["id"] for a in added.get_json()["agents"]] == [str(first.id), str(second.id)]
    again = client.post(url(project, conversation, "/agents"), json={"agent_id": str(second.id)}, headers=operator)
    assert [a["id"] for a in again.get_json()["agents"]] == [str(first.id), str(second.id)]

    removed = client.delete(url(project, conversation, f"/agents/{first.id}"), headers=operator)
    assert removed.status_code == 200
    assert [a["id"] for a in removed.get_json()["agents"]] == [str(second.id)]
    fetched = client.get(url(project, conversation), headers=operator).get_json()
    assert [a["id"] for a in fetched["agents"]] == [str(second.id)]
    # The agent itself still exists.
    assert client.get(f"/api/v1/projects/{project.id}/agents/{first.id}", headers=operator).status_code == 200


def test_adding_an_agent_of_another_project_is_422_naming_agent_id(client, operator, project):
    conversation = make_conversation(project)
    foreign = make_agent(make_project())
    for agent_id in (str(foreign.id), str(uuid.uuid4()), "x"):
        response = client.post(url(project, conversation, "/agents"), json={"agent_id": agent_id},
                               headers=operator)
        assert set(assert_error(response, 422, "VALIDATION_ERROR")["details"]) == {"agent_id"}
    assert client.get(url(project, conversation), headers=operator).get_json()["agents"] == []


def test_removing_an_agent_that_is_not_a_participant_is_refused(client, operator, project):
    member, outsider = make_agent(project), make_agent(project)
    conversation = make_conversation(project, agents=[member])
    response = client.delete(url(project, conversation, f"/agents/{outsider.id}"), headers=operator)
    assert "agent_id" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert [a["id"] for a in client.get(url(project, conversation), headers=operator).get_json()["agents"]] == \
        [str(member.id)]


# --- roles, unknown and foreign ids -----------------------------------------------------------------------------

def test_viewer_reads_conversations_but_every_write_is_forbidden(client, project):
    viewer = auth_headers(client, make_user("viewer"))
    agent = make_agent(project)
    conversation = make_conversation(project, agents=[agent], title="Untouched")
    make_message(conversation, content="hello")
    assert client.get(url(project), headers=viewer).get_json()["total"] == 1
    assert len(client.get(url(project, conversation), headers=viewer).get_json()["messages"]) == 1
    assert len(client.get(url(project, conversation, "/messages"), headers=viewer).get_json()["items"]) == 1

    for response in (client.post(url(project), json={"title": "t"}, headers=viewer),
                     client.patch(url(project, conversation), json={"title": "Changed"}, headers=viewer),
                     client.patch(url(project, conversation), json={"status": "completed"}, headers=viewer),
                     client.post(url(project, conversation, "/messages"), json={"content": "hi"}, headers=viewer),
                     client.post(url(project, conversation, "/pause"), headers=viewer),
                     client.post(url(project, conversation, "/resume"), headers=viewer),
                     client.post(url(project, conversation, "/agents"), json={"agent_id": str(agent.id)},
                                 headers=viewer),
                     client.delete(url(project, conversation, f"/agents/{agent.id}"), headers=viewer)):
        assert_error(response, 403, "FORBIDDEN")
    after = client.get(url(project, conversation), headers=viewer).get_json()
    assert (after["title"], after["status"], len(after["messages"])) == ("Untouched", "active", 1)
    assert [a["id"] for a in after["agents"]] == [str(agent.id)]
    assert client.get(url(project), headers=viewer).get_json()["total"] == 1


def _every_route(client, headers, project, conversation_id):
    agent_id = uuid.uuid4()
    return [client.get(url(project, conversation_id), headers=headers),
            client.patch(url(project, conversation_id), json={"title": "x"}, headers=headers),
            client.get(url(project, conversation_id, "/messages"), headers=headers),
            client.post(url(project, conversation_id, "/messages"), json={"content": "x"}, headers=headers),
            client.post(url(project, conversation_id, "/pause"), headers=headers),
            client.post(url(project, conversation_id, "/resume"), headers=headers),
            client.post(url(project, conversation_id, "/agents"), json={"agent_id": str(agent_id)}, headers=headers),
            client.delete(url(project, conversation_id, f"/agents/{agent_id}"), headers=headers)]


def test_unknown_conversation_is_404_naming_the_conversation(client, operator, project):
    for response in _every_route(client, operator, project, uuid.uuid4()):
        assert "Conversation" in assert_error(response, 404, "RESOURCE_NOT_FOUND")["message"]


def test_a_conversation_of_another_project_is_404_and_untouched(client, operator, project):
    foreign = make_conversation(make_project(), title="Foreign")
    make_message(foreign, content="private")
    for response in _every_route(client, operator, project, foreign.id):
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    db.session.expire_all()
    assert (foreign.title, foreign.status) == ("Foreign", "active")
    assert _message_count(foreign) == 1


def test_unknown_project_is_404_naming_the_project(client, operator):
    missing = uuid.uuid4()
    for response in (client.get(url(missing), headers=operator),
                     client.post(url(missing), json={"title": "t"}, headers=operator)):
        assert "Project" in assert_error(response, 404, "RESOURCE_NOT_FOUND")["message"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "1", "%00"])
def test_malformed_ids_are_404_not_500(client, operator, project, bad):
    for response in _every_route(client, operator, project, bad):
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    conversation = make_conversation(project, agents=[make_agent(project)])
    response = client.delete(url(project, conversation, f"/agents/{bad}"), headers=operator)
    assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert_error(client.get(url(bad), headers=operator), 404, "RESOURCE_NOT_FOUND")


def test_removing_an_agent_cancels_its_waiting_turns_in_that_conversation_only(client, operator, project):
    """A removed agent stops answering there; its turns in other conversations and other agents' turns stay."""
    from mcc.models.turn import Turn

    leaving, staying = make_agent(project, name="Leaving"), make_agent(project, name="Staying")
    conversation = make_conversation(project, agents=[leaving, staying])
    elsewhere = make_conversation(project, agents=[leaving])
    for target in (conversation, elsewhere):
        posted = client.post(url(project, target, "/messages"), json={"content": "@Leaving @Staying both of you"},
                             headers=operator)
        assert posted.status_code == 201
    assert client.delete(url(project, conversation, f"/agents/{leaving.id}"), headers=operator).status_code == 200

    db.session.expire_all()
    rows = {(t.conversation_id, t.agent_id): t.status for t in db.session.scalars(
        select(Turn).where(Turn.conversation_id.in_([conversation.id, elsewhere.id])))}
    assert rows == {(conversation.id, leaving.id): "cancelled", (conversation.id, staying.id): "queued",
                    (elsewhere.id, leaving.id): "queued"}


def _statements_of(client, path, headers, **query) -> list[str]:
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    db.session.commit()  # the request shares the test's session: start from the same, expired, state
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        response = client.get(path, query_string=query, headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.get_json()
    return statements


def test_a_message_page_is_a_keyset_read_whose_cost_does_not_grow_with_history(client, operator, project):
    """Same number of statements for a short and a long conversation, with authors of every kind, and no OFFSET."""
    agents = [make_agent(project) for _ in range(3)]
    users = [make_user() for _ in range(3)]
    short, long = make_conversation(project, agents=agents), make_conversation(project, agents=agents)
    for conversation, count in ((short, 12), (long, 150)):
        for i in range(count):
            make_message(conversation, commit=False, **({"agent": agents[i % 3]} if i % 2 else {"user": users[i % 3]}))
    db.session.commit()
    client.get(url(project), headers=operator)  # warm the per-token caches once

    for path in ("", "/messages"):
        cursor = client.get(url(project, long, path), query_string={"limit": 3}, headers=operator).get_json()
        before = (cursor.get("messages") or cursor.get("items"))[-1]["id"]
        few = _statements_of(client, url(project, short, path), operator, limit=10)
        many = _statements_of(client, url(project, long, path), operator, limit=10)
        deep = _statements_of(client, url(project, long, path), operator, limit=10, before=before)
        assert len(few) == len(many), "\n".join(many)
        assert len(deep) <= len(many) + 1, "\n".join(deep)  # + the cursor lookup
        assert not any("OFFSET" in s.upper() for s in few + many + deep)


def test_listing_conversations_does_not_query_per_conversation(client, operator, project):
    agents = [make_agent(project) for _ in range(4)]
    for _ in range(3):
        make_conversation(project, agents=agents[:2])
    client.get(url(project), headers=operator)
    few = _statements_of(client, url(project), operator, limit=100)
    for i in range(40):
        make_conversation(project, agents=agents[i % 4:], type="task")
    many = _statements_of(client, url(project), operator, limit=100)
    assert len(many) == len(few), "\n".join(many)
