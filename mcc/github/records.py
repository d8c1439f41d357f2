"""GitHub objects onto MCC rows. Webhooks and the full sync both come through here, so an issue or
pull request is one record whoever saw it first (matched by project and number).

Out-of-order protection: a snapshot whose ``updated_at`` is older than the stored one changes
nothing (outcome ``stale``); equal timestamps apply (GitHub's are to the second, events in one
second arrive in order more often than not). A merged pull request never goes back to open, and a
deleted or transferred issue only comes back with a strictly newer snapshot.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mcc.extensions import db
from mcc.github.checks import Check, overall, status_fields
from mcc.models.github import CommitCheck, Issue, PullRequest, PullRequestReview
from mcc.models.project import Project
from mcc.models.types import as_utc, utcnow

# "fixes #12", "Closes: #3". Possessive quantifiers: no two quantifiers compete for the same spaces
# (``\s*:?\s+`` did, so "fix" + 65,000 spaces cost seconds of CPU per event); linear in the body.
CLOSING_KEYWORD = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)(?:\s*+:)?\s++#(\d++)\b", re.IGNORECASE)
# Only the beginning of a body is searched for closing keywords (GitHub caps bodies at 65,536 characters).
CLOSING_SCAN_CHARS = 65_536
REVIEW_VERDICTS = {"approved": "approved", "changes_requested": "changes_requested", "commented": "commented",
                   "dismissed": "dismissed"}


def parse_time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _login(user) -> str | None:
    return (user or {}).get("login")


def _newer_or_same(incoming: datetime | None, stored: datetime | None) -> bool:
    return incoming is None or stored is None or incoming >= as_utc(stored)


def _text(value, limit: int) -> str:
    return (value or "")[:limit]


def project_for_repo(full_name: str | None) -> Project | None:
    if not full_name:
        return None
    return db.session.scalar(select(Project).where(func.lower(Project.github_repo) == full_name.lower()))


def _upsert_many(model, project_id: uuid.UUID, items: list[dict], fill, is_stale,
                 retrying: bool = False) -> list[tuple[object, str]]:
    """Rows for GitHub objects matched by number: outcome created | updated | stale for each.

    One query finds the existing rows; new rows are inserted together in a savepoint. If another
    process inserted one of the same numbers meanwhile, each new one is redone alone, once.
    """
    numbers = [int(data["number"]) for data in items]
    existing = {row.number: row for row in db.session.scalars(
        select(model).where(model.project_id == project_id, model.number.in_(numbers)))}
    results, new = [], []
    for data in items:
        number = int(data["number"])
        row = existing.get(number)
        if row is None:
            row = existing[number] = model(project_id=project_id, number=number)
            fill(row, data)
            new.append((row, data))
            results.append((row, "created"))
        elif is_stale(row, data):
            results.append((row, "stale"))
        else:
            fill(row, data)
            results.append((row, "updated"))
    if new:
        try:
            with db.session.begin_nested():
                db.session.add_all([row for row, _ in new])
                db.session.flush()
        except IntegrityError:
            if retrying:
                raise
            redone = {id(row): _upsert_many(model, project_id, [data], fill, is_stale, retrying=True)[0]
                      for row, data in new}
            results = [redone.get(id(row), (row, outcome)) for row, outcome in results]
    return results


# --- issues ---------------------------------------------------------------------------------
def _fill_issue(issue: Issue, data: dict) -> None:
    """Fields absent from a payload keep their value: some events carry a partial issue (pinned)."""
    issue.github_id = data.get("id", issue.github_id)
    issue.title = _text(data.get("title", issue.title), 512)
    if "body" in data:
        issue.body = data["body"]
    issue.state = data.get("state") or issue.state or "open"
    if "labels" in data or issue.labels is None:
        issue.labels = [label.get("name") for label in data.get("labels") or [] if isinstance(label, dict)]
    if "user" in data:
        issue.author = _login(data["user"])
    if "assignees" in data or issue.assignees is None:
        issue.assignees = [a.get("login") for a in data.get("assignees") or [] if isinstance(a, dict)]
    issue.html_url = data.get("html_url", issue.html_url)
    if "comments" in data or issue.comments is None:
        issue.comments = int(data.get("comments") or 0)
    for field in ("created_at", "updated_at", "closed_at"):
        if field in data:
            setattr(issue, f"github_{field}", parse_time(data[field]))
    issue.deleted_at = None


def _issue_is_stale(issue: Issue, data: dict) -> bool:
    incoming, stored = parse_time(data.get("updated_at")), issue.github_updated_at
    if not _newer_or_same(incoming, stored):
        return True
    # deleted or transferred: only a strictly newer snapshot brings it back
    return issue.deleted_at is not None and stored is not None and incoming is not None and incoming <= as_utc(stored)


def upsert_issues(project_id: uuid.UUID, items: list[dict]) -> list[tuple[Issue, str]]:
    return _upsert_many(Issue, project_id, items, _fill_issue, _issue_is_stale)


def upsert_issue(project_id: uuid.UUID, data: dict) -> tuple[Issue, str]:
    """Apply an issue snapshot: outcome created | updated | stale."""
    return upsert_issues(project_id, [data])[0]


def remove_issue(project_id: uuid.UUID, data: dict) -> Issue | None:
    """The issue was deleted or transferred away: keep the row (tasks may point to it), stop listing it."""
    issue = db.session.scalar(select(Issue).where(Issue.project_id == project_id, Issue.number == data["number"]))
    if issue is None:
        return None
    incoming = parse_time(data.get("updated_at"))
    issue.state = "closed"
    issue.deleted_at = utcnow()
    if incoming is not None and _newer_or_same(incoming, issue.github_updated_at):
        issue.github_updated_at = incoming
    return issue


def mark_missing_issues(project_id: uuid.UUID, seen_numbers: set[int]) -> int:
    """After a complete listing: issues GitHub no longer has (deleted, transferred) stop being listed."""
    missing = db.session.scalars(select(Issue).where(
        Issue.project_id == project_id, Issue.deleted_at.is_(None), Issue.github_id.is_not(None),
        Issue.number.not_in(seen_numbers) if seen_numbers else Issue.number.is_not(None))).all()
    now = utcnow()
    for issue in missing:
        issue.state, issue.deleted_at = "closed", now
    return len(missing)


# --- pull requests --------------------------------------------------------------------------
def _linked_issue_id(project_id: uuid.UUID, body: str | None, own_number: int) -> uuid.UUID | None:
    for match in CLOSING_KEYWORD.finditer((body or "")[:CLOSING_SCAN_CHARS]):
        number = int(match.group(1))
        if number == own_number:
            continue
        issue_id = db.session.scalar(select(Issue.id).where(Issue.project_id == project_id, Issue.number == number))
        if issue_id is not None:
            return issue_id
    return None


def _fill_pull_request(pr: PullRequest, data: dict) -> None:
    merged = bool(data.get("merged") or data.get("merged_at"))
    head, base = data.get("head") or {}, data.get("base") or {}
    pr.github_id = data.get("id")
    pr.title = _text(data.get("title"), 512)
    pr.body = data.get("body")
    pr.state = "merged" if merged or pr.state == "merged" else (data.get("state") or "open")
    pr.draft = bool(data.get("draft"))
    pr.head_ref = head.get("ref")
    pr.base_ref = base.get("ref")
    pr.head_sha = head.get("sha")
    pr.author = _login(data.get("user"))
    pr.html_url = data.get("html_url")
    if data.get("comments") is not None:  # the list endpoint leaves counts out
        pr.comments = int(data["comments"])
    if merged:
        pr.merged_at = parse_time(data.get("merged_at")) or pr.merged_at
        pr.merge_commit_sha = data.get("merge_commit_sha") or pr.merge_commit_sha
    pr.github_created_at = parse_time(data.get("created_at"))
    pr.github_updated_at = parse_time(data.get("updated_at"))
    pr.github_closed_at = parse_time(data.get("closed_at"))
    if pr.issue_id is None:
        pr.issue_id = _linked_issue_id(pr.project_id, pr.body, pr.number)


def _pull_request_is_stale(pr: PullRequest, data: dict) -> bool:
    return not _newer_or_same(parse_time(data.get("updated_at")), pr.github_updated_at)


def upsert_pull_requests(project_id: uuid.UUID, items: list[dict]) -> list[tuple[PullRequest, str]]:
    """Apply pull request snapshots (webhook or pulls API), then their checks state."""
    results = _upsert_many(PullRequest, project_id, items, _fill_pull_request, _pull_request_is_stale)
    states = checks_states(project_id, {pr.head_sha for pr, _ in results if pr.head_sha})
    for pr, _ in results:
        pr.checks_state = states.get(pr.head_sha, "none")
    return results


def upsert_pull_request(project_id: uuid.UUID, data: dict) -> tuple[PullRequest, str]:
    return upsert_pull_requests(project_id, [data])[0]


def set_pull_request_comments(project_id: uuid.UUID, data: dict) -> str:
    """issue_comment on a pull request: its issue snapshot carries the conversation's comment count."""
    pr = db.session.scalar(select(PullRequest).where(PullRequest.project_id == project_id,
                                                     PullRequest.number == data["number"]))
    if pr is None:
        return "unknown"
    if not _newer_or_same(parse_time(data.get("updated_at")), pr.github_updated_at):
        return "stale"
    pr.comments = int(data.get("comments") or 0)
    return "updated"


