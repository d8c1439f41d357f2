"""Check results of a commit: check runs (by name) and commit statuses (by context).

One classification serves both the stored results (the ``checks_state`` shown on pull requests)
and the live ones read from GitHub when an operator approves a merge.
"""
from __future__ import annotations

from dataclasses import dataclass

from mcc.github.client import GitHubClient

PASSING_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})


@dataclass
class Check:
    kind: str  # check_run | status
    name: str
    status: str  # check runs: queued|in_progress|completed|...; statuses: completed|pending
    conclusion: str | None  # check runs: success|failure|...; statuses: success|failure|error|pending
    url: str | None = None

    @property
    def result(self) -> str:
        """passed | pending | failed"""
        if self.status != "completed":
            return "pending"
        return "passed" if (self.conclusion or "") in PASSING_CONCLUSIONS else "failed"

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "status": self.status, "conclusion": self.conclusion,
                "result": self.result, "url": self.url}


def status_fields(state: str) -> tuple[str, str]:
    """A commit status ``state`` as (status, conclusion)."""
    return ("pending" if state == "pending" else "completed"), state


def overall(checks: list[Check]) -> str:
    """A pull request's ``checks_state``: none | failure | pending | success."""
    if not checks:
        return "none"
    results = {check.result for check in checks}
    if "failed" in results:
        return "failure"
    if "pending" in results:
        return "pending"
    return "success"


def live_checks(client: GitHubClient, repo: str, sha: str) -> list[Check]:
    """Every check of ``sha`` as GitHub has it now: the combined status' statuses (latest per context)
    and the latest check run of each name."""
    combined = client.get(f"/repos/{repo}/commits/{sha}/status", params={"per_page": 100}) or {}
    checks = []
    for status in combined.get("statuses") or []:
        state, conclusion = status_fields(status.get("state") or "pending")
        checks.append(Check("status", status.get("context") or "default", state, conclusion,
                            status.get("target_url")))
    for run in client.paginate(f"/repos/{repo}/commits/{sha}/check-runs", {"per_page": 100, "filter": "latest"},
                               items_key="check_runs"):
        checks.append(Check("check_run", run.get("name") or str(run.get("id")), run.get("status") or "queued",
                            run.get("conclusion"), run.get("html_url") or run.get("details_url")))
    return checks
