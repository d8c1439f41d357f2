"""The task board watching the real pipeline: a webhook-delivered issue planned by the architect
into four tasks for the one coder, coded, tested and reviewed by agents (the LLM stub scripted per
role, real workers, the fake GitHub holding real branches), and a person's Approve click in the
pull request list. The page on /projects/<id> must show a task card in every column it passes
through, in order, with its progress bar, and record nothing else."""
from __future__ import annotations

import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

from tests.browser.conftest import expect, screenshot
from tests.pipeline.conftest import REPO, call, last_tool_call, make_pipeline_team, role_of, text_of
from tests.pipeline.scripted import Script, start_from_webhook, tasks_of
from tests.stubs.llm import Step

FIRST, TRACKED, THIRD, FOURTH = ("Fix the spelling in the README", "Add a build badge to the README",
                                 "Document the release steps", "Add a contributing guide")
BADGE = "# Hello World\n![build](https://ci.example.test/badge.svg)\nSpeling.\n"
# Every column of a card and its progress, in the order the page showed them, per task id: a
# MutationObserver sees each render, so a state the board showed for a moment is recorded too.
RECORD_COLUMNS = """() => {
  window.boardSeen = {};
  const look = () => {
    for (const card of document.querySelectorAll('.task[data-testid^="task-"]')) {
      const id = card.dataset.testid.slice(5);
      const column = card.closest('[data-testid^="column-"]').dataset.testid.slice(7);
      const progress = card.querySelector('[data-testid="task-progress-' + id + '"]').getAttribute("value");
      const seen = (window.boardSeen[id] = window.boardSeen[id] || []);
      const last = seen[seen.length - 1];
      if (!last || last[0] !== column || last[1] !== progress) seen.push([column, progress]);
    }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ["value"]});
  look();
}"""


class BoardScript(Script):
    """The architect plans four tasks; the coder reports progress on TRACKED before submitting it.
    The answer to the first call of each (role, task) in ``held`` waits in the stub until the test
    opens its gate, so the test sees each stage while it lasts."""

    role_cost = {"architect": 0.04, "coder": 0.18, "tester": 0.05, "reviewer": 0.07}  # USD a call

    def __init__(self, held: list[tuple[str, str]]):
        super().__init__()
        self.arrived = {key: threading.Event() for key in held}
        self.gates = {key: threading.Event() for key in held}
        self.trace: list[tuple] = []  # (role, task, last tool) of every call, for a failure's message

    def __call__(self, body: dict) -> Step:
        key = (role_of(body), self.task_of(body))
        self.trace.append((*key, last_tool_call(body)))
        step = super().__call__(body)
        if key in self.gates and last_tool_call(body) is None and not self.arrived[key].is_set():
            self.arrived[key].set()
            step.hold = self.gates[key]
        return step

    @staticmethod
    def task_of(body: dict) -> str | None:
        titles = re.findall(r"Task: (.+?) \(priority", text_of(body))
        return titles[-1] if titles else None

    def wait(self, role: str, title: str) -> None:
        assert self.arrived[(role, title)].wait(timeout=30), f"{role} never called for {title!r}: {self.trace}"

    def open(self, role: str, title: str) -> None:
        self.gates[(role, title)].set()

    def open_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    def decide(self, body: dict) -> Step:
        role, last = role_of(body), last_tool_call(body)
        if role == "architect" and last is None:
            return call("create_tasks", {"tasks": [
                {"title": title, "description": f"{title}.", "priority": priority,
                 "definition_of_done": "Reviewed and merged", "assignee_type": "coder"}
                for title, priority in ((FIRST, "high"), (TRACKED, "medium"), (THIRD, "low"), (FOURTH, "low"))]})
        if role == "coder" and self.task_of(body) == TRACKED:
            refused = self.record(body)
            if refused is not None:
                return refused
            if last is None:
                return call("report_progress", {"progress": 40, "message": "Badge markup written"})
            if last == "report_progress":
                return call("submit_changes", {"title": "Add a build badge", "body": "Shows CI status.",
                                               "files": [{"path": "README.md", "content": BADGE}]})
            return Step(content="Badge submitted for testing.")
        return super().decide(body)