# --- reviews ----------------------------------------------------------------------------------
def upsert_review(pr: PullRequest, data: dict) -> PullRequestReview | None:
    """A GitHub review (submitted, edited, dismissed, or listed by the sync); pending drafts are skipped."""
    verdict = REVIEW_VERDICTS.get((data.get("state") or "").lower())
    if verdict is None or data.get("id") is None:
        return None
    query = select(PullRequestReview).where(PullRequestReview.pull_request_id == pr.id,
                                            PullRequestReview.github_kind == "review",
                                            PullRequestReview.github_id == data["id"])
    review = db.session.scalar(query)
    if review is None:
        review = PullRequestReview(pull_request_id=pr.id, source="github", github_kind="review",
                                   github_id=data["id"])
        try:
            with db.session.begin_nested():
                _fill_review(review, data, verdict)
                db.session.add(review)
                db.session.flush()
        except IntegrityError:
            review = db.session.scalar(query)
    if review is not None:
        _fill_review(review, data, verdict)
    recompute_review_state(pr)
    return review


def _fill_review(review: PullRequestReview, data: dict, verdict: str) -> None:
    review.verdict = verdict
    if review.source == "github" or data.get("body"):
        review.body = data.get("body")
    review.author = _login(data.get("user")) or review.author
    review.commit_sha = data.get("commit_id") or review.commit_sha
    review.submitted_at = parse_time(data.get("submitted_at")) or review.submitted_at


