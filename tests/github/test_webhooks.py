"""POST /api/v1/webhooks/github: signed deliveries only, stored once, processed on a worker job."""
from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from mcc.extensions import db
from mcc.models.github import Issue, PullRequest, PullRequestReview, WebhookDelivery
from mcc.github.webhooks import sign
from tests.factories import assert_error, make_project
from tests.github.conftest import (HELLO, PAYLOADS, SECRET, all_payloads, deliver, load_payload, payload_path,
                                   process_all)

ALL_PAYLOADS = all_payloads()


def deliveries() -> list[WebhookDelivery]:
    return list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.received_at)))


def issues_of(client, project, headers, **params) -> list[dict]:
    response = client.get(f"/api/v1/projects/{project.id}/issues", query_string=params, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def pulls_of(client, project, headers, **params) -> list[dict]:
    response = client.get(f"/api/v1/projects/{project.id}/pull-requests", query_string=params, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


# --- signatures -------------------------------------------------------------------------------
def test_unsigned_delivery_is_refused_and_nothing_is_stored(client, hello):
    """No X-Hub-Signature-256: 401 in the error format, no row."""
    response = deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes(), secret=None)
    assert_error(response, 401, "UNAUTHORIZED")
    assert deliveries() == []


@pytest.mark.parametrize("signature", ["sha256=" + "0" * 64, "sha1=abc", "sha256=zz", "garbage"])
def test_mis_signed_delivery_is_refused_and_nothing_is_stored(client, hello, signature):
    response = deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes(),
                       signature=signature)
    assert_error(response, 401, "UNAUTHORIZED")
    assert deliveries() == []


def test_delivery_signed_with_another_secret_is_refused(client, hello):
    response = deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes(),
                       secret="not-the-secret")
    assert_error(response, 401, "UNAUTHORIZED")
    assert deliveries() == []


def test_altered_body_is_refused(client, hello):
    """The signature covers the exact bytes: one changed byte is a wrong signature."""
    raw = payload_path("issues/opened.payload.json").read_bytes()
    from mcc.github.webhooks import sign
    response = deliver(client, "issues", raw.replace(b"Spelling", b"Spelunking"), signature=sign(SECRET, raw))
    assert_error(response, 401, "UNAUTHORIZED")
    assert db.session.scalar(select(func.count()).select_from(Issue)) == 0


def test_without_a_configured_secret_webhooks_are_refused_503(client, hello, github_config):
    github_config["MCC_GITHUB_WEBHOOK_SECRET"] = None
    response = deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes())
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert deliveries() == []


def test_a_project_secret_signs_deliveries_of_its_own_repository_only(client, hello, github_config):
    """With only per-project secrets, a delivery to project A's URL signed by A's secret about A is
    accepted; the same secret cannot vouch for another project's repository."""
    github_config["MCC_GITHUB_WEBHOOK_SECRET"] = None
    hello.github_webhook_secret = "hello-world-own-secret"  # as stored before sealing: still read
    other = make_project(github_repo="octo-org/octo-repo")
    db.session.commit()
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert deliver(client, "issues", raw, secret="hello-world-own-secret", project=hello).status_code == 202
    transferred = payload_path("issues/transferred.payload.json").read_bytes()  # about octo-org/octo-repo
    assert_error(deliver(client, "issues", transferred, secret="hello-world-own-secret", project=hello),
                 401, "UNAUTHORIZED")
    assert_error(deliver(client, "issues", transferred, secret="hello-world-own-secret", project=other),
                 503, "SERVICE_UNAVAILABLE")  # other has no secret of its own, and there is no global one
    assert [d.repo_full_name for d in deliveries()] == [HELLO]
    assert other.github_webhook_secret is None


def test_the_global_url_tries_the_global_secret_only(client, hello, github_config):
    """A forged body must not cost one HMAC per project secret: /webhooks/github never tries them."""
    hello.github_webhook_secret = "hello-world-own-secret"
    db.session.commit()
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert_error(deliver(client, "issues", raw, secret="hello-world-own-secret"), 401, "UNAUTHORIZED")
    assert deliver(client, "issues", raw, project=hello).status_code == 401  # its own URL: its own secret only
    assert deliveries() == []
    assert deliver(client, "issues", raw, secret="hello-world-own-secret", project=hello).status_code == 202


