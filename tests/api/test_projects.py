"""Projects over REST: the spec's shapes, real statistics, validation, cascading delete and roles."""
from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select

from mcc.extensions import db
from tests.factories import (assert_error, auth_headers, make_agent, make_conversation, make_issue, make_message,
                             make_project, make_spend, make_user)

API = "/api/v1/projects"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PROJECT_FIELDS = {"id", "name", "description", "github_repo", "github_app_id", "github_installation_id",
                  "is_active", "created_at", "updated_at", "stats"}


@contextmanager
def count_queries():
    """Count the SQL statements sent to PostgreSQL inside the block."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def today_at(minutes_after_midnight: int = 0) -> datetime:
    """An instant today (UTC, the test configuration's MCC_TIMEZONE), never in the future."""
    now = datetime.now(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(midnight + timedelta(minutes=minutes_after_midnight), now)


# --- create / get / shape ------------------------------------------------------------------------

def test_create_project_answers_the_spec_fields_and_get_returns_the_same(client, admin):
    """POST /projects stores every spec field and answers 201 with zeroed stats; GET returns it unchanged."""
    body = {"name": "My Project", "description": "The thing", "github_repo": "octo-org/octo-repo",
            "github_app_id": "12345", "github_installation_id": "67890"}
    response = client.post(API, json=body, headers=admin)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert set(created) == PROJECT_FIELDS
    for key, value in body.items():
        assert created[key] == value
    assert created["is_active"] is True
    assert uuid.UUID(created["id"])
    assert ISO_Z.match(created["created_at"])
    assert created["stats"] == {"open_issues": 0, "active_conversations": 0, "today_cost": 0.0}

    fetched = client.get(f"{API}/{created['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.get_json() == created


def test_create_requires_name_and_github_repo_and_refuses_unknown_fields(client, operator):
    response = client.post(API, json={"description": "nothing else"}, headers=operator)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert {"name", "github_repo"} <= set(error["details"])

    response = client.post(API, json={"name": "x", "github_repo": "a/b", "owner": "me"}, headers=operator)
    assert "owner" in assert_error(response, 422, "VALIDATION_ERROR")["details"]

    response = client.post(API, json={"name": "", "github_repo": "a/b"}, headers=operator)
    assert "name" in assert_error(response, 422, "VALIDATION_ERROR")["details"]


@pytest.mark.parametrize("repo", ["noslash", "owner/", "/repo", "owner/repo/extra", "own er/repo",
                                  "https://github.com/owner/repo", "-owner/repo", "owner-/repo", "ow--ner/repo",
                                  "owner/re po", "a" * 40 + "/repo", "", "owner/repo\n",
                                  "acme/..", "acme/."])
def test_github_repo_must_look_like_owner_slash_repo(client, operator, repo):
    """A github_repo that is not owner/repo is 422 VALIDATION_ERROR naming github_repo; nothing is stored."""
    response = client.post(API, json={"name": "Bad", "github_repo": repo}, headers=operator)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "github_repo" in error["details"]
    assert client.get(API, headers=operator).get_json()["total"] == 0


@pytest.mark.parametrize("repo", ["octo-org/octo-repo", "A/b", "user1/my.repo_name-2", "a" * 39 + "/x"])
def test_valid_github_repos_are_accepted(client, operator, repo):
    response = client.post(API, json={"name": "Good", "github_repo": repo}, headers=operator)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["github_repo"] == repo


def test_duplicate_github_repo_is_refused_whatever_the_case(client, operator):
    """One project per repository: the same owner/repo in another case is 422 naming github_repo."""
    first = client.post(API, json={"name": "First", "github_repo": "Octo-Org/Octo-Repo"}, headers=operator)
    assert first.status_code == 201
    duplicate = client.post(API, json={"name": "Second", "github_repo": "octo-org/octo-repo"}, headers=operator)
    error = assert_error(duplicate, 422, "VALIDATION_ERROR")
    assert "github_repo" in error["details"]
    assert "octo-org/octo-repo" in error["message"]
    assert client.get(API, headers=operator).get_json()["total"] == 1


def test_patch_cannot_take_another_projects_repo_but_may_recase_its_own(client, operator):
    taken = make_project(github_repo="octo/taken")
    mine = make_project(github_repo="octo/mine")
    clash = client.patch(f"{API}/{mine.id}", json={"github_repo": "OCTO/TAKEN"}, headers=operator)
    assert "github_repo" in assert_error(clash, 422, "VALIDATION_ERROR")["details"]
    recase = client.patch(f"{API}/{mine.id}", json={"github_repo": "Octo/Mine"}, headers=operator)
    assert recase.status_code == 200, recase.get_json()
    assert recase.get_json()["github_repo"] == "Octo/Mine"
    assert client.get(f"{API}/{taken.id}", headers=operator).get_json()["github_repo"] == "octo/taken"


def test_patch_updates_only_the_given_fields(client, operator):
    project = make_project(name="Before", github_repo="octo/before", description="keep me")
    response = client.patch(f"{API}/{project.id}", json={"name": "After", "is_active": False}, headers=operator)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["name"] == "After"
    assert body["is_active"] is False
    assert body["description"] == "keep me"
    assert body["github_repo"] == "octo/before"
    assert set(body) == PROJECT_FIELDS
    again = client.get(f"{API}/{project.id}", headers=operator).get_json()
    assert again["name"] == "After" and again["is_active"] is False


def test_patch_validates_like_create(client, operator):
    project = make_project()
    for body, field in (({"github_repo": "not a repo"}, "github_repo"), ({"name": ""}, "name"),
                        ({"name": None}, "name"), ({"colour": "red"}, "colour")):
        response = client.patch(f"{API}/{project.id}", json=body, headers=operator)
        assert field in assert_error(response, 422, "VALIDATION_ERROR")["details"], body


# --- listing and pagination ------------------------------------------------------------------------

def test_list_pages_with_items_total_page_pages(client, operator):
    """Offset pagination per the spec: {items, total, page, pages}, newest first, no project twice."""
    created = [make_project() for _ in range(25)]
    first = client.get(API, headers=operator).get_json()
    assert set(first) == {"items", "total", "page", "pages"}
    assert (first["total"], first["page"], first["pages"], len(first["items"])) == (25, 1, 2, 20)
    assert set(first["items"][0]) == PROJECT_FIELDS

    seen = []
    for page in (1, 2, 3):
        body = client.get(API, query_string={"page": page, "limit": 10}, headers=operator).get_json()
        assert (body["total"], body["page"], body["pages"]) == (25, page, 3)
        seen += [item["id"] for item in body["items"]]
    assert len(seen) == 25
    assert set(seen) == {str(p.id) for p in created}
    # Newest first.
    assert seen[0] == str(created[-1].id)
    assert seen[-1] == str(created[0].id)

    beyond = client.get(API, query_string={"page": 4, "limit": 10}, headers=operator).get_json()
    assert beyond["items"] == [] and beyond["total"] == 25


def test_empty_list_has_zero_pages(client, operator):
    assert client.get(API, headers=operator).get_json() == {"items": [], "total": 0, "page": 1, "pages": 0}


@pytest.mark.parametrize("query", [{"limit": 101}, {"limit": 0}, {"page": 0}, {"page": "x"}, {"is_active": "maybe"}])
def test_bad_paging_arguments_are_422(client, operator, query):
    response = client.get(API, query_string=query, headers=operator)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert set(query) <= set(error["details"])


def test_limit_100_is_allowed(client, operator):
    make_project()
    assert client.get(API, query_string={"limit": 100}, headers=operator).status_code == 200


def test_is_active_filter(client, operator):
    active = {str(make_project().id) for _ in range(3)}
    inactive = {str(make_project(is_active=False).id) for _ in range(2)}
    only_active = client.get(API, query_string={"is_active": "true"}, headers=operator).get_json()
    assert {i["id"] for i in only_active["items"]} == active
    assert only_active["total"] == 3
    assert all(i["is_active"] is True for i in only_active["items"])
    only_inactive = client.get(API, query_string={"is_active": "false"}, headers=operator).get_json()
    assert {i["id"] for i in only_inactive["items"]} == inactive
    assert only_inactive["total"] == 2
    everything = client.get(API, headers=operator).get_json()
    assert everything["total"] == 5


# --- statistics --------------------------------------------------------------------------------------

def _populate(project, today_costs, yesterday_costs, open_issues, closed_issues, statuses):
    for _ in range(open_issues):
        make_issue(project, state="open")
    for _ in range(closed_issues):
        make_issue(project, state="closed")
    conversations = [make_conversation(project, status=s) for s in statuses]
    agent = make_agent(project)
    yesterday = today_at() - timedelta(hours=3)
    for i, cost in enumerate(today_costs):
        make_message(conversations[i % len(conversations)], agent=agent, cost_usd=cost, tokens_in=10,
                     created_at=today_at(i))
        make_spend(project, agent, cost, created_at=today_at(i))
    for i, cost in enumerate(yesterday_costs):
        make_message(conversations[i % len(conversations)], agent=agent, cost_usd=cost, created_at=yesterday)
        make_spend(project, agent, cost, created_at=yesterday)
    return conversations


def test_stats_are_computed_from_the_data(client, operator):
    """open_issues counts open issues, active_conversations active ones, today_cost sums today's spend.

    Yesterday's spend, closed issues, paused/completed conversations and other projects do not count;
    spend in a completed conversation today still does.
    """
    project = make_project()
    other = make_project()
    _populate(project, today_costs=["1.25", "0.50", "2.005", "0.000001"], yesterday_costs=["100", "7.5"],
              open_issues=3, closed_issues=2, statuses=["active", "active", "paused", "completed"])
    _populate(other, today_costs=["9"], yesterday_costs=["1"], open_issues=1, closed_issues=4,
              statuses=["completed", "paused", "active"])
    empty = make_project()

    stats = client.get(f"{API}/{project.id}", headers=operator).get_json()["stats"]
    assert stats["open_issues"] == 3
    assert stats["active_conversations"] == 2
    assert stats["today_cost"] == pytest.approx(3.755001)

    listed = {i["id"]: i["stats"] for i in client.get(API, headers=operator).get_json()["items"]}
    assert listed[str(project.id)] == stats
    assert listed[str(other.id)] == {"open_issues": 1, "active_conversations": 1, "today_cost": 9.0}
    assert listed[str(empty.id)] == {"open_issues": 0, "active_conversations": 0, "today_cost": 0.0}


def test_stats_follow_changes_in_the_data(client, operator):
    """Stats are not cached placeholders: completing a conversation and a new costly message show up."""
    project = make_project()
    conversation = make_conversation(project)
    before = client.get(f"{API}/{project.id}", headers=operator).get_json()["stats"]
    assert before == {"open_issues": 0, "active_conversations": 1, "today_cost": 0.0}
    agent = make_agent(project)
    make_message(conversation, agent=agent, cost_usd="0.75")
    make_spend(project, agent, "0.75")
    make_issue(project)
    conversation.status = "completed"
    db.session.commit()
    after = client.get(f"{API}/{project.id}", headers=operator).get_json()["stats"]
    assert after == {"open_issues": 1, "active_conversations": 0, "today_cost": 0.75}


def test_today_cost_is_what_the_ledger_recorded_including_calls_that_left_no_reply(client, operator):
    """A turn that failed after its call was paid for leaves no message; the money was spent all the same."""
    project = make_project()
    agent = make_agent(project)
    make_message(make_conversation(project, agents=[agent]), agent=agent, cost_usd="0.25")
    make_spend(project, agent, "0.25")
    make_spend(project, agent, "0.40")  # the failed turn's call
    stats = client.get(f"{API}/{project.id}", headers=operator).get_json()["stats"]
    assert stats["today_cost"] == pytest.approx(0.65)


def test_today_means_the_configured_timezone(app, client, operator):
    """today_cost starts at midnight of MCC_TIMEZONE, not at UTC midnight."""
    zone = ZoneInfo("Asia/Tokyo")  # UTC+9, no daylight saving time
    tokyo_midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    project = make_project()
    make_spend(project, cost_usd="1", created_at=tokyo_midnight + timedelta(seconds=30))
    make_spend(project, cost_usd="10", created_at=tokyo_midnight - timedelta(seconds=30))
    saved = app.config["MCC_TIMEZONE"]
    app.config["MCC_TIMEZONE"] = "Asia/Tokyo"
    try:
        stats = client.get(f"{API}/{project.id}", headers=operator).get_json()["stats"]
    finally:
        app.config["MCC_TIMEZONE"] = saved
    assert stats["today_cost"] == 1.0


def test_listing_100_projects_costs_as_many_queries_as_listing_5(client, operator):
    """Stats are computed per page in grouped queries, never one query per project."""
    def populate(count):
        for _ in range(count):
            project = make_project()
            make_issue(project)
            make_conversation(project)
            make_spend(project, cost_usd="0.1")

    populate(5)
    client.get(API, headers=operator)  # loads the revoked-token cache into Redis once
    # Requests share the test's session: start both measurements from the same, expired, state.
    db.session.commit()
    with count_queries() as few:
        response = client.get(API, query_string={"limit": 100}, headers=operator)
    assert len(response.get_json()["items"]) == 5
    assert all(i["stats"] == {"open_issues": 1, "active_conversations": 1, "today_cost": 0.1}
               for i in response.get_json()["items"])

    populate(95)
    db.session.commit()
    with count_queries() as many:
        response = client.get(API, query_string={"limit": 100}, headers=operator)
    assert len(response.get_json()["items"]) == 100
    assert all(i["stats"] == {"open_issues": 1, "active_conversations": 1, "today_cost": 0.1}
               for i in response.get_json()["items"])
    assert len(many) == len(few), "\n".join(many)
    assert len(many) <= 10, "\n".join(many)


# --- delete ----------------------------------------------------------------------------------------

def _count(model, **where) -> int:
    query = select(func.count()).select_from(model)
    for key, value in where.items():
        query = query.where(getattr(model, key) == value)
    return db.session.scalar(query)


def test_delete_removes_the_project_and_everything_that_belongs_to_it(client, operator):
    """DELETE cascades to agents, issues, conversations, their agent links and messages; other projects stay."""
    from mcc.models.agent import Agent
    from mcc.models.conversation import Conversation, Message, conversation_agents
    from mcc.models.github import Issue
    from mcc.models.turn import Turn

    doomed, kept = make_project(), make_project()
    ids = {}
    for project in (doomed, kept):
        agents = [make_agent(project), make_agent(project)]
        issue = make_issue(project)
        conversation = make_conversation(project, agents=agents, issue=issue)
        first = make_message(conversation, content="hello", user=make_user())
        make_message(conversation, agent=agents[0], cost_usd="0.2", reply_to=first)
        # A person's message over REST also queues an agent turn.
        posted = client.post(f"{API}/{project.id}/conversations/{conversation.id}/messages",
                             json={"content": "go on"}, headers=operator)
        assert posted.status_code == 201
        ids[project.id] = conversation.id

    response = client.delete(f"{API}/{doomed.id}", headers=operator)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.get(f"{API}/{doomed.id}", headers=operator), 404, "RESOURCE_NOT_FOUND")

    db.session.expire_all()
    assert _count(Agent, project_id=doomed.id) == 0
    assert _count(Issue, project_id=doomed.id) == 0
    assert _count(Conversation, project_id=doomed.id) == 0
    assert _count(Message, conversation_id=ids[doomed.id]) == 0
    assert _count(Turn, conversation_id=ids[doomed.id]) == 0
    assert db.session.scalar(select(func.count()).select_from(conversation_agents).where(
        conversation_agents.c.conversation_id == ids[doomed.id])) == 0

    assert _count(Agent, project_id=kept.id) == 2
    assert _count(Issue, project_id=kept.id) == 1
    assert _count(Message, conversation_id=ids[kept.id]) == 3
    assert _count(Turn, conversation_id=ids[kept.id]) == 1
    assert client.get(f"{API}/{kept.id}", headers=operator).status_code == 200
    # Deleting again: the project is gone.
    assert_error(client.delete(f"{API}/{doomed.id}", headers=operator), 404, "RESOURCE_NOT_FOUND")


# --- roles and errors --------------------------------------------------------------------------------

def test_viewer_reads_projects_but_every_write_is_forbidden(client, viewer):
    project = make_project(name="Untouched", github_repo="octo/untouched")
    assert client.get(API, headers=viewer).status_code == 200
    assert client.get(f"{API}/{project.id}", headers=viewer).status_code == 200

    attempts = [client.post(API, json={"name": "New", "github_repo": "octo/new"}, headers=viewer),
                client.post(API, json={}, headers=viewer),  # refused before validation
                client.patch(f"{API}/{project.id}", json={"name": "Changed"}, headers=viewer),
                client.delete(f"{API}/{project.id}", headers=viewer)]
    for response in attempts:
        assert "operator" in assert_error(response, 403, "FORBIDDEN")["message"]
    body = client.get(API, headers=viewer).get_json()
    assert body["total"] == 1
    assert body["items"][0]["name"] == "Untouched"


def test_operator_and_admin_may_write(client):
    for role in ("operator", "admin"):
        headers = auth_headers(client, make_user(role))
        created = client.post(API, json={"name": role, "github_repo": f"octo/{role}"}, headers=headers)
        assert created.status_code == 201
        pid = created.get_json()["id"]
        assert client.patch(f"{API}/{pid}", json={"name": "x"}, headers=headers).status_code == 200
        assert client.delete(f"{API}/{pid}", headers=headers).status_code == 204


def test_anonymous_requests_are_401(client):
    project = make_project()
    assert_error(client.get(API), 401, "UNAUTHORIZED")
    assert_error(client.get(f"{API}/{project.id}"), 401, "UNAUTHORIZED")
    assert_error(client.post(API, json={"name": "x", "github_repo": "a/b"}), 401, "UNAUTHORIZED")


def test_unknown_project_is_404_naming_the_project(client, operator):
    missing = uuid.uuid4()
    for response in (client.get(f"{API}/{missing}", headers=operator),
                     client.patch(f"{API}/{missing}", json={"name": "x"}, headers=operator),
                     client.delete(f"{API}/{missing}", headers=operator),
                     client.get(f"{API}/{missing}/agents", headers=operator),
                     client.get(f"{API}/{missing}/conversations", headers=operator)):
        error = assert_error(response, 404, "RESOURCE_NOT_FOUND")
        assert "Project" in error["message"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_malformed_project_id_is_404_not_500(client, operator, bad):
    for response in (client.get(f"{API}/{bad}", headers=operator),
                     client.patch(f"{API}/{bad}", json={"name": "x"}, headers=operator),
                     client.delete(f"{API}/{bad}", headers=operator),
                     client.get(f"{API}/{bad}/agents", headers=operator),
                     client.get(f"{API}/{bad}/conversations", headers=operator)):
        assert_error(response, 404, "RESOURCE_NOT_FOUND")


def test_a_repo_bound_concurrently_is_still_422_and_the_session_stays_usable(client, operator, monkeypatch):
    """Losing the race between the duplicate check and the insert is 422 naming github_repo, not 500."""
    from mcc.services import projects as service

    monkeypatch.setattr(service, "_check_repo_free", lambda *a, **k: None)  # lose the race on purpose
    make_project(github_repo="octo/raced")
    mine = make_project(github_repo="octo/mine")
    created = client.post(API, json={"name": "Late", "github_repo": "Octo/Raced"}, headers=operator)
    assert "github_repo" in assert_error(created, 422, "VALIDATION_ERROR")["details"]
    patched = client.patch(f"{API}/{mine.id}", json={"github_repo": "OCTO/RACED"}, headers=operator)
    assert "github_repo" in assert_error(patched, 422, "VALIDATION_ERROR")["details"]
    listed = client.get(API, headers=operator)
    assert listed.status_code == 200
    assert sorted(p["github_repo"] for p in listed.get_json()["items"]) == ["octo/mine", "octo/raced"]


# --- which repositories and credentials a project may use ---------------------------------------

@pytest.fixture
def allowed_repos(app):
    saved = app.config.get("MCC_GITHUB_ALLOWED_REPOS")
    app.config["MCC_GITHUB_ALLOWED_REPOS"] = ["acme", "Partner/Shared-Repo"]
    yield
    app.config["MCC_GITHUB_ALLOWED_REPOS"] = saved


@pytest.mark.parametrize("repo", ["victim/private", "partner/other", "acmecorp/app", "acme-x/app"])
def test_binding_outside_the_allow_list_is_refused(client, operator, allowed_repos, repo):
    response = client.post(API, json={"name": "Out", "github_repo": repo}, headers=operator)
    assert "github_repo" in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert client.get(API, headers=operator).get_json()["total"] == 0


@pytest.mark.parametrize("repo", ["acme/app", "ACME/Other", "partner/shared-repo"])
def test_binding_inside_the_allow_list_is_accepted(client, operator, allowed_repos, repo):
    assert client.post(API, json={"name": "In", "github_repo": repo}, headers=operator).status_code == 201


def test_patch_cannot_move_a_project_outside_the_allow_list(client, operator, allowed_repos):
    created = client.post(API, json={"name": "In", "github_repo": "acme/app"}, headers=operator).get_json()
    response = client.patch(f"{API}/{created['id']}", json={"github_repo": "victim/private"}, headers=operator)
    assert "github_repo" in assert_error(response, 422, "VALIDATION_ERROR")["details"]


def test_an_unset_allow_list_is_warned_about_at_start(test_env, caplog):
    from mcc import create_app

    env = {k: v for k, v in test_env.items() if k != "MCC_GITHUB_ALLOWED_REPOS"}
    with caplog.at_level("WARNING"):
        create_app({"TESTING": True}, env=env)
    assert any("MCC_GITHUB_ALLOWED_REPOS is unset" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        create_app({"TESTING": True}, env={**env, "MCC_GITHUB_ALLOWED_REPOS": "acme"})
    assert not any("MCC_GITHUB_ALLOWED_REPOS" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("field", ["github_app_id", "github_installation_id"])
def test_only_an_admin_sets_installation_fields(client, operator, admin, field):
    response = client.post(API, json={"name": "P", "github_repo": "acme/app", field: "4242"}, headers=operator)
    assert_error(response, 403, "FORBIDDEN")
    created = client.post(API, json={"name": "P", "github_repo": "acme/app", field: None}, headers=operator)
    assert created.status_code == 201, created.get_json()
    url = f"{API}/{created.get_json()['id']}"
    assert_error(client.patch(url, json={field: "4242"}, headers=operator), 403, "FORBIDDEN")
    assert client.get(url, headers=operator).get_json()[field] is None
    response = client.patch(url, json={field: "4242"}, headers=admin)
    assert response.status_code == 200 and response.get_json()[field] == "4242"
    # Sending the value it already has (a form round trip) is not a change.
    assert client.patch(url, json={field: "4242", "name": "Q"}, headers=operator).status_code == 200