def recompute_review_state(pr: PullRequest) -> str:
    """Per reviewer, the latest decisive review (approve, request changes, dismissal) counts; then
    changes_requested > approved > commented > none."""
    db.session.flush()
    reviews = db.session.scalars(select(PullRequestReview).where(
        PullRequestReview.pull_request_id == pr.id, PullRequestReview.github_kind.in_(("review", "comment")))
        .order_by(PullRequestReview.submitted_at.asc().nulls_first(), PullRequestReview.created_at)).all()
    decisive: dict[str, str] = {}
    commented = False
    for review in reviews:
        who = review.author or str(review.id)
        if review.verdict == "commented":
            commented = True
        else:
            decisive[who] = review.verdict
    verdicts = set(decisive.values())
    pr.review_state = ("changes_requested" if "changes_requested" in verdicts else
                       "approved" if "approved" in verdicts else "commented" if commented else "none")
    return pr.review_state


# --- checks ---------------------------------------------------------------------------------
def _upsert_check(project_id: uuid.UUID, sha: str, kind: str, name: str, github_id: int | None, status: str,
                  conclusion: str | None, url: str | None) -> str:
    query = select(CommitCheck).where(CommitCheck.project_id == project_id, CommitCheck.sha == sha,
                                      CommitCheck.kind == kind, CommitCheck.name == name[:255])
    check = db.session.scalar(query)
    if check is not None:
        if check.github_id is not None and github_id is not None and github_id < check.github_id:
            return "stale"  # an older run or status of the same name
        if check.github_id == github_id and check.status == "completed" and status != "completed":
            return "stale"  # the same run's earlier progress, delivered late
    else:
        check = CommitCheck(project_id=project_id, sha=sha, kind=kind, name=name[:255])
        try:
            with db.session.begin_nested():
                check.github_id, check.status = github_id, status
                db.session.add(check)
                db.session.flush()
        except IntegrityError:
            check = db.session.scalar(query)
    check.github_id, check.status, check.conclusion, check.url = github_id, status, conclusion, url
    refresh_pull_request_checks(project_id, sha)
    return "updated"