def test_a_project_url_without_its_own_secret_takes_the_global_one(client, hello):
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert deliver(client, "issues", raw, project=hello).status_code == 202
    assert_error(client.post(f"/api/v1/webhooks/github/{uuid.uuid4()}", data=raw, headers={
        "X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Event": "issues", "X-GitHub-Delivery": "x"}),
        404, "RESOURCE_NOT_FOUND")


def test_a_project_secret_cannot_change_installations(client, app, hello, github_config, fake_github, rsa_keys):
    """The reproduction: an installation event signed with project A's secret (naming A's repository
    to pass the repository check) rebound project B. Installation events need the global secret."""
    from mcc.models.project import Project

    github_config.update(MCC_GITHUB_APP_ID=fake_github.app_id, MCC_GITHUB_APP_PRIVATE_KEY=rsa_keys[0])
    hello.github_webhook_secret = "hello-world-own-secret"
    victim = make_project(github_repo="victim/app", github_installation_id="111")
    fake_github.add_repo("victim/app", installation_id="111")
    fake_github.add_repo("mallory/app", installation_id="666")
    db.session.commit()
    for event, payload in (
            ("installation", {"action": "created", "installation": {"id": 666, "app_id": int(fake_github.app_id)},
                              "repositories": [{"full_name": "victim/app"}]}),
            ("installation", {"action": "deleted", "installation": {"id": 111, "app_id": int(fake_github.app_id)}}),
            ("installation_repositories", {"action": "added", "installation": {"id": 666},
                                           "repositories_added": [{"full_name": "victim/app"}],
                                           "repositories_removed": []})):
        payload = {**payload, "repository": {"full_name": HELLO}}
        for target in (None, hello):
            response = deliver(client, event, payload, secret="hello-world-own-secret", project=target)
            assert response.status_code == 401, (event, target, response.get_json())
    process_all(app)
    assert db.session.get(Project, victim.id).github_installation_id == "111"
    assert deliveries() == []


# --- replays and load -------------------------------------------------------------------------------
def test_a_replayed_body_under_a_new_delivery_id_is_a_duplicate(client, hello, app):
    """The signature covers the body only: a captured delivery sent again with a fresh
    X-GitHub-Delivery changes nothing."""
    raw = payload_path("issues/opened.payload.json").read_bytes()
    first = deliver(client, "issues", raw, delivery="first-delivery")
    assert first.status_code == 202 and first.get_json()["status"] == "accepted"
    replay = deliver(client, "issues", raw, delivery="replayed-delivery")
    assert replay.status_code == 200, replay.get_json()
    assert replay.get_json()["status"] == "duplicate"
    assert [d.delivery_id for d in deliveries()] == ["first-delivery"]
    # GitHub's own redelivery repeats the delivery id and is still answered as before.
    assert deliver(client, "issues", raw, delivery="first-delivery").get_json()["status"] == "duplicate"


def test_a_refused_body_is_not_remembered(client, hello):
    """Only accepted bodies count: a body refused (here: no X-GitHub-Delivery) may come again."""
    raw = payload_path("issues/opened.payload.json").read_bytes()
    response = client.post("/api/v1/webhooks/github", data=raw, headers={
        "X-GitHub-Event": "issues", "X-Hub-Signature-256": sign(SECRET, raw), "Content-Type": "application/json"})
    assert_error(response, 422, "VALIDATION_ERROR")
    assert deliver(client, "issues", raw).get_json()["status"] == "accepted"


