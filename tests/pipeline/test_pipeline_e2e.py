"""Issue -> architect plan -> coder pull request -> tester -> reviewer -> a person's merge, end to end.

Real web and worker processes, the LLM stub scripted (per request, by the agent's tools) to call
the pipeline's tools, and a fake GitHub that holds real branches, commits and pull requests. The
test drives MCC only through its public API, a signed webhook and Socket.IO events.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.pipeline.conftest import REPO, last_tool_call, role_of
from tests.pipeline.scripted import (CHANGES, FAILURE, FIXED, ROLE_COST, Script, start_scripted, tasks_of,
                                     wait_approved_by_reviewer, wait_task)
from tests.stubs.llm import Step

pytestmark = pytest.mark.live


def statuses_in_order(events: list[dict]) -> list[str]:
    out: list[str] = []
    for event in events:
        if not out or out[-1] != event["status"]:
            out.append(event["status"])
    return out


def test_issue_is_planned_coded_tested_reviewed_and_merged(prt, team, repo, fake_git, llm, progress):
    script = Script()
    project, issue = start_scripted(prt, team, llm, script)

    # Architect plans one task for the coder; coder submits; tester passes; reviewer approves.
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=30)
    assert script.errors == [], script.errors
    assert task["title"] == "Fix the spelling in the README" and task["priority"] == "high"
    assert task["definition_of_done"] == "README spelled right"
    assert task["issue"]["number"] == 1 and task["progress"] == 85 and task["attempts"] == 0

    # The fake GitHub holds a real branch, a commit with the file, and one open PR referencing #1.
    branch = f"mcc/task-{uuid.UUID(task['id']).hex[:8]}"
    head = fake_git.ref(REPO, branch)
    assert head is not None, f"no branch {branch}"
    commit = fake_git.commit_of(REPO, head)
    assert commit["message"] == "Fix README spelling"
    assert commit["parents"] == [fake_git.ref(REPO, "master")]
    assert fake_git.branch_files(REPO, branch) == {"README.md": FIXED}
    [pull] = repo.pulls.values()
    assert pull["state"] == "open" and pull["head"]["ref"] == branch and pull["base"]["ref"] == "master"
    assert pull["head"]["sha"] == head
    assert "#1" in pull["body"]
    assert task["pr"]["number"] == pull["number"] and task["pr"]["status"] == "open"
    # The tester and reviewer read the diff; the reviewer's summary is on the pull request.
    diffs = [r["diff"] for r in script.tool_results["read_pull_request"]]
    assert len(diffs) == 2 and all("+Spelling." in d and "-Speling." in d for d in diffs)
    assert any("Looks right to me." in c["body"] for c in repo.comments.get(pull["number"], []))

    # So far the socket client saw the task move through the pipeline, in order.
    prt.wait_for(lambda: any(e["status"] == "review" for e in progress.drain()), timeout=5)
    ours = [e for e in progress.drain() if e["task_id"] == task["id"]]
    assert [s for s in statuses_in_order(ours) if s != "pending"] == ["in_progress", "testing", "review"], ours
    assert [e["progress"] for e in ours if e["status"] == "testing"][0] == 70

    # CI passes on the head commit; a person approves: merged, task completed, issue closed.
    repo.add_check_run(head, "ci", conclusion="success")
    prs = prt.api("GET", f"/projects/{project}/pull-requests").json()["items"]
    pr = next(p for p in prs if p["number"] == pull["number"])
    response = prt.api("POST", f"/projects/{project}/pull-requests/{pr['id']}/approve")
    assert response.status_code == 200, response.text
    assert pull["merged"] is True and fake_git.ref(REPO, "master") == head
    # (Needs pipeline.on_pull_request_merged wired into the approve endpoint.)
    task = wait_task(prt, project, issue, lambda t: t["status"] == "completed", timeout=5)
    assert task["progress"] == 100 and task["assigned_to"] is None
    assert repo.issues[1]["state"] == "closed"
    mirrored = prt.api("GET", f"/projects/{project}/issues", params={"state": "all"}).json()["items"]
    assert next(i for i in mirrored if i["id"] == issue["id"])["state"] == "closed"
    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    assert [h["to_status"] for h in history] == ["pending", "in_progress", "testing", "review", "completed"]

    # The coder did the work: its analytics count the completed task and what each cost, as billed.
    def metrics_of(name: str) -> dict:
        agents = prt.api("GET", "/analytics/agents", params={"limit": 100}).json()["agents"]
        return next(a["metrics"] for a in agents if a["id"] == team["agents"][name])

    coder_cost = round(ROLE_COST["coder"] * sum(1 for c in llm.calls if role_of(c.body) == "coder"), 6)
    assert coder_cost >= 2 * ROLE_COST["coder"]  # submit_changes, then its answer to the result
    coder = prt.wait_for(lambda: (m := metrics_of("Cody"))["total_cost"] == coder_cost and m, timeout=5)
    assert (coder["tasks_completed"], coder["success_rate"]) == (1, 1.0)
    assert coder["cost_per_completed_task"] == coder_cost
    # The tester and the reviewer handled it but did not do the task: no task outcome is theirs.
    for name in ("Tess", "Rev"):
        assert (metrics_of(name)["tasks_completed"], metrics_of(name)["success_rate"]) == (0, None)

    # The socket client saw the completion too, after the review.
    prt.wait_for(lambda: any(e["status"] == "completed" for e in progress.drain()), timeout=15)
    ours = [e for e in progress.drain() if e["task_id"] == task["id"]]
    order = [s for s in statuses_in_order(ours) if s != "pending"]
    assert order == ["in_progress", "testing", "review", "completed"], ours
    assert ours[-1]["progress"] == 100


def test_failed_tests_send_the_task_back_and_the_second_submit_updates_the_same_pull_request(
        prt, team, repo, fake_git, llm, progress):
    script = Script(test_results=(False, True))
    project, issue = start_scripted(prt, team, llm, script)

    # First round: tests fail -> back to the coder (attempt 1) with the summary; the coder submits
    # again, the tester passes, the reviewer approves.
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=40)
    assert script.errors == [], script.errors
    assert task["attempts"] == 1
    assert len(script.coder_briefs) == 2
    assert FAILURE not in script.coder_briefs[0] and FAILURE in script.coder_briefs[1]

    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    assert [h["to_status"] for h in history] == ["pending", "in_progress", "testing", "in_progress", "testing",
                                                 "review"]
    back = history[3]
    assert back["actor_type"] == "agent" and back["actor_name"] == "Tess" and FAILURE in back["reason"]

    # The coder's second brief, in the task conversation, names the failure.
    messages = prt.messages(project, task["conversation_id"])
    briefs = [m for m in messages if m["author_type"] == "system" and "Feedback to address" in m["content"]]
    assert len(briefs) == 1 and FAILURE in briefs[0]["content"] and "attempt 2" in briefs[0]["content"]

    # Both submissions went to the same branch and the same (single) pull request.
    branch = f"mcc/task-{uuid.UUID(task['id']).hex[:8]}"
    submits = script.tool_results["submit_changes"]
    assert len(submits) == 2 and all(s.get("branch") == branch for s in submits)
    assert submits[0]["pull_request"]["number"] == submits[1]["pull_request"]["number"]
    assert len(repo.pulls) == 1
    [pull] = repo.pulls.values()
    head = fake_git.ref(REPO, branch)
    assert head == submits[1]["commit"] and pull["head"]["sha"] == head
    assert fake_git.commit_of(REPO, head)["parents"] == [submits[0]["commit"]]
    assert len(fake_git.calls("POST", r"/pulls$")) == 1 and len(fake_git.calls("PATCH", r"/pulls/\d+$")) == 1
    assert task["pr"]["number"] == pull["number"]

    prt.wait_for(lambda: any(e["status"] == "review" for e in progress.drain()), timeout=5)
    ours = [e for e in progress.drain() if e["task_id"] == task["id"]]
    order = [s for s in statuses_in_order(ours) if s != "pending"]
    assert order == ["in_progress", "testing", "in_progress", "testing", "review"], ours


def test_a_persons_rejection_sends_the_task_back_to_the_coder_with_the_feedback(
        prt, team, repo, fake_git, llm):
    script = Script()
    project, issue = start_scripted(prt, team, llm, script)
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=30)
    [pull] = repo.pulls.values()
    prs = prt.api("GET", f"/projects/{project}/pull-requests").json()["items"]
    pr = next(p for p in prs if p["number"] == pull["number"])

    feedback = "Please also fix 'Wrold' in the title line."
    response = prt.api("POST", f"/projects/{project}/pull-requests/{pr['id']}/reject", json={"feedback": feedback})
    assert response.status_code == 200, response.text
    # (Needs pipeline.on_pull_request_rejected wired into the reject endpoint.)
    task = tasks_of(prt, project, issue)[0]
    assert task["status"] in ("in_progress", "testing", "review") and task["attempts"] == 1
    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    back = history[4]
    assert (back["from_status"], back["to_status"], back["actor_type"]) == ("review", "in_progress", "user")
    assert feedback in back["reason"]

    # The coder gets the feedback, resubmits on the same branch and pull request; the task goes
    # through testing and review again.
    task = wait_approved_by_reviewer(prt, project, issue, script, reviews=2, timeout=30)
    assert script.errors == [], script.errors
    assert len(script.coder_briefs) == 2 and feedback in script.coder_briefs[1]
    assert len(repo.pulls) == 1 and len(fake_git.calls("POST", r"/pulls$")) == 1
    assert pull["head"]["sha"] == script.tool_results["submit_changes"][1]["commit"]


def test_requested_changes_send_the_task_back_to_the_coder(prt, team, repo, fake_git, llm):
    script = Script(verdicts=("request_changes", "approve"))
    project, issue = start_scripted(prt, team, llm, script)
    task = wait_approved_by_reviewer(prt, project, issue, script, reviews=2, timeout=40)
    assert script.errors == [], script.errors
    assert task["attempts"] == 1
    assert len(script.coder_briefs) == 2 and CHANGES in script.coder_briefs[1]
    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    assert [h["to_status"] for h in history] == ["pending", "in_progress", "testing", "review", "in_progress",
                                                 "testing", "review"]
    assert history[4]["actor_name"] == "Rev" and CHANGES in history[4]["reason"]
    assert len(repo.pulls) == 1 and len(fake_git.calls("POST", r"/pulls$")) == 1


def test_tests_failing_every_time_fail_the_task_after_the_attempt_limit(prt, team, repo, llm, progress):
    script = Script(test_results=(False,))
    project, issue = start_scripted(prt, team, llm, script)
    task = wait_task(prt, project, issue, lambda t: t["status"] == "failed", timeout=40)
    time.sleep(1)  # nothing runs after the failure
    assert script.errors == [], script.errors
    assert task["attempts"] == 3  # MCC_MAX_TASK_ATTEMPTS
    assert len(script.coder_briefs) == 3 and script.testing_rounds == 3
    assert len(script.tool_results.get("submit_changes", [])) == 3
    assert "submit_review" not in script.tool_results
    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    assert [h["to_status"] for h in history][-2:] == ["in_progress", "failed"]
    notes = prt.api("GET", "/notifications").json()["items"]
    assert any(n["kind"] == "task_failed" and n["data"]["task_id"] == task["id"] for n in notes), notes
    prt.wait_for(lambda: any(e["status"] == "failed" for e in progress.drain()), timeout=5)
    assert len(repo.pulls) == 1


class HoldingScript(Script):
    """Script, except that the answer to the tester's first call waits in the stub until the test
    releases it. The stub waits outside its lock (``Step.hold``): the responder runs under it, and
    waiting there would stall every other agent's call too."""

    def __init__(self):
        super().__init__()
        self.tester_calling = threading.Event()
        self.release = threading.Event()

    def __call__(self, body: dict) -> Step:
        step = super().__call__(body)
        if role_of(body) == "tester" and last_tool_call(body) is None and not self.tester_calling.is_set():
            self.tester_calling.set()
            step.hold = self.release
        return step