def upsert_check_run(project_id: uuid.UUID, run: dict) -> str:
    return _upsert_check(project_id, run["head_sha"], "check_run", run.get("name") or str(run["id"]), run.get("id"),
                         run.get("status") or "queued", run.get("conclusion"),
                         run.get("html_url") or run.get("details_url"))


def upsert_status(project_id: uuid.UUID, payload: dict) -> str:
    status, conclusion = status_fields(payload.get("state") or "pending")
    return _upsert_check(project_id, payload["sha"], "status", payload.get("context") or "default", payload.get("id"),
                         status, conclusion, payload.get("target_url"))


def replace_checks(project_id: uuid.UUID, sha: str, checks: list[Check]) -> None:
    """The sync read every check of ``sha`` from GitHub: store exactly those."""
    existing = {(c.kind, c.name): c for c in db.session.scalars(select(CommitCheck).where(
        CommitCheck.project_id == project_id, CommitCheck.sha == sha))}
    for item in checks:
        row = existing.pop((item.kind, item.name[:255]), None)
        if row is None:
            row = CommitCheck(project_id=project_id, sha=sha, kind=item.kind, name=item.name[:255])
            db.session.add(row)
        row.status, row.conclusion, row.url = item.status, item.conclusion, item.url
    for row in existing.values():
        db.session.delete(row)
    db.session.flush()
    refresh_pull_request_checks(project_id, sha)


def checks_states(project_id: uuid.UUID, shas: set[str]) -> dict[str, str]:
    """The ``checks_state`` of each commit, from the stored check runs and statuses (one query)."""
    if not shas:
        return {}
    db.session.flush()
    found: dict[str, list[Check]] = {sha: [] for sha in shas}
    for row in db.session.scalars(select(CommitCheck).where(CommitCheck.project_id == project_id,
                                                            CommitCheck.sha.in_(shas))):
        found[row.sha].append(Check(row.kind, row.name, row.status, row.conclusion, row.url))
    return {sha: overall(checks) for sha, checks in found.items()}


def checks_state(project_id: uuid.UUID, sha: str | None) -> str:
    return checks_states(project_id, {sha}).get(sha, "none") if sha else "none"


def refresh_pull_request_checks(project_id: uuid.UUID, sha: str) -> None:
    prs = db.session.scalars(select(PullRequest).where(PullRequest.project_id == project_id,
                                                       PullRequest.head_sha == sha)).all()
    if prs:
        state = checks_state(project_id, sha)
        for pr in prs:
            pr.checks_state = state