def test_webhook_requests_beyond_the_concurrency_bound_wait_then_503(client, hello, github_config):
    from mcc.github import webhooks

    github_config.update(MCC_GITHUB_WEBHOOK_CONCURRENCY=2, MCC_GITHUB_WEBHOOK_WAIT=0.2)
    raw = payload_path("issues/opened.payload.json").read_bytes()
    with client.application.app_context():
        with webhooks.webhook_slot(), webhooks.webhook_slot():
            assert_error(deliver(client, "issues", raw), 503, "SERVICE_UNAVAILABLE")
    assert deliveries() == []
    assert deliver(client, "issues", raw).status_code == 202


def test_a_project_webhook_secret_is_stored_sealed(client, hello, operator):
    from mcc.models.project import Project

    secret = "a-fresh-project-secret-" + "x" * 77  # 100 characters: the longest accepted, sealed it fits
    too_long = client.patch(f"/api/v1/projects/{hello.id}/github", json={"webhook_secret": secret + "x"},
                            headers=operator)
    assert "webhook_secret" in assert_error(too_long, 422, "VALIDATION_ERROR")["details"]
    response = client.patch(f"/api/v1/projects/{hello.id}/github", json={"webhook_secret": secret},
                            headers=operator)
    assert response.status_code == 200, response.get_json()
    stored = db.session.get(Project, hello.id).github_webhook_secret
    assert stored.startswith("v1:") and secret not in stored
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert deliver(client, "issues", raw, secret=secret, project=hello).status_code == 202


def test_a_project_secret_is_never_returned_by_the_api(client, hello, operator):
    response = client.patch(f"/api/v1/projects/{hello.id}/github", json={"webhook_secret": "s" * 20},
                            headers=operator)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["webhook_secret_set"] is True
    for body in (response.get_data(as_text=True),
                 client.get(f"/api/v1/projects/{hello.id}", headers=operator).get_data(as_text=True),
                 client.get(f"/api/v1/projects/{hello.id}/github", headers=operator).get_data(as_text=True)):
        assert "s" * 20 not in body


# --- storing and deduplicating --------------------------------------------------------------------
def test_signed_delivery_is_stored_and_answered_202_before_processing(client, hello, operator, app):
    raw = payload_path("issues/opened.payload.json").read_bytes()
    response = deliver(client, "issues", raw, delivery="d-1")
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted", "delivery_id": "d-1", "event": "issues", "reason": None}
    [stored] = deliveries()
    assert (stored.event, stored.action, stored.repo_full_name, stored.status) == ("issues", "opened", HELLO,
                                                                                    "received")
    assert stored.project_id == hello.id and stored.payload == json.loads(raw)
    assert issues_of(client, hello, operator) == []  # the worker has not run yet
    assert process_all(app) == ["processed"]
    [issue] = issues_of(client, hello, operator)
    assert issue["number"] == 1 and issue["title"] == "Spelling error in the README file"


def test_redelivery_is_answered_200_and_changes_nothing(client, hello, operator, app):
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert deliver(client, "issues", raw, delivery="same").status_code == 202
    process_all(app)
    before = issues_of(client, hello, operator)
    again = deliver(client, "issues", raw, delivery="same")
    assert again.status_code == 200
    assert again.get_json()["status"] == "duplicate"
    assert len(deliveries()) == 1 and deliveries()[0].status == "processed"
    assert process_all(app) == []
    assert issues_of(client, hello, operator) == before


def test_redelivery_of_a_failed_delivery_processes_it_again(client, hello, app):
    """What an operator redelivers for: a delivery that failed is retried (202), once."""
    raw = payload_path("issues/opened.payload.json").read_bytes()
    deliver(client, "issues", raw, delivery="again")
    stored = deliveries()[0]
    stored.status, stored.error = "failed", "boom"
    db.session.commit()
    response = deliver(client, "issues", raw, delivery="again")
    assert response.status_code == 202 and response.get_json()["status"] == "retried"
    assert process_all(app) == ["processed"]


def test_ping_is_answered_200_and_kept(client, hello):
    response = deliver(client, "ping", payload_path("ping/payload.json").read_bytes())
    assert response.status_code == 200 and response.get_json()["status"] == "pong"
    assert [(d.event, d.status) for d in deliveries()] == [("ping", "processed")]


