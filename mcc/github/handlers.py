"""What each webhook event does. A handler takes the payload and the project bound to its
repository and returns None (processed) or the reason it changed nothing (ignored)."""
from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import select

from mcc.errors import GitHubApiError
from mcc.extensions import db
from mcc.github import contents, records
from mcc.github.auth import AppInstallationAuth, SharedCache, load_private_key
from mcc.github.client import GitHubClient
from mcc.models.github import PullRequest
from mcc.models.project import Project
from mcc.pipeline import stages
from mcc.services.notifications import notify

log = logging.getLogger(__name__)


def _stale(kind: str, number, data: dict) -> str:
    return f"out of order: {kind} #{number} is stored with a newer updated_at than {data.get('updated_at')}"


def on_issues(payload: dict, project: Project) -> str | None:
    issue = payload["issue"]
    if "pull_request" in issue:
        return f"issues event about pull request #{issue['number']}: pull_request events carry its state"
    if payload.get("action") in ("deleted", "transferred"):
        if records.remove_issue(project.id, issue) is None:
            return f"issue #{issue['number']} was never mirrored"
        return None
    _, outcome = records.upsert_issue(project.id, issue)
    return _stale("issue", issue["number"], issue) if outcome == "stale" else None


def on_issue_comment(payload: dict, project: Project) -> str | None:
    issue = payload["issue"]
    if "pull_request" in issue:
        outcome = records.set_pull_request_comments(project.id, issue)
        if outcome == "unknown":
            return f"comment on pull request #{issue['number']}, which is not mirrored yet"
    else:
        _, outcome = records.upsert_issue(project.id, issue)
    return _stale("issue", issue["number"], issue) if outcome == "stale" else None


def on_pull_request(payload: dict, project: Project) -> str | None:
    data = payload["pull_request"]
    known = db.session.scalar(select(PullRequest.state).where(PullRequest.project_id == project.id,
                                                              PullRequest.number == data["number"]))
    pr, outcome = records.upsert_pull_request(project.id, data)
    if outcome == "stale":
        return _stale("pull request", data["number"], data)
    if pr.state == "merged" and known != "merged" and pr.task_id is not None:
        # merged on GitHub itself: the linked task completes as if approved in MCC (docs/pipeline.md)
        stages.on_pull_request_merged(pr, None)
    return None


def on_pull_request_review(payload: dict, project: Project) -> str | None:
    pr, _ = records.upsert_pull_request(project.id, payload["pull_request"])
    if records.upsert_review(pr, payload["review"]) is None:
        return f"review state {payload['review'].get('state')!r} is not recorded (pending draft)"
    return None


def on_check_run(payload: dict, project: Project) -> str | None:
    run = payload["check_run"]
    if records.upsert_check_run(project.id, run) == "stale":
        return f"out of order: a newer run of check {run.get('name')!r} is stored"
    return None


def on_status(payload: dict, project: Project) -> str | None:
    if records.upsert_status(project.id, payload) == "stale":
        return f"out of order: a newer status {payload.get('context')!r} is stored"
    return None


def on_check_suite(payload: dict, project: Project) -> str | None:
    # GitHub opens a suite for every checks-capable app, and many never run anything: suites would
    # leave pull requests pending forever. Their runs arrive as check_run events.
    return "check suites are summarised by their check runs (check_run events)"


def on_push(payload: dict, project: Project) -> str | None:
    default = (payload.get("repository") or {}).get("default_branch") or (payload.get("repository") or {}).get(
        "master_branch")
    if default and payload.get("ref") == f"refs/heads/{default}":
        contents.forget_rules(project.id)  # agents' rules files are read at the default branch
    return None


# --- installation events: no repository, they bind or unbind projects -----------------------------
def _projects_with_installation(installation_id) -> list[Project]:
    return list(db.session.scalars(select(Project).where(Project.github_installation_id == str(installation_id))))


class Unconfirmed(Exception):
    """MCC cannot ask GitHub about installations (no GitHub App configured)."""


def _app_id(project: Project) -> str | None:
    return project.github_app_id or current_app.config["MCC_GITHUB_APP_ID"]


