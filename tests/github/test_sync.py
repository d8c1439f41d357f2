"""The full sync: a paginated repository imported into the same records webhooks write, ETags for
unchanged listings, older snapshots never winning, failures notified, and its scheduling."""
from __future__ import annotations

import uuid

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import select

from mcc.extensions import db
from mcc.models.control import Notification
from mcc.models.github import GitHubSyncState, Issue
from tests.factories import assert_error, make_project
from tests.github.conftest import deliver, load_payload, process_all
from workers.github import sync_repository

REPO = "octo-org/busy-repo"


@pytest.fixture
def busy(fake_github):
    """250 issues and 30 pull requests; the issues API lists all 280 (pull requests mixed in)."""
    repo = fake_github.add_repo(REPO)
    for n in range(280):
        if n % 9 == 4 and len(repo.pulls) < 30:
            repo.add_pull(title=f"PR {n}", state="open" if len(repo.pulls) % 8 == 0 else "closed")
        else:
            repo.add_issue(title=f"Issue {n}", labels=["bug"] if n % 2 else [],
                           state="closed" if n % 5 == 0 else "open")
    assert (len(repo.issues), len(repo.pulls)) == (250, 30)
    return repo


@pytest.fixture
def project(db_session, github_config, busy):
    return make_project(github_repo=REPO)


@pytest.fixture
def small(fake_github):
    repo = fake_github.add_repo("octo-org/small-repo")
    for n in range(5):
        repo.add_issue(title=f"Issue {n}")
    repo.add_pull(title="Open one")
    repo.add_pull(title="Open two")
    repo.add_pull(title="Closed", state="closed")
    return repo


@pytest.fixture
def small_project(db_session, github_config, small):
    return make_project(github_repo="octo-org/small-repo")