def test_unknown_events_and_unbound_repositories_are_202_and_ignored(client, hello):
    star = {"action": "created", "repository": {"full_name": HELLO}, "sender": {"login": "x"}}
    response = deliver(client, "star", star)
    assert response.status_code == 202 and response.get_json()["status"] == "ignored"
    elsewhere = load_payload("issues/opened.payload.json")
    elsewhere["repository"]["full_name"] = "someone/else"
    response = deliver(client, "issues", elsewhere)
    assert response.status_code == 202 and response.get_json()["status"] == "ignored"
    assert "not bound" in response.get_json()["reason"]
    assert [(d.event, d.status) for d in deliveries()] == [("star", "ignored"), ("issues", "ignored")]


def test_repository_matching_is_case_insensitive(client, hello, app, operator):
    payload = load_payload("issues/opened.payload.json")
    payload["repository"]["full_name"] = HELLO.upper()
    assert deliver(client, "issues", payload).get_json()["status"] == "accepted"
    process_all(app)
    assert len(issues_of(client, hello, operator)) == 1


def test_form_encoded_deliveries_are_accepted(client, hello, app, operator):
    """GitHub's `application/x-www-form-urlencoded` content type: the JSON is in `payload`."""
    raw = urlencode({"payload": payload_path("issues/opened.payload.json").read_text()}).encode()
    response = deliver(client, "issues", raw, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202
    process_all(app)
    assert len(issues_of(client, hello, operator)) == 1


def test_missing_event_header_or_non_json_body_is_422(client, hello):
    raw = payload_path("issues/opened.payload.json").read_bytes()
    assert_error(deliver(client, "", raw), 422, "VALIDATION_ERROR")
    assert_error(deliver(client, "issues", b"not json"), 422, "VALIDATION_ERROR")
    assert deliveries() == []


def test_webhooks_are_not_under_the_api_rate_limit_but_have_their_own(client, hello, github_config):
    """A burst beyond MCC_RATE_LIMIT is accepted; MCC_GITHUB_WEBHOOK_RATE_LIMIT still applies."""
    github_config["MCC_GITHUB_WEBHOOK_RATE_LIMIT"] = "105 per minute"  # MCC_RATE_LIMIT is 100 per minute
    raw = payload_path("ping/payload.json").read_bytes()
    statuses = [deliver(client, "ping", raw).status_code for _ in range(106)]
    assert statuses[:105] == [200] * 105
    assert statuses[105] == 429


def test_unsigned_flood_is_refused_without_touching_the_database(client, hello, app):
    from sqlalchemy import event

    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        for _ in range(20):
            assert deliver(client, "issues", b"{}" * 1000, secret=None).status_code == 401
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert statements == []


# --- every shared payload --------------------------------------------------------------------------
def _expected(relative: str, payload: dict) -> str:
    event = relative.split("/")[0]
    repo = (payload.get("repository") or {}).get("full_name")
    if event == "ping":
        return "pong"
    if event == "installation" or (repo or "").lower() in (HELLO.lower(), "octo-org/octo-repo"):
        return "accepted"
    return "ignored"


@pytest.mark.parametrize("relative", ALL_PAYLOADS)
def test_every_shared_payload_is_accepted_and_reflected(client, hello, operator, app, relative):
    """Each real payload, signed: accepted (or ignored for repositories bound to no project), then
    the job applies it and the lists show the right rows."""
    other = make_project(github_repo="octo-org/octo-repo")
    raw = (PAYLOADS / relative).read_bytes()
    payload = json.loads(raw)
    event = relative.split("/")[0]
    response = deliver(client, event, raw)
    expected = _expected(relative, payload)
    assert response.status_code == (200 if expected == "pong" else 202), response.get_json()
    assert response.get_json()["status"] == expected
    statuses = process_all(app)
    assert all(status in ("processed", "ignored") for status in statuses), [(d.status, d.error) for d in deliveries()]
    [stored] = deliveries()
    assert stored.event == event and stored.action == payload.get("action")
    issue = payload.get("issue")
    if event == "issues" and "pull_request" not in issue:
        listed = {i["number"]: i for i in issues_of(client, hello if stored.project_id == hello.id else other,
                                                    operator, state="all")}
        if payload["action"] in ("deleted", "transferred"):
            assert issue["number"] not in listed
        else:
            row = listed[issue["number"]]
            assert row["title"] == issue["title"] and row["body"] == issue["body"]
            assert row["labels"] == [label["name"] for label in issue.get("labels", [])]
            assert row["assignees"] == [a["login"] for a in issue["assignees"]]
            assert row["author"] == issue["user"]["login"] and row["html_url"] == issue["html_url"]
            assert row["state"] == (issue.get("state") or "open") and row["tasks_count"] == 0
    if event == "issue_comment" and "pull_request" not in issue:
        [row] = issues_of(client, hello, operator, state="all")
        assert row["comments"] == issue["comments"]
    if event in ("pull_request", "pull_request_review"):
        pr = payload["pull_request"]
        [row] = pulls_of(client, hello, operator, state="all")
        assert row["number"] == pr["number"] and row["title"] == pr["title"]
        assert row["state"] == ("merged" if pr.get("merged") else pr["state"])
        assert (row["head_ref"], row["base_ref"], row["head_sha"]) == (pr["head"]["ref"], pr["base"]["ref"],
                                                                       pr["head"]["sha"])
        assert row["author"] == pr["user"]["login"] and row["draft"] == bool(pr.get("draft"))
    if event == "pull_request_review":
        [row] = pulls_of(client, hello, operator, state="all")
        verdict = payload["review"]["state"]
        assert row["review_state"] == ("commented" if verdict == "commented" else "none")
        [review] = db.session.scalars(select(PullRequestReview)).all()
        assert review.verdict == verdict and review.github_id == payload["review"]["id"]


def test_every_shared_payload_in_sequence_leaves_consistent_state(client, hello, operator, app):
    """All payloads of the bound repository, in a realistic order, end in one issue and one PR."""
    order = ["issues/opened.payload.json", "issues/labeled.payload.json", "issues/assigned.payload.json",
             "issue_comment/created.payload.json", "pull_request/opened.payload.json",
             "check_run/created.payload.json", "check_run/completed.payload.json", "status/payload.json",
             "pull_request_review/submitted.payload.json", "pull_request/closed.payload.json"]
    for relative in order:
        assert deliver(client, relative.split("/")[0], payload_path(relative).read_bytes()).status_code == 202
        process_all(app)
    [issue] = issues_of(client, hello, operator)
    assert issue["labels"] == ["bug"]
    assert issue["comments"] == load_payload("issue_comment/created.payload.json")["issue"]["comments"]
    [pr] = pulls_of(client, hello, operator, state="closed")
    assert pr["review_state"] == "commented"
    # The check run (success) is on the PR's head sha; the status is on another commit.
    assert pr["checks_state"] == "success"
    assert {d.status for d in deliveries()} == {"processed"}


# --- out of order --------------------------------------------------------------------------------------
def test_an_edited_delivery_older_than_the_stored_issue_is_ignored(client, hello, operator, app):
    newer = load_payload("issues/edited.payload.json")
    newer["issue"].update(title="The newest title", updated_at="2030-01-01T00:00:00Z")
    older = load_payload("issues/edited.payload.json")
    older["issue"].update(title="A stale title", updated_at="2029-12-31T23:59:00Z")
    deliver(client, "issues", newer)
    deliver(client, "issues", older)
    assert process_all(app) == ["processed", "ignored"]
    [issue] = issues_of(client, hello, operator)
    assert issue["title"] == "The newest title"
    assert "out of order" in deliveries()[1].error


def test_an_older_pull_request_snapshot_never_reopens_a_closed_one(client, hello, operator, app):
    deliver(client, "pull_request", payload_path("pull_request/closed.payload.json").read_bytes())
    deliver(client, "pull_request", payload_path("pull_request/opened.payload.json").read_bytes())
    assert process_all(app) == ["processed", "ignored"]
    [pr] = pulls_of(client, hello, operator, state="all")
    assert pr["state"] == "closed"


def test_deleted_issue_is_no_longer_listed_and_stale_events_do_not_revive_it(client, hello, operator, app):
    for relative in ("issues/opened.payload.json", "issues/deleted.payload.json", "issues/reopened.payload.json"):
        deliver(client, "issues", payload_path(relative).read_bytes())
    assert process_all(app) == ["processed", "processed", "ignored"]
    assert issues_of(client, hello, operator, state="all") == []
    assert db.session.scalar(select(Issue)).deleted_at is not None


def test_pull_request_body_links_the_issue_it_closes(client, hello, operator, app):
    deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes())
    pr = load_payload("pull_request/opened.payload.json")
    pr["pull_request"]["body"] = "Fixes #1: corrects the README."
    deliver(client, "pull_request", pr)
    process_all(app)
    [row] = pulls_of(client, hello, operator)
    issue = db.session.scalar(select(Issue))
    assert row["issue"] == {"id": str(issue.id), "number": 1, "title": issue.title}
    assert row["task"] is None