def wait_coder_done(prt, team, llm) -> None:
    """The coder's call answering its submit_changes has been made and its turn has ended. The
    tester's turn starts as the coder submits, so that call may still be coming; caught by a pause,
    it would reach the stub after the pause-all returned, or run after the resume."""
    prt.wait_for(lambda: any(role_of(c.body) == "coder" and last_tool_call(c.body) == "submit_changes"
                             for c in list(llm.calls)), timeout=30)
    coder = team["agents"]["Cody"]
    prt.wait_for(lambda: prt.api("GET", "/turns", params={"agent_id": coder, "status": "running"})
                 .json()["items"] == [], timeout=30)


def test_pause_all_in_the_middle_of_the_pipeline_holds_it_and_resume_all_continues_it(
        prt, team, repo, llm, progress):
    script = HoldingScript()
    project, issue = start_scripted(prt, team, llm, script)

    # The coder has submitted; the tester's first call is at the gateway when a person pauses everything.
    assert script.tester_calling.wait(timeout=30), prt.logs(tail=4000)
    wait_coder_done(prt, team, llm)
    paused = prt.api("POST", "/emergency/pause-all", json={"reason": "check the pipeline"})
    paused_at = time.time()
    assert paused.status_code == 200, paused.text
    # The call watch looks for cancel marks every MCC_CANCEL_POLL_SECONDS (0.1 s): let it see the
    # pause before the held answer (a short one) could be read in full.
    time.sleep(0.5)
    script.release.set()

    # The call already at the gateway is closed as its answer starts to stream (the tester's turn
    # ends cancelled, a copy of it held), and then nothing: the tester, its verdict, the reviewer.
    time.sleep(3)
    late = [role_of(c.body) for c in llm.calls_after(paused_at)]
    assert late == [], f"LLM calls made while paused: {late}"
    assert "read_pull_request" not in script.tool_results and script.testing_rounds == 0
    [task] = tasks_of(prt, project, issue)
    assert task["status"] == "testing" and task["attempts"] == 0
    assert prt.api("GET", "/emergency/status").json()["status"] == "paused"
    assert not any(e["status"] == "review" for e in progress.drain())

    # An admin resumes: the held copy of the tester's turn runs, then the reviewer approves.
    admin = prt.login("admin")
    resumed = prt.api("POST", "/emergency/resume-all", token=admin)
    assert resumed.status_code == 200, resumed.text
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=30)
    assert script.errors == [], script.errors
    assert script.testing_rounds == 1 and len(script.tool_results["read_pull_request"]) == 2
    assert len(script.tool_results["submit_changes"]) == 1 and len(repo.pulls) == 1
    history = prt.api("GET", f"/projects/{project}/tasks/{task['id']}").json()["history"]
    assert [h["to_status"] for h in history] == ["pending", "in_progress", "testing", "review"]
    prt.wait_for(lambda: any(e["status"] == "review" for e in progress.drain()), timeout=5)
    ours = [e for e in progress.drain() if e["task_id"] == task["id"]]
    assert [s for s in statuses_in_order(ours) if s != "pending"] == ["in_progress", "testing", "review"], ours


