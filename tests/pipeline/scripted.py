"""Driving the pipeline from a test: the shared issue delivered by a signed webhook and started,
the LLM stub scripted per role (``Script``), and waits on the issue's task. Used by the pipeline's
end-to-end tests and by the browser test that watches the same run on the task board."""
from __future__ import annotations

import json
import uuid

import requests

from mcc.github.webhooks import sign
from tests.github.conftest import load_payload
from tests.pipeline.conftest import SECRET, call, last_tool_call, role_of, text_of
from tests.stubs.llm import Step

FIXED = "# Hello World\nSpelling.\n"
FAILURE = "test_readme fails: 'Speling' is still misspelled on line 2"
CHANGES = "Keep the heading as it was; only fix the typo."
# What the stub bills each role's call (usage.cost), so the analytics can be checked independently.
ROLE_COST = {"architect": 0.0005, "coder": 0.0025, "tester": 0.00125, "reviewer": 0.001}


def deliver_issue(rt) -> requests.Response:
    raw = json.dumps(load_payload("issues/opened.payload.json")).encode()
    return requests.post(f"{rt.base}/api/v1/webhooks/github", data=raw, timeout=10, headers={
        "X-GitHub-Event": "issues", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test", "X-Hub-Signature-256": sign(SECRET, raw)})


def start_from_webhook(rt, team) -> dict:
    """A webhook-delivered issue, started: the architect's planning turn is queued."""
    project = team["project"]
    assert deliver_issue(rt).status_code == 202

    def delivered():
        items = rt.api("GET", f"/projects/{project}/issues").json()["items"]
        return next((i for i in items if i["number"] == 1), None)
    issue = rt.wait_for(delivered, timeout=20)
    response = rt.api("POST", f"/projects/{project}/issues/{issue['id']}/start")
    assert response.status_code == 202, response.text
    assert response.json()["type"] == "issue"
    return issue


def start_scripted(rt, team, llm, responder) -> tuple[str, dict]:
    """The stub answers with ``responder``; the shared issue is delivered and started."""
    llm.responder = responder
    return team["project"], start_from_webhook(rt, team)


def tasks_of(rt, project, issue) -> list[dict]:
    response = rt.api("GET", f"/projects/{project}/issues/{issue['id']}/tasks")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def wait_task(rt, project, issue, predicate, timeout: float = 20) -> dict:
    def check():
        items = tasks_of(rt, project, issue)
        return items[0] if len(items) == 1 and predicate(items[0]) else None
    return rt.wait_for(check, timeout=timeout)


def wait_approved_by_reviewer(rt, project, issue, script, reviews: int = 1, timeout: float = 30) -> dict:
    """The task is in review, waiting for a person, after the reviewer's ``reviews``-th verdict."""
    return wait_task(rt, project, issue, lambda t: t["status"] == "review" and t["assigned_to"] is None
                     and len(script.tool_results.get("submit_review", [])) == reviews, timeout=timeout)


class Script:
    """What each agent does, decided per stub request from the agent's tools and its last tool call."""

    role_cost = ROLE_COST

    def __init__(self, test_results=(True,), verdicts=("approve",), coder_prose: int = 0):
        self.coder_prose = coder_prose  # fresh coder turns answered in prose, without submit_changes
        self.test_results = list(test_results)  # one per testing round; the last one repeats
        self.testing_rounds = 0
        self.verdicts = list(verdicts)  # one per review round; the last one repeats
        self.review_rounds = 0
        self.coder_briefs: list[str] = []
        self.tool_results: dict[str, list[dict]] = {}
        self.errors: list[str] = []

    def __call__(self, body: dict) -> Step:
        step = self.decide(body)
        step.usage = {"prompt_tokens": 10, "completion_tokens": 5, "cost": self.role_cost.get(role_of(body), 0)}
        return step

    def record(self, body: dict) -> Step | None:
        """Keep the result of the tool this request answers; a refused tool ends the turn."""
        role, last = role_of(body), last_tool_call(body)
        if last is not None:
            result = json.loads(body["messages"][-1]["content"])
            self.tool_results.setdefault(last, []).append(result)
            if "error" in result:
                self.errors.append(f"{role} {last}: {result}")
                return Step(content=f"{last} failed.")
        return None

    def decide(self, body: dict) -> Step:
        role, last = role_of(body), last_tool_call(body)
        refused = self.record(body)
        if refused is not None:
            return refused
        if role == "architect":
            if last is None:
                return call("create_tasks", {"tasks": [{
                    "title": "Fix the spelling in the README", "description": "'Speling' -> 'Spelling'.",
                    "priority": "high", "definition_of_done": "README spelled right", "assignee_type": "coder"}]})
            return Step(content="Planned one task.")
        if role == "coder":
            if last is None:
                self.coder_briefs.append(text_of(body))
                if len(self.coder_briefs) <= self.coder_prose:
                    return Step(content="The fix looks simple: change 'Speling' to 'Spelling'.")
                return call("submit_changes", {"title": "Fix README spelling", "body": "Fixes the typo.",
                                               "files": [{"path": "README.md", "content": FIXED}]})
            return Step(content="Changes submitted.")
        if role == "tester":
            if last is None:
                return call("read_pull_request")
            if last == "read_pull_request":
                passed = self.test_results[min(self.testing_rounds, len(self.test_results) - 1)]
                self.testing_rounds += 1
                return call("report_test_result", {"passed": passed,
                                                   "summary": "all tests pass" if passed else FAILURE})
            return Step(content="Tested.")
        if role == "reviewer":
            if last is None:
                return call("read_pull_request")
            if last == "read_pull_request":
                verdict = self.verdicts[min(self.review_rounds, len(self.verdicts) - 1)]
                self.review_rounds += 1
                return call("submit_review", {"verdict": verdict, "summary": "Looks right to me."
                                              if verdict == "approve" else CHANGES})
            return Step(content="Reviewed.")
        return Step(content="ok")