@pytest.mark.parametrize("adversarial", ["fix" + " " * 65_533, "fixes:" + " " * 65_530, "close " * 10_922 + "cl",
                                         ("fix :" + " " * 2_000) * 31])
def test_closing_keywords_are_found_in_linear_time(client, hello, operator, app, adversarial):
    """A body of "fix" + 65,000 spaces cost ~6 s of worker CPU (two quantifiers competing for the
    same spaces); now the scan is linear: well under 50 ms for 65,536 characters."""
    import time

    from mcc.github.records import CLOSING_KEYWORD, CLOSING_SCAN_CHARS

    # CPU time of this thread, not wall time: on a loaded machine the thread may wait for a core,
    # and the regression this guards against is CPU spent scanning.
    assert len(adversarial) <= 65_536
    started = time.thread_time()
    assert list(CLOSING_KEYWORD.finditer(adversarial[:CLOSING_SCAN_CHARS])) == []
    assert time.thread_time() - started < 0.05
    deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes())
    pr = load_payload("pull_request/opened.payload.json")
    pr["pull_request"]["body"] = adversarial + " Fixes: #1"
    deliver(client, "pull_request", pr)
    started = time.thread_time()
    assert process_all(app) == ["processed", "processed"]
    assert time.thread_time() - started < 2  # was ~6 s of CPU for the first body alone


