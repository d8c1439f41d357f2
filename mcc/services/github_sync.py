"""Keeping MCC's mirror of a repository complete: the full sync, its scheduling, and what happens
when GitHub fails (a notification, once per failure streak).

The full sync lists issues (the issues API mixes pull requests in: those are skipped) and pull
requests, every page, sorted by last update. The first page of each listing is a conditional
request with the ETag of the last complete listing: 304 means nothing changed, and costs no rate
limit. Open pull requests also get their check results and reviews refreshed.

Scheduling: ``request_sync`` enqueues at most one pending sync per project; after each sync the
next one is scheduled MCC_GITHUB_SYNC_INTERVAL seconds later (one chain per project, kept by a
Redis key), as the safety net for missed webhooks. ``flask github sync-all`` does the same for every
project from cron, and requeues deliveries stuck in ``received``.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from mcc.errors import ApiError
from mcc.extensions import db
from mcc.github import records
from mcc.github.auth import auth_mode, client_for, is_configured, require_configured
from mcc.github.checks import live_checks
from mcc.github.webhooks import enqueue_processing
from mcc.jobs import enqueue
from mcc.models.github import GitHubSyncState, PullRequest, WebhookDelivery
from mcc.models.project import Project
from mcc.models.types import utcnow
from mcc.redis_store import get_redis
from mcc.secretbox import seal
from mcc.services import audit
from mcc.services.lookup import get_scoped
from mcc.services.notifications import notify

log = logging.getLogger(__name__)

SYNC_JOB = "workers.github.sync_repository"
PENDING_KEY = "mcc:github:sync-pending:{}"
NEXT_KEY = "mcc:github:sync-next:{}"
STUCK_AFTER = timedelta(minutes=10)


# --- scheduling ----------------------------------------------------------------------------------
def request_sync(project_id: uuid.UUID, reason: str = "requested") -> bool:
    """Enqueue a full sync unless one is already waiting. True when one was enqueued."""
    redis = get_redis()
    if redis is not None and not redis.set(PENDING_KEY.format(project_id), reason, nx=True, ex=900):
        return False
    enqueue(SYNC_JOB, str(project_id), queue="github", description=f"GitHub full sync of {project_id} ({reason})")
    return True


def start_sync(project_id: uuid.UUID) -> dict:
    """POST /projects/{id}/sync: 404 unknown project, 409 GitHub not configured, else queued."""
    project = get_scoped(Project, project_id, label="Project")
    require_configured(project)
    queued = request_sync(project.id, "operator")
    return {"project_id": project.id, "status": "queued" if queued else "already_queued"}


def sync_new_project(project: Project) -> None:
    """After a project was created (and committed): import its repository when GitHub is configured."""
    try:
        if is_configured(project):
            request_sync(project.id, "project created")
    except Exception:  # the project exists; the periodic sync or POST /sync will import it
        log.exception("could not enqueue the first sync of project %s", project.id)


def schedule_next(project_id: uuid.UUID) -> None:
    """Keep one periodic chain per project (needs Redis and a worker running the RQ scheduler)."""
    interval = current_app.config["MCC_GITHUB_SYNC_INTERVAL"]
    redis = get_redis()
    if interval <= 0 or redis is None:
        return
    if redis.set(NEXT_KEY.format(project_id), "1", nx=True, ex=max(1, int(interval) - 5)):
        enqueue(SYNC_JOB, str(project_id), queue="github", delay=interval,
                description=f"GitHub periodic sync of {project_id}")


def sync_all() -> dict:
    """Every active, configured project gets a sync; deliveries stuck in ``received`` are requeued."""
    queued = 0
    for project in db.session.scalars(select(Project).where(Project.is_active.is_(True))):
        if is_configured(project) and request_sync(project.id, "sync-all"):
            queued += 1
    stuck = db.session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.status == "received", WebhookDelivery.received_at < utcnow() - STUCK_AFTER)).all()
    for delivery in stuck:
        enqueue_processing(delivery)
    return {"syncs_queued": queued, "deliveries_requeued": len(stuck)}


# --- failures ------------------------------------------------------------------------------------
def note_github_failure(project: Project, what: str, exc: ApiError) -> None:
    """A GitHub failure of an interactive action becomes a notification (its own small transaction:
    nothing else of the failed action is kept)."""
    db.session.rollback()
    notify("warning", "github_api_error", f"{what} failed on GitHub ({project.github_repo})", exc.message,
           exc.details, project_id=project.id)
    db.session.commit()


# --- the full sync -------------------------------------------------------------------------------
def _state(project_id: uuid.UUID) -> GitHubSyncState:
    state = db.session.get(GitHubSyncState, project_id)
    if state is None:
        state = GitHubSyncState(project_id=project_id)
        db.session.add(state)
    return state


def sync_repository(project_id: uuid.UUID) -> dict:
    """Import every issue and pull request of the project's repository. Commits (job-level)."""
    redis = get_redis()
    if redis is not None:
        redis.delete(PENDING_KEY.format(project_id))
    project = db.session.get(Project, project_id)
    if project is None:
        return {"status": "missing"}
    if not is_configured(project):
        return {"status": "not_configured"}
    state = _state(project.id)
    previous = state.last_status
    state.last_status, state.last_started_at = "running", utcnow()
    db.session.commit()
    try:
        client = client_for(project)
        result = {"issues": _sync_issues(client, project, state)}
        db.session.commit()
        result["pull_requests"] = _sync_pull_requests(client, project, state)
        state.last_status, state.last_error, state.last_finished_at = "ok", None, utcnow()
        db.session.commit()
        result["status"] = "ok"
    except ApiError as exc:  # GitHubApiError, GitHubNotConfigured
        db.session.rollback()
        state = _state(project.id)
        state.last_status, state.last_error, state.last_finished_at = "failed", exc.message, utcnow()
        if previous != "failed":
            notify("warning", "github_sync_failed", f"GitHub sync of {project.github_repo} failed", exc.message,
                   exc.details, project_id=project.id)
        db.session.commit()
        log.warning("GitHub sync of %s failed: %s", project.github_repo, exc.message)
        result = {"status": "failed", "error": exc.message}
    finally:
        schedule_next(project_id)
    return result


