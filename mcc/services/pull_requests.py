"""Pull requests: the list, and the operator's verdicts. Approve merges through GitHub only when
every check of the head commit has passed; reject asks for changes on GitHub and keeps the
feedback for the task's coder. The local record changes only after GitHub confirmed."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mcc.errors import ChecksNotPassed, Conflict, GitHubApiError, NotMergeable, StaleHead
from mcc.extensions import db
from mcc.github import records
from mcc.github.auth import client_for
from mcc.github.checks import live_checks
from mcc.models.github import Issue, PullRequest, PullRequestReview
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.models.types import utcnow
from mcc.pipeline import stages
from mcc.services import audit
from mcc.services.github_sync import note_github_failure
from mcc.services.lookup import get_scoped


def list_pull_requests(project_id: uuid.UUID, state: str, page: int, limit: int) -> tuple[list, int]:
    get_scoped(Project, project_id, label="Project")
    query = select(PullRequest).where(PullRequest.project_id == project_id)
    if state != "all":
        query = query.where(PullRequest.state == state)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = list(db.session.scalars(query.order_by(PullRequest.number.desc())
                                    .offset((page - 1) * limit).limit(limit)))
    return with_links(items), total


def with_links(prs: list[PullRequest]) -> list[PullRequest]:
    """Attach ``task`` and ``issue`` (or None) to each pull request, in two queries."""
    task_ids = {pr.task_id for pr in prs if pr.task_id}
    issue_ids = {pr.issue_id for pr in prs if pr.issue_id}
    tasks = {t.id: t for t in db.session.scalars(select(Task).where(Task.id.in_(task_ids)))} if task_ids else {}
    issues = {i.id: i for i in db.session.scalars(select(Issue).where(Issue.id.in_(issue_ids)))} if issue_ids else {}
    for pr in prs:
        pr.task = tasks.get(pr.task_id)
        pr.issue = issues.get(pr.issue_id)
    return prs


def get_pull_request(project_id: uuid.UUID, pull_request_id: uuid.UUID) -> PullRequest:
    pr = get_scoped(PullRequest, pull_request_id, project_id, label="Pull request")
    pr.reviews = reviews_of(pr.id)
    return with_links([pr])[0]


def reviews_of(pull_request_id: uuid.UUID) -> list[PullRequestReview]:
    return list(db.session.scalars(select(PullRequestReview).where(
        PullRequestReview.pull_request_id == pull_request_id).order_by(PullRequestReview.created_at.desc())))


def feedback_for(pull_request_id: uuid.UUID) -> list[PullRequestReview]:
    """Changes requested on a pull request (by MCC operators or on GitHub), newest first: what the
    task pipeline hands the coder."""
    return [r for r in reviews_of(pull_request_id) if r.verdict == "changes_requested"]


def _open_pull_request(project_id: uuid.UUID, pull_request_id: uuid.UUID) -> tuple[Project, PullRequest]:
    project = get_scoped(Project, project_id, label="Project")
    pr = get_scoped(PullRequest, pull_request_id, project_id, label="Pull request")
    if pr.state != "open":
        raise Conflict(f"Pull request #{pr.number} is {pr.state}; only open pull requests can be approved or rejected.",
                       {"state": pr.state})
    if not pr.head_sha:
        raise Conflict(f"Pull request #{pr.number} has no known head commit; sync the project first.")
    return project, pr


def approve(project_id: uuid.UUID, pull_request_id: uuid.UUID, user) -> PullRequest:
    """Merge when every check of the head commit passed (or there are none and the project allows it)."""
    project, pr = _open_pull_request(project_id, pull_request_id)
    client = client_for(project)
    repo, sha, number = project.github_repo, pr.head_sha, pr.number
    try:
        checks = live_checks(client, repo, sha)
        failing = [c.describe() for c in checks if c.result == "failed"]
        pending = [c.describe() for c in checks if c.result == "pending"]
        if failing or pending:
            names = ", ".join(f"{c['name']} ({c['conclusion'] or c['status']})" for c in failing + pending)
            raise ChecksNotPassed(f"Pull request #{number} cannot be merged: checks have not passed on "
                                  f"{sha[:7]}: {names}.",
                                  {"head_sha": sha, "failing": failing, "pending": pending})
        if not checks and not project.allow_merge_without_checks:
            raise ChecksNotPassed(f"Pull request #{number} has no checks on {sha[:7]}, and this project does "
                                  "not allow merging without checks.", {"head_sha": sha, "failing": [],
                                                                        "pending": [], "reason": "no checks"})
        result = client.put(f"/repos/{repo}/pulls/{number}/merge",
                            json={"merge_method": project.github_merge_method, "sha": sha}) or {}
    except GitHubApiError as exc:
        message = exc.details.get("github_message") or exc.message
        if exc.github_status == 409:
            raise StaleHead(f"GitHub did not merge #{number}: the head moved past {sha[:7]} ({message}). "
                            "Review the new commits and approve again.", {"head_sha": sha}) from exc
        if exc.github_status == 405:
            raise NotMergeable(f"GitHub will not merge #{number}: {message}", {"head_sha": sha}) from exc
        note_github_failure(project, f"Merging pull request #{number}", exc)
        raise
    merged_sha = result.get("sha")
    pr.state, pr.merged_at, pr.merge_commit_sha = "merged", utcnow(), merged_sha or pr.merge_commit_sha
    db.session.add(PullRequestReview(pull_request_id=pr.id, verdict="approved", source="mcc", github_kind="merge",
                                     body=f"Merged by {user.username} ({project.github_merge_method})",
                                     user_id=user.id, commit_sha=sha, submitted_at=utcnow()))
    try:  # GitHub's own snapshot keeps later, older webhook deliveries from looking newer
        records.upsert_pull_request(project.id, client.get(f"/repos/{repo}/pulls/{number}"))
    except GitHubApiError:
        pr.github_updated_at = utcnow()
    db.session.flush()
    audit.record("pull_request.approved", "pull_request", pr.id,
                 {"project_id": project.id, "number": number, "head_sha": sha})
    audit.record("pull_request.merged", "pull_request", pr.id,
                 {"project_id": project.id, "number": number, "merge_commit_sha": pr.merge_commit_sha,
                  "merge_method": project.github_merge_method})
    stages.on_pull_request_merged(pr, user)  # completes the linked task (docs/pipeline.md)
    return with_links([pr])[0]


def reject(project_id: uuid.UUID, pull_request_id: uuid.UUID, user, feedback: str) -> PullRequest:
    """Request changes with a review, or a comment where GitHub refuses a review (own pull request)."""
    project, pr = _open_pull_request(project_id, pull_request_id)
    client = client_for(project)
    repo, number = project.github_repo, pr.number
    try:
        try:
            posted = client.post(f"/repos/{repo}/pulls/{number}/reviews",
                                 json={"event": "REQUEST_CHANGES", "body": feedback, "commit_id": pr.head_sha})
            kind = "review"
        except GitHubApiError as exc:
            if exc.github_status != 422:
                raise
            posted = client.post(f"/repos/{repo}/issues/{number}/comments",
                                 json={"body": f"**Changes requested** (MCC, {user.username}):\n\n{feedback}"})
            kind = "comment"
    except GitHubApiError as exc:
        note_github_failure(project, f"Requesting changes on pull request #{number}", exc)
        raise
    posted = posted or {}
    _record_rejection(pr, user, feedback, kind, posted)
    records.recompute_review_state(pr)
    db.session.flush()
    audit.record("pull_request.rejected", "pull_request", pr.id,
                 {"project_id": project.id, "number": number, "feedback": feedback[:500], "posted_as": kind})
    stages.on_pull_request_rejected(pr, user, feedback)  # the task goes back to its coder
    return with_links([pr])[0]


def _record_rejection(pr: PullRequest, user, feedback: str, kind: str, posted: dict) -> None:
    fields = dict(verdict="changes_requested", body=feedback, source="mcc", user_id=user.id,
                  author=(posted.get("user") or {}).get("login"), commit_sha=pr.head_sha,
                  submitted_at=records.parse_time(posted.get("submitted_at") or posted.get("created_at")) or utcnow())
    github_id = posted.get("id")
    try:
        with db.session.begin_nested():
            db.session.add(PullRequestReview(pull_request_id=pr.id, github_kind=kind, github_id=github_id, **fields))
            db.session.flush()
    except IntegrityError:  # the review's webhook was processed first: claim that row as ours
        review = db.session.scalar(select(PullRequestReview).where(
            PullRequestReview.pull_request_id == pr.id, PullRequestReview.github_kind == kind,
            PullRequestReview.github_id == github_id))
        for key, value in fields.items():
            setattr(review, key, value)