REMINDER = "your turn ended without `submit_changes`"


def test_a_coder_that_answers_in_prose_is_reminded_and_then_submits(prt, team, repo, llm):
    script = Script(coder_prose=1)
    project, issue = start_scripted(prt, team, llm, script)
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=30)
    assert script.errors == [], script.errors
    assert len(script.coder_briefs) == 2, script.coder_briefs
    assert REMINDER not in script.coder_briefs[0] and REMINDER in script.coder_briefs[1]
    assert task["attempts"] == 0 and len(repo.pulls) == 1
    messages = prt.messages(project, task["conversation_id"])
    assert sum(1 for m in messages if m["author_type"] == "system" and REMINDER in m["content"]) == 1


def test_a_coder_that_never_submits_hands_the_task_to_a_person_who_restarts_it(prt, team, repo, llm, progress):
    script = Script(coder_prose=3)  # the stage turn and both reminders (MCC_STAGE_REMINDERS=2)
    project, issue = start_scripted(prt, team, llm, script)

    task = wait_task(prt, project, issue, lambda t: t["status"] == "in_progress" and t["assigned_to"] is None,
                     timeout=30)
    time.sleep(1)  # and nothing more runs
    assert len(script.coder_briefs) == 3 and "submit_changes" not in script.tool_results
    assert sum(REMINDER in brief for brief in script.coder_briefs) == 2
    notes = prt.api("GET", "/notifications").json()["items"]
    stalled = [n for n in notes if n["kind"] == "task_stalled" and n["data"]["task_id"] == task["id"]]
    assert len(stalled) == 1 and "ended 3 turns without calling `submit_changes`" in stalled[0]["message"]
    messages = prt.messages(project, task["conversation_id"])
    assert "waits for a person" in messages[-1]["content"] and messages[-1]["author_type"] == "system"
    prt.wait_for(lambda: any("waits for a person" in (e.get("message") or "") for e in progress.drain()), timeout=5)
    assert not repo.pulls

    # A person assigns it again: the stage restarts, and this time the coder submits.
    response = prt.api("POST", f"/projects/{project}/tasks/{task['id']}/assign",
                       json={"agent_id": team["agents"]["Cody"]})
    assert response.status_code == 200, response.text
    task = wait_approved_by_reviewer(prt, project, issue, script, timeout=30)
    assert script.errors == [], script.errors
    assert len(script.coder_briefs) == 4  # the restarted stage: a new brief (the history keeps the reminders)
    assert script.coder_briefs[3].rstrip().endswith("hands the task to testing.")
    assert len(repo.pulls) == 1