def current_installation(repo: str, app_id: str | None) -> dict | None:
    """GitHub's own answer: the installation of our App that covers ``repo`` (None: not installed).

    An installation event only says what happened; its body is trusted no further than its
    signature. Before binding or unbinding, MCC asks GitHub (App JWT, ``GET /repos/{repo}/installation``)."""
    config = current_app.config
    if not app_id or not config["MCC_GITHUB_APP_PRIVATE_KEY"]:
        raise Unconfirmed("MCC has no GitHub App configured (app id and MCC_GITHUB_APP_PRIVATE_KEY), so it cannot "
                          "confirm installation events with GitHub; they change nothing")
    auth = AppInstallationAuth(app_id, load_private_key(config["MCC_GITHUB_APP_PRIVATE_KEY"]), None, repo,
                               SharedCache(None))
    client = GitHubClient(config["MCC_GITHUB_API_URL"], None, timeout=config["MCC_GITHUB_TIMEOUT"],
                          max_retries=config["MCC_GITHUB_MAX_RETRIES"], backoff_base=config["MCC_GITHUB_BACKOFF_BASE"],
                          max_wait=config["MCC_GITHUB_RATE_LIMIT_WAIT"])
    try:
        return client.request("GET", f"/repos/{repo}/installation", authorization=f"Bearer {auth.app_jwt()}").data
    except GitHubApiError as exc:
        if exc.github_status == 404:
            return None
        raise


def _bind(installation: dict, repositories: list[dict]) -> list[Project]:
    bound = []
    for repo in repositories:
        project = records.project_for_repo(repo.get("full_name"))
        if project is None:
            continue
        confirmed = current_installation(project.github_repo, _app_id(project)) or {}
        if str(confirmed.get("id")) != str(installation["id"]):
            log.warning("installation %s for %s not confirmed by GitHub (it says %s): not bound",
                        installation["id"], project.github_repo, confirmed.get("id"))
            continue
        project.github_installation_id = str(installation["id"])
        if not project.github_app_id and confirmed.get("app_id"):
            project.github_app_id = str(confirmed["app_id"])
        bound.append(project)
    return bound


def _unbind(installation: dict, repositories: list[dict] | None, reason: str) -> list[Project]:
    projects = _projects_with_installation(installation["id"])
    if repositories is not None:
        names = {(r.get("full_name") or "").lower() for r in repositories}
        projects = [p for p in projects if p.github_repo.lower() in names]
    unbound = []
    for project in projects:
        still = current_installation(project.github_repo, _app_id(project))
        if still is not None and str(still.get("id")) == str(installation["id"]):
            log.warning("installation %s still covers %s according to GitHub: not unbound",
                        installation["id"], project.github_repo)
            continue
        project.github_installation_id = None
        unbound.append(project)
        notify("warning", "github_installation", f"GitHub App {reason} for {project.github_repo}",
               f"The GitHub App installation {installation['id']} was {reason}; MCC falls back to "
               "MCC_GITHUB_TOKEN when set, and cannot reach GitHub for this project otherwise.",
               {"installation_id": installation["id"]}, project_id=project.id)
    return unbound


def on_installation(payload: dict, project: Project | None) -> str | None:
    try:
        return _on_installation(payload)
    except Unconfirmed as exc:
        return str(exc)


def _on_installation(payload: dict) -> str | None:
    installation, action = payload["installation"], payload.get("action")
    if action in ("created", "new_permissions_accepted", "unsuspend"):
        repositories = payload.get("repositories")
        if repositories is None:
            return None if _projects_with_installation(installation["id"]) else "no project uses this installation"
        return None if _bind(installation, repositories) else "none of the installation's repositories is bound"
    if action == "deleted":
        return None if _unbind(installation, None, "uninstalled") else "no project used this installation"
    if action == "suspend":
        projects = _projects_with_installation(installation["id"])
        for item in projects:
            notify("warning", "github_installation", f"GitHub App suspended for {item.github_repo}",
                   f"The GitHub App installation {installation['id']} was suspended: GitHub calls will fail "
                   "until it is unsuspended.", {"installation_id": installation["id"]}, project_id=item.id)
        return None if projects else "no project uses this installation"
    return f"installation action {action!r} needs nothing"


def on_installation_repositories(payload: dict, project: Project | None) -> str | None:
    try:
        return _on_installation_repositories(payload)
    except Unconfirmed as exc:
        return str(exc)


def _on_installation_repositories(payload: dict) -> str | None:
    installation = payload["installation"]
    bound = _bind(installation, payload.get("repositories_added") or [])
    unbound = _unbind(installation, payload.get("repositories_removed") or [], "removed from the repository")
    return None if bound or unbound else "none of the repositories is bound to a project"


# event -> (handler, needs a project bound to payload.repository)
HANDLERS = {
    "issues": (on_issues, True),
    "issue_comment": (on_issue_comment, True),
    "pull_request": (on_pull_request, True),
    "pull_request_review": (on_pull_request_review, True),
    "check_run": (on_check_run, True),
    "check_suite": (on_check_suite, True),
    "status": (on_status, True),
    "push": (on_push, True),
    "installation": (on_installation, False),
    "installation_repositories": (on_installation_repositories, False),
}
