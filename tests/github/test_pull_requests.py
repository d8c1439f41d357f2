"""Pull requests over REST: the list, approve (merge only when every check passed) and reject
(request changes, or a comment where GitHub allows no review). GitHub failures change nothing."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mcc.extensions import db
from mcc.github import records
from mcc.models.control import Notification
from mcc.models.github import PullRequest, PullRequestReview
from mcc.models.task import Task
from mcc.services.pull_requests import feedback_for
from tests.factories import assert_error, make_issue, make_project
from tests.github.fake_github import BOT_LOGIN

REPO = "octo-org/shop"
PR_FIELDS = {"id", "number", "title", "body", "state", "draft", "head_ref", "base_ref", "head_sha", "author",
             "html_url", "checks_state", "review_state", "comments", "task", "issue", "merged_at", "created_at",
             "updated_at"}


@pytest.fixture
def shop(fake_github):
    return fake_github.add_repo(REPO)


@pytest.fixture
def project(db_session, github_config, shop):
    return make_project(github_repo=REPO)


def mirrored(project, pull: dict) -> PullRequest:
    """The pull request as a sync or webhook would have stored it."""
    pr, _ = records.upsert_pull_request(project.id, pull)
    db.session.commit()
    return pr


def url(project, pr=None, action: str | None = None) -> str:
    base = f"/api/v1/projects/{project.id}/pull-requests"
    return base if pr is None else f"{base}/{pr.id}" + (f"/{action}" if action else "")


def green(shop, pull: dict) -> None:
    shop.add_check_run(pull["head"]["sha"], "tests", conclusion="success")
    shop.add_check_run(pull["head"]["sha"], "docs", conclusion="skipped")
    shop.add_status(pull["head"]["sha"], "ci/lint", "success")


# --- listing -------------------------------------------------------------------------------------------
def test_list_shows_the_spec_fields_with_linked_task_and_issue(client, project, shop, operator, viewer):
    issue = make_issue(project, number=40, title="Checkout is slow")
    pull = shop.add_pull(title="Speed up checkout", head_ref="fast-checkout", body="Fixes #40")
    merged = shop.add_pull(title="Old work")
    shop.touch(merged, state="closed", merged=True, merged_at="2026-01-02T00:00:00Z")
    closed = shop.add_pull(title="Abandoned", state="closed")
    pr = mirrored(project, pull)
    for other in (merged, closed):
        mirrored(project, other)
    task = Task(project_id=project.id, title="Make checkout fast", issue_id=issue.id)
    db.session.add(task)
    db.session.flush()
    pr.task_id = task.id
    db.session.commit()
    response = client.get(url(project), headers=viewer)
    assert response.status_code == 200
    page = response.get_json()
    assert (page["total"], page["page"], page["pages"]) == (1, 1, 1)
    [item] = page["items"]
    assert set(item) == PR_FIELDS
    assert item["task"] == {"id": str(task.id), "title": "Make checkout fast", "status": "pending"}
    assert item["issue"] == {"id": str(issue.id), "number": 40, "title": "Checkout is slow"}
    assert (item["head_ref"], item["base_ref"], item["head_sha"]) == ("fast-checkout", "main", pull["head"]["sha"])
    assert item["checks_state"] == "none" and item["review_state"] == "none"
    states = {p["number"]: p["state"] for p in client.get(url(project), query_string={"state": "all"},
                                                          headers=viewer).get_json()["items"]}
    assert states == {pull["number"]: "open", merged["number"]: "merged", closed["number"]: "closed"}
    only = client.get(url(project), query_string={"state": "merged"}, headers=viewer).get_json()["items"]
    assert [p["number"] for p in only] == [merged["number"]]
    assert_error(client.get(url(project), query_string={"state": "draft"}, headers=viewer), 422, "VALIDATION_ERROR")


# --- approve -------------------------------------------------------------------------------------------
def test_approve_merges_when_every_check_passed(client, project, shop, fake_github, operator):
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)
    response = client.post(url(project, pr, "approve"), headers=operator)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["state"] == "merged" and body["merged_at"]
    assert shop.merges == [{"number": pull["number"], "merge_method": "squash", "sha": pull["head"]["sha"]}]
    [review] = db.session.scalars(select(PullRequestReview)).all()
    assert (review.verdict, review.source, review.github_kind) == ("approved", "mcc", "merge")
    assert fake_github.calls("GET", r"/commits/.+/status$") and fake_github.calls("GET", r"/check-runs$")


def test_merge_method_is_configurable_per_project(client, project, shop, operator):
    response = client.patch(f"/api/v1/projects/{project.id}/github",
                            json={"merge_method": "rebase", "allow_merge_without_checks": True}, headers=operator)
    assert response.status_code == 200 and response.get_json()["merge_method"] == "rebase"
    assert_error(client.patch(f"/api/v1/projects/{project.id}/github", json={"merge_method": "octopus"},
                              headers=operator), 422, "VALIDATION_ERROR")
    pr = mirrored(project, shop.add_pull())
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 200
    assert shop.merges[0]["merge_method"] == "rebase"


def test_approve_with_failing_or_pending_checks_is_409_and_merges_nothing(client, project, shop, operator):
    pull = shop.add_pull()
    sha = pull["head"]["sha"]
    shop.add_check_run(sha, "tests", conclusion="failure")
    shop.add_check_run(sha, "build", status="in_progress", conclusion=None)
    shop.add_check_run(sha, "lint", conclusion="success")
    shop.add_status(sha, "ci/deploy-preview", "error")
    pr = mirrored(project, pull)
    error = assert_error(client.post(url(project, pr, "approve"), headers=operator), 409, "CHECKS_NOT_PASSED")
    assert {c["name"] for c in error["details"]["failing"]} == {"tests", "ci/deploy-preview"}
    assert [c["name"] for c in error["details"]["pending"]] == ["build"]
    assert "tests (failure)" in error["message"]
    assert shop.merges == []
    assert db.session.get(PullRequest, pr.id).state == "open"


def test_a_rerun_that_passed_replaces_the_failed_run(client, project, shop, operator):
    pull = shop.add_pull()
    shop.add_check_run(pull["head"]["sha"], "tests", conclusion="failure")
    shop.add_check_run(pull["head"]["sha"], "tests", conclusion="success")
    pr = mirrored(project, pull)
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 200


def test_without_checks_approve_needs_the_project_to_allow_it(client, project, shop, operator):
    pr = mirrored(project, shop.add_pull())
    error = assert_error(client.post(url(project, pr, "approve"), headers=operator), 409, "CHECKS_NOT_PASSED")
    assert error["details"]["reason"] == "no checks" and shop.merges == []
    project.allow_merge_without_checks = True
    db.session.commit()
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 200


def test_approve_when_the_head_moved_is_409_stale_head(client, project, shop, operator):
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)  # MCC knows the first head
    shop.push_head(pull["number"], "f" * 40)
    error = assert_error(client.post(url(project, pr, "approve"), headers=operator), 409, "STALE_HEAD")
    assert error["details"]["head_sha"] == pr.head_sha
    assert shop.merges == [] and db.session.get(PullRequest, pr.id).state == "open"


def test_github_failure_during_merge_is_502_and_changes_nothing_locally(client, project, shop, fake_github,
                                                                        operator):
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)
    fake_github.fail("PUT", r"/merge$", 500, {"message": "Something went wrong while merging"}, times=10)
    error = assert_error(client.post(url(project, pr, "approve"), headers=operator), 502, "GITHUB_API_ERROR")
    assert "Something went wrong while merging" in error["message"]
    assert error["details"]["github_status"] == 500
    assert db.session.get(PullRequest, pr.id).state == "open"
    assert db.session.scalar(select(func.count()).select_from(PullRequestReview)) == 0
    note = db.session.scalar(select(Notification).where(Notification.kind == "github_api_error"))
    assert note is not None and note.project_id == project.id


def test_only_open_pull_requests_can_be_approved_and_only_by_operators(client, project, shop, operator, viewer):
    pr = mirrored(project, shop.add_pull(state="closed"))
    assert_error(client.post(url(project, pr, "approve"), headers=viewer), 403, "FORBIDDEN")
    assert_error(client.post(url(project, pr, "approve"), headers=operator), 409, "CONFLICT")
    other = make_project()
    assert_error(client.post(url(other, pr, "approve"), headers=operator), 404, "RESOURCE_NOT_FOUND")


# --- reject ---------------------------------------------------------------------------------------------
def test_reject_posts_a_review_requesting_changes_and_keeps_the_feedback(client, project, shop, fake_github,
                                                                         operator):
    pull = shop.add_pull()
    pr = mirrored(project, pull)
    response = client.post(url(project, pr, "reject"), json={"feedback": "Add tests for the empty cart."},
                           headers=operator)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["review_state"] == "changes_requested"
    [call] = fake_github.calls("POST", r"/pulls/\d+/reviews$")
    assert call.body == {"event": "REQUEST_CHANGES", "body": "Add tests for the empty cart.",
                         "commit_id": pull["head"]["sha"]}
    [feedback] = feedback_for(pr.id)
    assert (feedback.body, feedback.source, feedback.github_kind) == ("Add tests for the empty cart.", "mcc", "review")
    assert feedback.github_id == shop.reviews[pull["number"]][0]["id"]
    detail = client.get(url(project, pr), headers=operator).get_json()
    assert [(r["verdict"], r["delivered_as"]) for r in detail["reviews"]] == [("changes_requested", "review")]
    # GitHub's webhook for the same review later: still one record, still MCC's.
    records.upsert_review(pr, shop.reviews[pull["number"]][0])
    db.session.commit()
    assert [(r.source, r.verdict) for r in db.session.scalars(select(PullRequestReview))] == [
        ("mcc", "changes_requested")]


def test_reject_falls_back_to_a_comment_where_github_refuses_the_review(client, project, shop, fake_github,
                                                                        operator):
    pull = shop.add_pull(author=BOT_LOGIN)  # the App's own pull request: GitHub answers 422
    pr = mirrored(project, pull)
    response = client.post(url(project, pr, "reject"), json={"feedback": "Rename the flag."}, headers=operator)
    assert response.status_code == 200, response.get_json()
    assert len(fake_github.calls("POST", r"/reviews$")) == 1
    [comment] = shop.comments[pull["number"]]
    assert "Rename the flag." in comment["body"] and "Changes requested" in comment["body"]
    [feedback] = feedback_for(pr.id)
    assert (feedback.github_kind, feedback.github_id, feedback.body) == ("comment", comment["id"], "Rename the flag.")


def test_reject_failure_on_github_is_502_and_records_nothing(client, project, shop, fake_github, operator):
    pr = mirrored(project, shop.add_pull())
    fake_github.fail("POST", r"/reviews$", 404, {"message": "Not Found"})
    error = assert_error(client.post(url(project, pr, "reject"), json={"feedback": "x"}, headers=operator),
                         502, "GITHUB_API_ERROR")
    assert error["details"]["github_message"] == "Not Found"
    assert feedback_for(pr.id) == [] and db.session.get(PullRequest, pr.id).review_state == "none"


def test_reject_needs_feedback(client, project, shop, operator):
    pr = mirrored(project, shop.add_pull())
    assert "feedback" in assert_error(client.post(url(project, pr, "reject"), json={}, headers=operator),
                                      422, "VALIDATION_ERROR")["details"]
    assert_error(client.post(url(project, pr, "reject"), json={"feedback": ""}, headers=operator),
                 422, "VALIDATION_ERROR")


def test_a_persons_merge_completes_the_task_and_closes_its_issue(client, project, shop, operator):
    """The pipeline hook: the merged pull request's task (in review) completes; its issue closes on
    GitHub once every task of the issue is completed."""
    gh_issue = shop.add_issue(title="Add a cart")
    issue, _ = records.upsert_issue(project.id, gh_issue)
    task = Task(project_id=project.id, title="Cart", issue_id=issue.id, status="review")
    db.session.add(task)
    pull = shop.add_pull()
    green(shop, pull)
    pr = mirrored(project, pull)
    pr.task_id = task.id
    db.session.commit()
    assert client.post(url(project, pr, "approve"), headers=operator).status_code == 200
    assert db.session.get(Task, task.id).status == "completed"
    assert shop.issues[gh_issue["number"]]["state"] == "closed"


def test_a_persons_rejection_sends_the_task_back_to_its_coder(client, project, shop, operator):
    task = Task(project_id=project.id, title="Cart", status="review")
    db.session.add(task)
    pr = mirrored(project, shop.add_pull())
    pr.task_id = task.id
    db.session.commit()
    response = client.post(url(project, pr, "reject"), json={"feedback": "Handle an empty cart."}, headers=operator)
    assert response.status_code == 200
    task = db.session.get(Task, task.id)
    assert task.status == "in_progress" and "Handle an empty cart." in task.feedback


def test_approve_without_github_access_is_409(client, project, shop, operator, github_config):
    pr = mirrored(project, shop.add_pull())
    github_config["MCC_GITHUB_TOKEN"] = None
    assert_error(client.post(url(project, pr, "approve"), headers=operator), 409, "GITHUB_NOT_CONFIGURED")