@pytest.mark.parametrize("body, linked", [("Fixes #1", True), ("closes: #1", True), ("Resolved  #1.", True),
                                          ("fix:#1", False), ("prefix #1", False), ("fixes # 1", False)])
def test_closing_keyword_forms(client, hello, operator, app, body, linked):
    deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes())
    pr = load_payload("pull_request/opened.payload.json")
    pr["pull_request"]["body"] = body
    deliver(client, "pull_request", pr)
    process_all(app)
    [row] = pulls_of(client, hello, operator)
    assert (row["issue"] is not None) is linked


@pytest.fixture
def github_app(github_config, fake_github, rsa_keys):
    github_config.update(MCC_GITHUB_APP_ID=fake_github.app_id, MCC_GITHUB_APP_PRIVATE_KEY=rsa_keys[0])
    return fake_github


def test_installation_created_binds_the_projects_of_its_repositories(client, app, github_app):
    """Confirmed with GitHub first: bound once GitHub says the installation covers the repository,
    unbound once GitHub says it no longer does."""
    from mcc.models.project import Project

    payload = load_payload("installation/created.payload.json")
    installation = str(payload["installation"]["id"])
    repo = payload["repositories"][0]["full_name"]
    project = make_project(github_repo=repo)
    github_app.add_repo(repo, installation_id=installation)
    assert deliver(client, "installation", payload).status_code == 202
    assert process_all(app) == ["processed"]
    project = db.session.get(Project, project.id)
    assert project.github_installation_id == installation
    assert project.github_app_id == github_app.app_id  # GitHub's answer, not the payload's app_id
    assert github_app.calls("GET", f"/repos/{repo}/installation")
    github_app.installations.pop(installation)
    deliver(client, "installation", load_payload("installation/deleted.payload.json") | {
        "installation": payload["installation"]})
    assert process_all(app) == ["processed"]
    assert db.session.get(Project, project.id).github_installation_id is None