def _sync_issues(client, project: Project, state: GitHubSyncState) -> dict:
    params = {"state": "all", "sort": "updated", "direction": "desc", "per_page": 100}
    counts = {"created": 0, "updated": 0, "stale": 0, "pull_requests_skipped": 0}
    seen: set[int] = set()
    etag = None
    for index, page in enumerate(client.pages(f"/repos/{project.github_repo}/issues", params,
                                              etag=state.issues_etag)):
        if page.not_modified:
            return {"not_modified": True}
        if index == 0:
            etag = page.etag
        items = [item for item in page.data or [] if "pull_request" not in item]
        counts["pull_requests_skipped"] += len(page.data or []) - len(items)  # the issues API lists PRs too
        seen.update(int(item["number"]) for item in items)
        for _, outcome in records.upsert_issues(project.id, items):
            counts[outcome] += 1
    counts["removed"] = records.mark_missing_issues(project.id, seen)
    state.issues_etag = etag  # only a complete listing may answer "unchanged" next time
    return counts


def _sync_pull_requests(client, project: Project, state: GitHubSyncState) -> dict:
    params = {"state": "all", "sort": "updated", "direction": "desc", "per_page": 100}
    counts = {"created": 0, "updated": 0, "stale": 0}
    etag = None
    for index, page in enumerate(client.pages(f"/repos/{project.github_repo}/pulls", params,
                                              etag=state.pulls_etag)):
        if page.not_modified:
            counts = {"not_modified": True}
            break
        if index == 0:
            etag = page.etag
        for _, outcome in records.upsert_pull_requests(project.id, page.data or []):
            counts[outcome] += 1
    else:
        state.pulls_etag = etag
    db.session.commit()
    counts["open_refreshed"] = _refresh_open_pull_requests(client, project)
    return counts


def _refresh_open_pull_requests(client, project: Project) -> int:
    """Checks and reviews of open pull requests change without touching the pull request itself."""
    open_prs = db.session.scalars(select(PullRequest).where(PullRequest.project_id == project.id,
                                                            PullRequest.state == "open")).all()
    for pr in open_prs:
        if pr.head_sha:
            records.replace_checks(project.id, pr.head_sha, live_checks(client, project.github_repo, pr.head_sha))
        for review in client.paginate(f"/repos/{project.github_repo}/pulls/{pr.number}/reviews", {"per_page": 100}):
            records.upsert_review(pr, review)
        db.session.commit()
    return len(open_prs)


# --- per-project settings ----------------------------------------------------------------------
def settings_of(project_id: uuid.UUID) -> dict:
    project = get_scoped(Project, project_id, label="Project")
    return {"auth": auth_mode(project), "github_merge_method": project.github_merge_method,
            "allow_merge_without_checks": project.allow_merge_without_checks,
            "webhook_secret_set": bool(project.github_webhook_secret),
            "sync": db.session.get(GitHubSyncState, project.id)}


def update_settings(project_id: uuid.UUID, data: dict) -> Project:
    project = get_scoped(Project, project_id, label="Project")
    audit.record_update("project", project, data)
    for key, value in data.items():
        if key == "github_webhook_secret" and value:
            value = seal(value)  # read back only to verify signatures; a database copy does not reveal it
        setattr(project, key, value)
    db.session.flush()
    return project
