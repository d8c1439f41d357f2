"""Agents over REST: configuration validation, live statistics, memory reset, roles and scoping."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from mcc.extensions import db
from tests.factories import (assert_error, make_agent, make_conversation, make_message, make_project, make_spend,
                             make_user, project_url)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
AGENT_FIELDS = {"id", "project_id", "name", "type", "model_config", "system_prompt", "rules_file_path",
                "is_active", "status", "memory_reset_at", "created_at", "stats"}
MODEL_CONFIG = {"model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 4096}


def agents_url(project, agent=None, suffix: str = "") -> str:
    return project_url(project, "agents", agent, suffix)


def agent_body(**overrides) -> dict:
    body = {"name": "Senior Architect", "type": "architect", "model_config": dict(MODEL_CONFIG),
            "system_prompt": "Design first.", "rules_file_path": "docs/AGENT_RULES.md"}
    body.update(overrides)
    return body


@pytest.fixture
def project():
    return make_project()


# --- create / shape ------------------------------------------------------------------------------------

def test_create_agent_answers_the_spec_shape(client, operator, project):
    """201 with name, type, model_config {model, temperature, max_tokens}, is_active and zero stats."""
    response = client.post(agents_url(project), json=agent_body(), headers=operator)
    assert response.status_code == 201, response.get_json()
    agent = response.get_json()
    assert set(agent) == AGENT_FIELDS
    assert agent["name"] == "Senior Architect"
    assert agent["type"] == "architect"
    assert agent["model_config"] == MODEL_CONFIG
    assert agent["system_prompt"] == "Design first."
    assert agent["rules_file_path"] == "docs/AGENT_RULES.md"
    assert agent["project_id"] == str(project.id)
    assert agent["is_active"] is True
    assert agent["status"] == "idle"
    assert agent["memory_reset_at"] is None
    assert ISO_Z.match(agent["created_at"])
    assert agent["stats"] == {"messages_today": 0, "cost_today": 0.0}

    listed = client.get(agents_url(project), headers=operator).get_json()
    assert listed["items"] == [agent]
    assert client.get(agents_url(project, agent["id"]), headers=operator).get_json() == agent


def test_system_prompt_and_rules_file_path_are_optional(client, operator, project):
    body = {"name": "Bare", "type": "coder", "model_config": dict(MODEL_CONFIG)}
    response = client.post(agents_url(project), json=body, headers=operator)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["system_prompt"] is None
    assert response.get_json()["rules_file_path"] is None


@pytest.mark.parametrize("agent_type", ["architect", "coder", "tester", "reviewer", "orchestrator"])
def test_every_spec_agent_type_is_accepted(client, operator, project, agent_type):
    response = client.post(agents_url(project), json=agent_body(type=agent_type), headers=operator)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["type"] == agent_type


@pytest.mark.parametrize("agent_type", ["manager", "Architect", "", None, 3])
def test_other_agent_types_are_422_naming_type(client, operator, project, agent_type):
    response = client.post(agents_url(project), json=agent_body(type=agent_type), headers=operator)
    assert "type" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert client.get(agents_url(project), headers=operator).get_json()["total"] == 0


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.01), ("temperature", 2.01), ("temperature", "hot"), ("temperature", None),
    ("max_tokens", 99), ("max_tokens", 128_001), ("max_tokens", 1.5), ("max_tokens", "many"),
    ("model", ""), ("model", None),
])
def test_out_of_range_model_config_is_422_naming_the_nested_field(client, operator, project, field, value):
    """The error details nest like the body: {"model_config": {"temperature": [...]}}."""
    config = dict(MODEL_CONFIG, **{field: value})
    response = client.post(agents_url(project), json=agent_body(model_config=config), headers=operator)
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert set(details) == {"model_config"}
    assert set(details["model_config"]) == {field}
    assert details["model_config"][field]
    assert client.get(agents_url(project), headers=operator).get_json()["total"] == 0


@pytest.mark.parametrize("missing", ["model", "temperature", "max_tokens"])
def test_model_config_fields_are_required_on_create(client, operator, project, missing):
    config = {k: v for k, v in MODEL_CONFIG.items() if k != missing}
    response = client.post(agents_url(project), json=agent_body(model_config=config), headers=operator)
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert missing in details["model_config"]


def test_model_config_bounds_are_inclusive(client, operator, project):
    for i, (temperature, max_tokens) in enumerate([(0.0, 100), (2.0, 128_000)]):
        config = {"model": "m", "temperature": temperature, "max_tokens": max_tokens}
        response = client.post(agents_url(project), json=agent_body(name=f"edge {i}", model_config=config),
                               headers=operator)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["model_config"] == config


def test_missing_name_type_or_model_config_is_422_naming_each(client, operator, project):
    response = client.post(agents_url(project), json={"system_prompt": "x"}, headers=operator)
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert {"name", "type", "model_config"} <= set(details)


def test_unknown_fields_are_refused(client, operator, project):
    response = client.post(agents_url(project), json=agent_body(colour="blue"), headers=operator)
    assert "colour" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    config = dict(MODEL_CONFIG, top_p=0.9)
    response = client.post(agents_url(project), json=agent_body(model_config=config), headers=operator)
    assert "top_p" in assert_error(response, 422, "VALIDATION_ERROR")["details"]["model_config"]


@pytest.mark.parametrize("path", ["/etc/passwd", "../secrets.md", "docs/../../x", "docs//rules.md",
                                  "docs\\rules.md", "docs/"])
def test_rules_file_path_must_be_a_relative_path_in_the_repository(client, operator, project, path):
    response = client.post(agents_url(project), json=agent_body(rules_file_path=path), headers=operator)
    assert "rules_file_path" in assert_error(response, 422, "VALIDATION_ERROR")["details"]


def test_agent_names_are_unique_in_a_project_whatever_the_case(client, operator, project):
    """A second "senior architect" in the project is 422 naming name; another project may reuse it."""
    assert client.post(agents_url(project), json=agent_body(), headers=operator).status_code == 201
    duplicate = client.post(agents_url(project), json=agent_body(name="SENIOR architect"), headers=operator)
    assert "name" in assert_error(duplicate, 422, "VALIDATION_ERROR")["details"]
    assert client.get(agents_url(project), headers=operator).get_json()["total"] == 1
    elsewhere = client.post(agents_url(make_project()), json=agent_body(), headers=operator)
    assert elsewhere.status_code == 201


# --- patch ---------------------------------------------------------------------------------------------

def test_patch_updates_part_of_model_config_and_keeps_the_rest(client, operator, project):
    agent = make_agent(project, name="Coder", model="openai/gpt-4o", temperature=0.3, max_tokens=2000)
    response = client.patch(agents_url(project, agent), json={"model_config": {"temperature": 1.5}},
                            headers=operator)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model_config"] == {"model": "openai/gpt-4o", "temperature": 1.5,
                                                   "max_tokens": 2000}
    response = client.patch(agents_url(project, agent), json={"system_prompt": "Be terse.", "is_active": False,
                                                              "type": "reviewer"}, headers=operator)
    body = response.get_json()
    assert (body["system_prompt"], body["is_active"], body["type"]) == ("Be terse.", False, "reviewer")
    assert body["model_config"]["temperature"] == 1.5
    assert body["name"] == "Coder"
    assert client.get(agents_url(project, agent), headers=operator).get_json() == body


@pytest.mark.parametrize("config, field", [({"temperature": 2.5}, "temperature"), ({"max_tokens": 50}, "max_tokens"),
                                           ({"model": ""}, "model")])
def test_patch_validates_model_config_like_create(client, operator, project, config, field):
    agent = make_agent(project, temperature=0.4)
    response = client.patch(agents_url(project, agent), json={"model_config": config}, headers=operator)
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert field in details["model_config"]
    assert client.get(agents_url(project, agent), headers=operator).get_json()["model_config"]["temperature"] == 0.4


def test_patch_cannot_rename_onto_another_agent(client, operator, project):
    make_agent(project, name="Taken")
    agent = make_agent(project, name="Mine")
    response = client.patch(agents_url(project, agent), json={"name": "taken"}, headers=operator)
    assert "name" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert client.get(agents_url(project, agent), headers=operator).get_json()["name"] == "Mine"
    # Renaming to itself in another case is fine.
    response = client.patch(agents_url(project, agent), json={"name": "MINE"}, headers=operator)
    assert response.status_code == 200 and response.get_json()["name"] == "MINE"


# --- listing and statistics -------------------------------------------------------------------------------

def test_list_is_paged_and_scoped_to_the_project(client, operator, project):
    mine = [make_agent(project) for _ in range(5)]
    make_agent(make_project())
    body = client.get(agents_url(project), query_string={"limit": 2, "page": 3}, headers=operator).get_json()
    assert (body["total"], body["page"], body["pages"]) == (5, 3, 3)
    seen = []
    for page in (1, 2, 3):
        seen += [a["id"] for a in client.get(agents_url(project), query_string={"limit": 2, "page": page},
                                             headers=operator).get_json()["items"]]
    assert seen == [str(a.id) for a in mine]  # oldest first, each once
    assert_error(client.get(agents_url(project), query_string={"limit": 101}, headers=operator), 422,
                 "VALIDATION_ERROR")


def test_stats_count_todays_messages_and_cost_of_each_agent(client, operator, project):
    """messages_today counts the agent's messages since midnight; cost_today its spend in the ledger
    since midnight, including a call whose turn failed and left no message."""
    architect, coder, idle = make_agent(project), make_agent(project), make_agent(project)
    conversation = make_conversation(project, agents=[architect, coder])
    other_conversation = make_conversation(project, agents=[architect])
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    for cost in ("1.20", "2.00", "0.000005"):
        make_message(conversation, agent=architect, cost_usd=cost)
        make_spend(project, architect, cost)
    make_message(other_conversation, agent=architect, cost_usd="1.50")
    make_spend(project, architect, "1.50")
    make_spend(project, architect, "0.50")  # a failed turn: paid, no reply
    make_message(conversation, agent=architect, cost_usd="50", created_at=midnight - timedelta(seconds=1))
    make_spend(project, architect, "50", created_at=midnight - timedelta(seconds=1))
    make_message(conversation, agent=coder, cost_usd="0.3", tokens_in=100, tokens_out=20)
    make_spend(project, coder, "0.3")
    make_message(conversation, user=make_user(), content="a person's message costs nothing")

    items = {a["id"]: a["stats"] for a in client.get(agents_url(project), headers=operator).get_json()["items"]}
    assert items[str(architect.id)]["messages_today"] == 4
    assert items[str(architect.id)]["cost_today"] == pytest.approx(5.200005)
    assert items[str(coder.id)] == {"messages_today": 1, "cost_today": 0.3}
    assert items[str(idle.id)] == {"messages_today": 0, "cost_today": 0.0}
    single = client.get(agents_url(project, architect), headers=operator).get_json()["stats"]
    assert single == items[str(architect.id)]


# --- reset ---------------------------------------------------------------------------------------------

def test_reset_sets_memory_reset_at_and_keeps_the_history(client, operator, project):
    """Reset marks the instant the agent's memory starts; its messages stay for audit."""
    agent = make_agent(project, status="error")
    conversation = make_conversation(project, agents=[agent])
    for i in range(3):
        make_message(conversation, agent=agent, content=f"old {i}", cost_usd="0.1")
    before = datetime.now(timezone.utc).replace(microsecond=0)

    response = client.post(agents_url(project, agent, "/reset"), headers=operator)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == AGENT_FIELDS
    reset_at = datetime.strptime(body["memory_reset_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= reset_at <= datetime.now(timezone.utc)
    assert body["status"] == "idle"
    assert body["stats"]["messages_today"] == 3  # history stays: today's work still counts

    messages = client.get(f"/api/v1/projects/{project.id}/conversations/{conversation.id}/messages",
                          headers=operator).get_json()["items"]
    assert [m["content"] for m in messages] == ["old 2", "old 1", "old 0"]
    assert client.get(agents_url(project, agent), headers=operator).get_json()["memory_reset_at"] == \
        body["memory_reset_at"]


def test_after_reset_the_agents_prompt_sees_no_earlier_message(client, operator, project):
    """The agent's next turn is built only from messages created after the reset."""
    from mcc.runtime.prompts import build_messages

    agent = make_agent(project)
    conversation = make_conversation(project, agents=[agent])
    make_message(conversation, user=make_user(), content="remember the codeword PELICAN")
    assert client.post(agents_url(project, agent, "/reset"), headers=operator).status_code == 200
    posted = client.post(f"/api/v1/projects/{project.id}/conversations/{conversation.id}/messages",
                         json={"content": "what was the codeword?"}, headers=operator)
    assert posted.status_code == 201
    db.session.refresh(agent)
    prompt = build_messages(agent, project, conversation, None, 100_000)
    text = "\n".join(str(m["content"]) for m in prompt)
    assert "what was the codeword?" in text
    assert "PELICAN" not in text


def test_reset_cancels_the_agents_queued_turns(client, operator, project):
    from mcc.models.turn import Turn

    agent = make_agent(project)
    conversation = make_conversation(project, agents=[agent])
    posted = client.post(f"/api/v1/projects/{project.id}/conversations/{conversation.id}/messages",
                         json={"content": "please do something"}, headers=operator)
    assert posted.status_code == 201
    assert db.session.scalars(select(Turn.status).where(Turn.agent_id == agent.id)).all() == ["queued"]
    assert client.post(agents_url(project, agent, "/reset"), headers=operator).status_code == 200
    db.session.expire_all()
    assert db.session.scalars(select(Turn.status).where(Turn.agent_id == agent.id)).all() == ["cancelled"]


# --- roles, unknown and foreign ids ---------------------------------------------------------------------------

def test_viewer_reads_agents_but_every_write_is_forbidden(client, project, viewer):
    agent = make_agent(project, name="Untouched")
    assert client.get(agents_url(project), headers=viewer).status_code == 200
    assert client.get(agents_url(project, agent), headers=viewer).status_code == 200
    for response in (client.post(agents_url(project), json=agent_body(), headers=viewer),
                     client.patch(agents_url(project, agent), json={"name": "Changed"}, headers=viewer),
                     client.post(agents_url(project, agent, "/reset"), headers=viewer)):
        assert_error(response, 403, "FORBIDDEN")
    body = client.get(agents_url(project, agent), headers=viewer).get_json()
    assert body["name"] == "Untouched" and body["memory_reset_at"] is None
    assert client.get(agents_url(project), headers=viewer).get_json()["total"] == 1


def test_unknown_agent_is_404_naming_the_agent(client, operator, project):
    missing = uuid.uuid4()
    for response in (client.get(agents_url(project, missing), headers=operator),
                     client.patch(agents_url(project, missing), json={"name": "x"}, headers=operator),
                     client.post(agents_url(project, missing, "/reset"), headers=operator)):
        assert "Agent" in assert_error(response, 404, "RESOURCE_NOT_FOUND")["message"]


def test_unknown_project_is_404_naming_the_project(client, operator):
    missing = uuid.uuid4()
    for response in (client.get(agents_url(missing), headers=operator),
                     client.post(agents_url(missing), json=agent_body(), headers=operator)):
        assert "Project" in assert_error(response, 404, "RESOURCE_NOT_FOUND")["message"]


def test_an_agent_of_another_project_is_404(client, operator, project):
    """Ids are scoped: addressing another project's agent through this project finds nothing, changes nothing."""
    foreign = make_agent(make_project(), name="Foreign")
    for response in (client.get(agents_url(project, foreign), headers=operator),
                     client.patch(agents_url(project, foreign), json={"name": "Hijacked"}, headers=operator),
                     client.post(agents_url(project, foreign, "/reset"), headers=operator)):
        assert_error(response, 404, "RESOURCE_NOT_FOUND")
    db.session.expire_all()
    assert foreign.name == "Foreign"
    assert foreign.memory_reset_at is None


@pytest.mark.parametrize("bad", ["not-a-uuid", "42", "{}"])
def test_malformed_agent_id_is_404_not_500(client, operator, project, bad):
    for response in (client.get(agents_url(project, bad), headers=operator),
                     client.patch(agents_url(project, bad), json={"name": "x"}, headers=operator),
                     client.post(agents_url(project, bad, "/reset"), headers=operator),
                     client.get(agents_url(bad), headers=operator)):
        assert_error(response, 404, "RESOURCE_NOT_FOUND")


def test_a_name_taken_concurrently_is_still_422_and_the_session_stays_usable(client, operator, project,
                                                                            monkeypatch):
    """If another request takes the name between the check and the insert, the unique index answers:
    422 naming name, not 500, and the request's session is not left aborted."""
    from mcc.services import agents as service

    monkeypatch.setattr(service, "_check_name_free", lambda *a, **k: None)  # lose the race on purpose
    make_agent(project, name="Racer")
    mine = make_agent(project, name="Mine")
    created = client.post(agents_url(project), json=agent_body(name="racer"), headers=operator)
    assert "name" in assert_error(created, 422, "VALIDATION_ERROR")["details"]
    renamed = client.patch(agents_url(project, mine), json={"name": "RACER"}, headers=operator)
    assert "name" in assert_error(renamed, 422, "VALIDATION_ERROR")["details"]
    listed = client.get(agents_url(project), headers=operator)
    assert listed.status_code == 200
    assert sorted(a["name"] for a in listed.get_json()["items"]) == ["Mine", "Racer"]