def test_the_pipeline_moves_a_task_card_through_every_column_to_completed(pipeline_stack, app, llm, repo, fake_git):
    stack = pipeline_stack
    team = make_pipeline_team(app)
    project = team["project"]
    script = BoardScript(held=[("coder", FIRST), ("coder", TRACKED), ("tester", TRACKED),
                               ("reviewer", TRACKED), ("coder", THIRD)])
    llm.responder = script
    page = stack.logged_in("operator", f"/projects/{project}")
    board = {status: page.get_by_test_id(f"column-{status}")
             for status in ("pending", "in_progress", "testing", "review", "completed")}
    expect(board["pending"]).to_be_visible()
    page.evaluate(RECORD_COLUMNS)
    try:
        issue = start_from_webhook(stack, team)

        # The plan: the coder takes the first task; the others wait their turn in pending.
        script.wait("coder", FIRST)
        tasks = stack.wait_for(lambda: len(found := tasks_of(stack, project, issue)) == 4 and found)
        ids = {t["title"]: t["id"] for t in tasks}
        task = ids[TRACKED]
        meter = page.get_by_test_id(f"task-progress-{task}")
        expect(board["pending"].get_by_test_id(f"task-{task}")).to_be_visible()
        expect(meter).to_have_attribute("value", "0")
        expect(board["in_progress"].get_by_test_id(f"task-{ids[FIRST]}")).to_be_visible()

        # The first task goes to testing: the coder is free and starts ours.
        script.open("coder", FIRST)
        script.wait("coder", TRACKED)
        expect(board["in_progress"].get_by_test_id(f"task-{task}")).to_be_visible()
        expect(meter).to_have_attribute("value", "10")

        # The coder reports progress and submits: testing, and the coder starts the third task.
        script.open("coder", TRACKED)
        script.wait("tester", TRACKED)
        expect(board["testing"].get_by_test_id(f"task-{task}")).to_be_visible()
        expect(meter).to_have_attribute("value", "70")
        script.open("tester", TRACKED)
        script.wait("reviewer", TRACKED)
        expect(board["review"].get_by_test_id(f"task-{task}")).to_be_visible()
        expect(meter).to_have_attribute("value", "85")
        script.open("reviewer", TRACKED)

        # The reviewer approved: the task waits in review for a person, its pull request open.
        reviewed = stack.wait_for(lambda: next(
            (t for t in tasks_of(stack, project, issue) if t["id"] == task and t["status"] == "review"
             and t["assigned_to"] is None), None))
        assert script.errors == [], script.errors
        branch = f"mcc/task-{uuid.UUID(task).hex[:8]}"
        head = fake_git.ref(REPO, branch)
        assert head is not None and fake_git.branch_files(REPO, branch) == {"README.md": BADGE}
        repo.add_check_run(head, "ci", conclusion="success")
        prs = stack.api("GET", f"/projects/{project}/pull-requests").json()["items"]
        pr = next(p for p in prs if p["number"] == reviewed["pr"]["number"])
        page.get_by_test_id(f"pr-approve-{pr['id']}").click()

        # Merged: completed, at 100, and gone from every other column.
        expect(board["completed"].get_by_test_id(f"task-{task}")).to_be_visible()
        expect(meter).to_have_attribute("value", "100")
        expect(page.get_by_test_id(f"pr-state-{pr['id']}")).to_contain_text("merged")
        for status in ("pending", "in_progress", "testing", "review"):
            expect(board[status].get_by_test_id(f"task-{task}")).to_have_count(0)
        assert fake_git.ref(REPO, "master") == head

        # Every column the card was in, in order, each with the progress it showed there.
        seen = page.evaluate("() => window.boardSeen")
        assert seen[task] == [["pending", "0"], ["in_progress", "10"], ["in_progress", "40"], ["testing", "70"],
                              ["review", "85"], ["completed", "100"]], seen[task]
        history = stack.api("GET", f"/projects/{project}/tasks/{task}").json()["history"]
        assert [h["to_status"] for h in history] == ["pending", "in_progress", "testing", "review", "completed"]
        # The rest of the board, live: the third task held with the coder, the fourth waiting.
        expect(board["in_progress"].get_by_test_id(f"task-{ids[THIRD]}")).to_be_visible()
        expect(board["pending"].get_by_test_id(f"task-{ids[FOURTH]}")).to_be_visible()
        page.reload()  # as a person opening it now sees it: the agents' figures are read on load
        expect(board["completed"].get_by_test_id(f"task-{task}")).to_be_visible()
        screenshot(page, "project")
        show_the_run_elsewhere(stack, app, page, project, reviewed["conversation_id"])
        assert page.errors == []
    finally:
        script.open_all()