def test_a_stage_turn_that_fails_hands_the_task_to_a_person_and_frees_the_agent(prt, team, repo, llm):
    script = Script()

    def coder_gateway_refuses(body: dict) -> Step:
        if role_of(body) == "coder":
            return Step(status=400)  # not retried: the turn fails at once
        return script(body)
    project, issue = start_scripted(prt, team, llm, coder_gateway_refuses)
    task = wait_task(prt, project, issue, lambda t: t["status"] == "in_progress" and t["assigned_to"] is None,
                     timeout=30)
    notes = prt.api("GET", "/notifications").json()["items"]
    stalled = [n for n in notes if n["kind"] == "task_stalled" and n["data"]["task_id"] == task["id"]]
    assert len(stalled) == 1 and "Cody could not answer" in stalled[0]["message"]
    assert any(n["kind"] == "turn_failed" for n in notes)
    coder = prt.api("GET", f"/projects/{project}/agents/{team['agents']['Cody']}").json()
    assert coder["status"] == "error"
    # Nobody retried the stage behind the person's back.
    time.sleep(1)
    assert sum(1 for c in llm.calls if role_of(c.body) == "coder") == 1


def test_resetting_an_agent_whose_stage_turn_is_held_hands_the_task_to_a_person(prt, team, repo, llm):
    script = HoldingScript()
    project, issue = start_scripted(prt, team, llm, script)
    assert script.tester_calling.wait(timeout=30), prt.logs(tail=4000)
    wait_coder_done(prt, team, llm)
    assert prt.api("POST", "/emergency/pause-all", json={"reason": "hold"}).status_code == 200
    script.release.set()
    # The tester's call returns (closed by the pause, or answered), and its turn waits held: the
    # cancelled turn's copy, or the turn itself at its next call.
    tester = team["agents"]["Tess"]
    prt.wait_for(lambda: prt.api("GET", "/turns", params={"agent_id": tester, "status": "held"}).json()["items"],
                 timeout=15)
    assert prt.api("POST", f"/projects/{project}/agents/{tester}/reset").status_code == 200
    reset_at = time.time()
    [task] = tasks_of(prt, project, issue)
    assert task["status"] == "testing" and task["assigned_to"] is None
    notes = prt.api("GET", "/notifications").json()["items"]
    stalled = [n for n in notes if n["kind"] == "task_stalled" and n["data"]["task_id"] == task["id"]]
    assert len(stalled) == 1 and "Tess was reset" in stalled[0]["message"], stalled

    # Resuming does not bring the cancelled turn back.
    assert prt.api("POST", "/emergency/resume-all", token=prt.login("admin")).status_code == 200
    time.sleep(2)
    assert [role_of(c.body) for c in llm.calls_after(reset_at)] == []
    assert tasks_of(prt, project, issue)[0]["status"] == "testing"