def listed(client, project, headers, what: str, **params) -> dict:
    response = client.get(f"/api/v1/projects/{project.id}/{what}", query_string={"limit": 100, **params},
                          headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_full_sync_imports_a_paginated_repository(client, app, project, operator, busy, fake_github):
    result = sync_repository(str(project.id))
    assert result["status"] == "ok", result
    assert result["issues"]["created"] == 250 and result["issues"]["pull_requests_skipped"] == 30
    assert result["pull_requests"]["created"] == 30
    assert [c.query.get("page", "1") for c in fake_github.calls("GET", r"/issues$")] == ["1", "2", "3"]
    issues = listed(client, project, operator, "issues", state="all")
    assert issues["total"] == 250 and issues["pages"] == 3
    assert listed(client, project, operator, "issues")["total"] == len([i for i in busy.issues.values()
                                                                         if i["state"] == "open"])
    bugs = [i for i in busy.issues.values() if i["labels"]]
    assert listed(client, project, operator, "issues", state="all", label="BUG")["total"] == len(bugs) > 100
    pulls = listed(client, project, operator, "pull-requests", state="all")
    assert pulls["total"] == 30
    numbers = {i["number"] for i in issues["items"]} | {p["number"] for p in pulls["items"]}
    assert not numbers & set(busy.pulls) - {p["number"] for p in pulls["items"]}
    open_pulls = listed(client, project, operator, "pull-requests")["items"]
    assert {p["number"] for p in open_pulls} == {n for n, p in busy.pulls.items() if p["state"] == "open"}
    state = db.session.get(GitHubSyncState, project.id)
    assert state.last_status == "ok" and state.issues_etag and state.pulls_etag


def test_an_unchanged_repository_costs_conditional_requests_only(client, app, project, busy, fake_github):
    sync_repository(str(project.id))
    first_run = len(fake_github.calls())
    result = sync_repository(str(project.id))
    assert result["issues"] == {"not_modified": True}
    assert result["pull_requests"]["not_modified"] is True
    listings = [c for c in fake_github.calls()[first_run:] if c.path.endswith(("/issues", "/pulls"))]
    assert len(listings) == 2 and all(c.headers.get("If-None-Match") for c in listings)
    busy.touch(busy.issues[1], title="Renamed on GitHub")
    result = sync_repository(str(project.id))
    assert result["issues"]["updated"] >= 1
    assert db.session.scalar(select(Issue.title).where(Issue.project_id == project.id, Issue.number == 1)) == \
        "Renamed on GitHub"


def test_webhooks_and_sync_share_one_record_and_older_snapshots_lose(client, app, db_session, github_config,
                                                                       fake_github, operator):
    """A webhook newer than the sync's snapshot wins; the sync does not duplicate it."""
    repo = fake_github.add_repo("Codertocat/Hello-World")
    issue = repo.add_issue(title="Spelling error in the README file")  # number 1, updated 2026-01-01
    project = make_project(github_repo="Codertocat/Hello-World")
    newer = load_payload("issues/edited.payload.json")
    newer["issue"].update(title="Edited after the sync's snapshot", updated_at="2030-01-01T00:00:00Z",
                          number=issue["number"])
    deliver(client, "issues", newer)
    process_all(app)
    assert sync_repository(str(project.id))["issues"]["stale"] == 1
    [row] = listed(client, project, operator, "issues", state="all")["items"]
    assert row["title"] == "Edited after the sync's snapshot"


def test_issues_gone_from_github_are_no_longer_listed(client, app, small_project, small, operator):
    sync_repository(str(small_project.id))
    del small.issues[1]
    small.add_issue(title="Another")  # the listing changes, so no 304
    sync_repository(str(small_project.id))
    numbers = {i["number"] for i in listed(client, small_project, operator, "issues", state="all", limit=100,
                                           page=1)["items"]}
    assert 1 not in numbers
    assert db.session.scalar(select(Issue).where(Issue.project_id == small_project.id, Issue.number == 1)).deleted_at


def test_open_pull_requests_get_their_checks_and_reviews(client, app, small_project, small, operator):
    number, pull = next((n, p) for n, p in small.pulls.items() if p["state"] == "open")
    small.add_check_run(pull["head"]["sha"], "tests", conclusion="success")
    small.add_status(pull["head"]["sha"], "lint", "failure")
    small.reviews[number] = [{"id": 5, "state": "APPROVED", "body": "", "user": {"login": "alice"},
                             "commit_id": pull["head"]["sha"], "submitted_at": "2026-02-01T00:00:00Z"}]
    sync_repository(str(small_project.id))
    row = next(p for p in listed(client, small_project, operator, "pull-requests")["items"] if p["number"] == number)
    assert (row["checks_state"], row["review_state"]) == ("failure", "approved")
    small.add_status(pull["head"]["sha"], "lint", "success")
    sync_repository(str(small_project.id))
    row = next(p for p in listed(client, small_project, operator, "pull-requests")["items"] if p["number"] == number)
    assert row["checks_state"] == "success"


def test_a_failing_sync_is_notified_once_per_failure_streak(client, app, small_project, fake_github):
    fake_github.fail("GET", r"/issues$", 500, {"message": "Server Error"}, times=100)
    for _ in range(2):
        result = sync_repository(str(small_project.id))
        assert result["status"] == "failed" and "Server Error" in result["error"]
    notes = db.session.scalars(select(Notification).where(Notification.kind == "github_sync_failed")).all()
    assert len(notes) == 1 and notes[0].project_id == small_project.id
    state = db.session.get(GitHubSyncState, small_project.id)
    assert state.last_status == "failed" and state.issues_etag is None
    fake_github.failures.clear()
    assert sync_repository(str(small_project.id))["status"] == "ok"


def test_a_sync_interrupted_mid_listing_keeps_no_etag(client, app, project, fake_github):
    """Page 2 fails: the next sync must not be told "unchanged" by page 1's ETag."""
    fake_github.fail("GET", r"/issues$", 404, {"message": "Not Found"}, query={"page": "2"})
    assert sync_repository(str(project.id))["status"] == "failed"
    assert db.session.get(GitHubSyncState, project.id).issues_etag is None
    result = sync_repository(str(project.id))
    assert result["status"] == "ok" and result["issues"]["created"] == 250  # page 1 was rolled back too


# --- the endpoint and scheduling ----------------------------------------------------------------------
def queued_jobs(app) -> list:
    from mcc.redis_store import get_redis

    with app.app_context():
        return Queue("github", connection=get_redis(), serializer=JSONSerializer).get_jobs()


def test_post_sync_enqueues_one_full_sync(client, app, small_project, operator, viewer):
    url = f"/api/v1/projects/{small_project.id}/sync"
    assert_error(client.post(url, headers=viewer), 403, "FORBIDDEN")
    first = client.post(url, headers=operator)
    assert first.status_code == 202 and first.get_json() == {"project_id": str(small_project.id), "status": "queued"}
    assert client.post(url, headers=operator).get_json()["status"] == "already_queued"
    [job] = queued_jobs(app)
    assert job.func_name == "workers.github.sync_repository" and job.args == [str(small_project.id)]
    assert_error(client.post(f"/api/v1/projects/{uuid.uuid4()}/sync", headers=operator), 404, "RESOURCE_NOT_FOUND")


def test_post_sync_without_github_access_is_409(client, app, small_project, operator, github_config):
    github_config["MCC_GITHUB_TOKEN"] = None
    assert_error(client.post(f"/api/v1/projects/{small_project.id}/sync", headers=operator), 409,
                 "GITHUB_NOT_CONFIGURED")


def test_creating_a_project_enqueues_its_first_sync_when_github_is_configured(client, app, github_config, operator):
    created = client.post("/api/v1/projects", json={"name": "New", "github_repo": "octo-org/new-repo"},
                          headers=operator)
    assert created.status_code == 201
    assert [j.args for j in queued_jobs(app)] == [[created.get_json()["id"]]]
    github_config["MCC_GITHUB_TOKEN"] = None
    client.post("/api/v1/projects", json={"name": "Offline", "github_repo": "octo-org/offline"}, headers=operator)
    assert len(queued_jobs(app)) == 1


def test_each_sync_keeps_one_periodic_safety_net_scheduled(client, app, small_project, redis_client):
    sync_repository(str(small_project.id))
    sync_repository(str(small_project.id))
    with app.app_context():
        registry = ScheduledJobRegistry("github", connection=redis_client, serializer=JSONSerializer)
        assert len(registry.get_job_ids()) == 1