def test_installation_events_github_does_not_confirm_change_nothing(client, app, github_app):
    """A validly signed but false installation event (captured, or sent by whoever holds the global
    secret) binds or unbinds nothing that GitHub does not confirm."""
    from mcc.models.project import Project

    bound = make_project(github_repo="acme/bound", github_installation_id="111")
    free = make_project(github_repo="acme/free")
    github_app.add_repo("acme/bound", installation_id="111")
    github_app.add_repo("acme/free")
    deliver(client, "installation", {"action": "created", "installation": {"id": 666, "app_id": 1},
                                     "repositories": [{"full_name": "acme/free"}, {"full_name": "acme/bound"}]})
    deliver(client, "installation", {"action": "deleted", "installation": {"id": 111, "app_id": 1}})
    deliver(client, "installation_repositories", {"action": "removed", "installation": {"id": 111},
                                                  "repositories_added": [],
                                                  "repositories_removed": [{"full_name": "acme/bound"}]})
    assert process_all(app) == ["ignored"] * 3
    assert db.session.get(Project, bound.id).github_installation_id == "111"
    assert db.session.get(Project, free.id).github_installation_id is None


def test_without_a_github_app_installation_events_change_nothing(client, app, github_config):
    from mcc.models.project import Project

    project = make_project(github_repo="acme/free")
    deliver(client, "installation", {"action": "created", "installation": {"id": 666, "app_id": 1},
                                     "repositories": [{"full_name": "acme/free"}]})
    assert process_all(app) == ["ignored"]
    [stored] = deliveries()
    assert "cannot confirm" in stored.error
    assert db.session.get(Project, project.id).github_installation_id is None


def test_a_failing_handler_marks_the_delivery_failed_and_notifies(client, hello, app):
    from mcc.models.control import Notification

    broken = load_payload("pull_request/opened.payload.json")
    del broken["pull_request"]["number"]
    deliver(client, "pull_request", broken)
    assert process_all(app) == ["failed"]
    [stored] = deliveries()
    assert stored.status == "failed" and "number" in stored.error
    assert db.session.scalar(select(Notification).where(Notification.kind == "github_webhook_failed"))
    assert db.session.scalar(select(func.count()).select_from(PullRequest)) == 0


def test_a_merge_done_on_github_completes_the_linked_task(client, hello, app):
    """Merged in GitHub's UI rather than approved in MCC: the pipeline still completes the task."""
    from mcc.models.task import Task

    deliver(client, "pull_request", payload_path("pull_request/opened.payload.json").read_bytes())
    process_all(app)
    task = Task(project_id=hello.id, title="README spelling", status="review")
    db.session.add(task)
    db.session.flush()
    db.session.scalar(select(PullRequest)).task_id = task.id
    db.session.commit()
    merged = load_payload("pull_request/closed.payload.json")
    merged["pull_request"].update(merged=True, merged_at=merged["pull_request"]["closed_at"])
    deliver(client, "pull_request", merged)
    assert process_all(app) == ["processed"]
    assert db.session.get(Task, task.id).status == "completed"
    assert db.session.scalar(select(PullRequest)).state == "merged"


def test_the_delivery_id_is_the_request_id_and_travels_into_the_processing_job(client, hello, redis_client):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    delivery_id = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    response = deliver(client, "issues", payload_path("issues/opened.payload.json").read_bytes(),
                       delivery=delivery_id)
    assert response.status_code in (200, 202), response.get_json()
    assert response.headers["X-Request-ID"] == delivery_id
    [stored] = deliveries()
    job = Job.fetch(f"github-delivery-{stored.id}", connection=redis_client, serializer=JSONSerializer)
    assert job.meta["request_id"] == delivery_id