def show_the_run_elsewhere(stack, app, page, project: str, conversation: str) -> None:
    """The same run on the other pages (their screenshots): the task's conversation with a tool call
    opened, the overview beside a second project, and the day's spend against a global limit."""
    from tests.factories import make_agent, make_project, make_spend

    messages = stack.messages(project, conversation)
    progress = next(m for m in messages if any(t["name"] == "report_progress"
                                               for t in (m["metadata"] or {}).get("tool_calls") or []))
    page.goto(f"/projects/{project}/conversations/{conversation}")
    tools = page.get_by_test_id(f"message-tools-{progress['id']}")
    tools.locator("summary").click()
    expect(tools).to_contain_text("Badge markup written")  # the arguments
    expect(tools).to_contain_text("\"progress\": 40")  # and the result
    expect(page.get_by_test_id("message-list")).to_contain_text("all tests pass")
    screenshot(page, "conversation")

    with app.app_context():
        other = make_project(name="Billing service", github_repo="octo-org/billing")
        other_id = str(other.id)
        ada = make_agent(other, name="Ada", type="architect")
        make_spend(other, ada, cost_usd="0.85")
        for days, cost in ((1, "1.10"), (2, "0.40"), (3, "1.75"), (5, "0.95"), (8, "2.20"), (9, "0.60")):
            make_spend(other, ada, cost_usd=cost, created_at=datetime.now(timezone.utc) - timedelta(days=days))
        make_agent(other, name="Bob", type="coder", status="error")
        from mcc.services.rollup import reconcile

        reconcile(days=10)  # the rollup the figures read, as the periodic job keeps it
    page.goto("/")
    expect(page.get_by_test_id(f"project-{project}")).to_contain_text("4 agents, 1 working")
    expect(page.get_by_test_id(f"project-{project}")).to_contain_text(THIRD)  # the coder's current task
    expect(page.get_by_test_id(f"project-{other_id}")).to_contain_text("Billing service")
    screenshot(page, "overview")

    admin = stack.login("admin")
    limit = stack.api("POST", "/budget/limits", token=admin, json={
        "name": "Daily cap", "scope_type": "global", "amount_usd": 5, "period": "daily", "alert_threshold": 0.8,
        "action_on_exceed": "pause"})
    assert limit.status_code == 201, limit.text
    spent = stack.api("GET", "/budget/summary", token=admin).json()
    budget = stack.logged_in("admin", "/budget")
    expect(budget.get_by_test_id("budget-today")).to_contain_text("of $5.00")
    assert spent["today"]["spent"] > 0.85, spent  # the run's calls and the other project's
    expect(budget.get_by_test_id("budget-by-project")).to_contain_text("Billing service")
    screenshot(budget, "budget")
    assert budget.errors == []
