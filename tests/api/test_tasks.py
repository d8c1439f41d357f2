"""Tasks API, the one state machine, assignment limits and the issue start."""
from __future__ import annotations

import uuid

import pytest

from mcc.extensions import db
from mcc.models.control import Notification
from mcc.models.github import Issue
from mcc.models.task import TaskTransition
from mcc.models.turn import Turn
from mcc.services import tasks
from mcc.pipeline import stages
from mcc.services.agents import create_agent
from mcc.services.projects import create_project
from tests.factories import auth_headers, make_user


def agent(project, name, type_):
    return create_agent(project.id, {"name": name, "type": type_, "model_config": {
        "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})


@pytest.fixture
def setup(client):
    project = create_project({"name": "Pipe", "github_repo": f"octo/pipe-{uuid.uuid4().hex[:8]}"})
    coder, coder2 = agent(project, "Cody", "coder"), agent(project, "Cora", "coder")
    issue = Issue(project_id=project.id, number=7, title="Add login", body="Users need to log in", state="open")
    db.session.add(issue)
    db.session.commit()
    headers = auth_headers(client, make_user("operator"))
    return {"project": project, "coder": coder, "coder2": coder2, "issue": issue, "headers": headers,
            "base": f"/api/v1/projects/{project.id}"}


def test_task_has_the_spec_shape(client, setup):
    body = {"title": "Write the form", "description": "HTML form", "priority": "high",
            "issue_id": str(setup["issue"].id), "assigned_to_agent_id": str(setup["coder"].id),
            "definition_of_done": "form posts"}
    created = client.post(f"{setup['base']}/tasks", json=body, headers=setup["headers"])
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert task["assigned_to"] == {"id": str(setup["coder"].id), "name": "Cody", "type": "coder"}
    assert task["issue"] == {"id": str(setup["issue"].id), "number": 7, "title": "Add login"}
    assert task["pr"] is None and task["priority"] == "high" and task["definition_of_done"] == "form posts"
    # The free coder starts at once: in progress, with a task conversation and a queued turn.
    assert task["status"] == "in_progress" and task["progress"] == 10
    turn = db.session.query(Turn).filter_by(task_id=uuid.UUID(task["id"])).one()
    assert turn.agent_id == setup["coder"].id and str(turn.conversation_id) == task["conversation_id"]
    detail = client.get(f"{setup['base']}/tasks/{task['id']}", headers=setup["headers"]).get_json()
    assert [h["to_status"] for h in detail["history"]] == ["pending", "in_progress"]
    listed = client.get(f"{setup['base']}/issues/{setup['issue'].id}/tasks", headers=setup["headers"]).get_json()
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    filtered = client.get(f"{setup['base']}/tasks?status=pending", headers=setup["headers"]).get_json()
    assert filtered["total"] == 0


def test_illegal_transitions_are_409_naming_the_allowed_ones(client, setup):
    task = tasks.create_task(setup["project"].id, {"title": "t"})
    with pytest.raises(tasks.IllegalTransition) as refused:
        tasks.transition(task, "review", actor_type="system")
    assert refused.value.details["allowed"] == ["in_progress", "failed"]


@pytest.mark.parametrize("status", ["pending", "in_progress", "testing", "review"])
def test_a_person_completes_a_task_from_any_open_status_recorded_as_manual(client, setup, status):
    """The spec's "Mark task as completed (manual)": refused for a pending task before."""
    task = tasks.create_task(setup["project"].id, {"title": "t"})
    if status != "pending":
        tasks.assign(task, setup["coder"].id)
        for step in ("in_progress", "testing", "review")[:("in_progress", "testing", "review").index(status) + 1]:
            if task.status != step:
                tasks.transition(task, step, actor_type="system")
    db.session.commit()
    assert task.status == status
    url = f"{setup['base']}/tasks/{task.id}/complete"
    done = client.post(url, json={"reason": "shipped by hand"}, headers=setup["headers"])
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "completed" and done.get_json()["assigned_to"] is None
    detail = client.get(f"{setup['base']}/tasks/{task.id}", headers=setup["headers"]).get_json()
    last = detail["history"][-1]
    me = client.get("/api/v1/auth/me", headers=setup["headers"]).get_json()["username"]
    assert (last["from_status"], last["to_status"], last["actor_type"], last["actor_name"]) == (
        status, "completed", "user", me)
    assert last["reason"] == f"completed manually by {me}: shipped by hand"
    again = client.post(url, json={}, headers=setup["headers"])
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "INVALID_TRANSITION"


def test_state_machine_loops_back_and_fails_after_max_attempts(client, setup):
    task = tasks.create_task(setup["project"].id, {"title": "loop"})
    tasks.assign(task, setup["coder"].id)
    for step in ("in_progress", "testing", "in_progress", "testing", "review", "in_progress", "testing"):
        tasks.transition(task, step, actor_type="system", reason=f"to {step}")
    assert task.attempts == 2 and task.status == "testing"
    tasks.transition(task, "in_progress", actor_type="agent", reason="tests failed again")
    assert task.status == "failed" and task.attempts == 3
    db.session.commit()
    history = [t.to_status for t in db.session.query(TaskTransition).filter_by(task_id=task.id)
               .order_by(TaskTransition.created_at)]
    assert history[-2:] == ["in_progress", "failed"]
    assert db.session.query(Notification).filter_by(kind="task_failed").count() == 1
    with pytest.raises(tasks.IllegalTransition):
        tasks.transition(task, "in_progress", actor_type="system")


def test_assign_checks_project_and_the_agent_task_limit(client, setup):
    other = create_project({"name": "Other", "github_repo": f"octo/o-{uuid.uuid4().hex[:8]}"})
    stranger = agent(other, "Stan", "coder")
    db.session.commit()
    first = client.post(f"{setup['base']}/tasks", json={"title": "one"}, headers=setup["headers"]).get_json()
    second = client.post(f"{setup['base']}/tasks", json={"title": "two"}, headers=setup["headers"]).get_json()
    url = f"{setup['base']}/tasks/{first['id']}/assign"
    assert client.post(url, json={"agent_id": str(stranger.id)}, headers=setup["headers"]).status_code == 404
    assert client.post(url, json={"agent_id": str(setup["coder"].id)},
                       headers=setup["headers"]).status_code == 200
    busy = client.post(f"{setup['base']}/tasks/{second['id']}/assign", json={"agent_id": str(setup["coder"].id)},
                       headers=setup["headers"])
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "AGENT_BUSY"
    assert client.post(f"{setup['base']}/tasks/{second['id']}/assign", json={"agent_id": str(setup["coder2"].id)},
                       headers=setup["headers"]).status_code == 200
    assert client.get(f"{setup['base']}/tasks/{uuid.uuid4()}", headers=setup["headers"]).status_code == 404


def test_issue_start_needs_an_architect_and_happens_once(client, setup):
    url = f"{setup['base']}/issues/{setup['issue'].id}/start"
    missing = client.post(url, headers=setup["headers"])
    assert missing.status_code == 422 and "architect" in missing.get_json()["error"]["message"]
    architect = agent(setup["project"], "Archie", "architect")
    db.session.commit()
    started = client.post(url, headers=setup["headers"])
    assert started.status_code == 202
    conversation = started.get_json()
    assert conversation["type"] == "issue" and conversation["issue_id"] == str(setup["issue"].id)
    assert [a["name"] for a in conversation["agents"]] == ["Archie"]
    turn = db.session.query(Turn).filter_by(conversation_id=uuid.UUID(conversation["id"])).one()
    assert turn.agent_id == architect.id and turn.status == "queued"
    again = client.post(url, headers=setup["headers"])
    assert again.status_code == 409
    assert again.get_json()["error"]["details"]["conversation_id"] == conversation["id"]


def test_planned_tasks_go_to_the_least_loaded_coder(client, setup):
    architect = agent(setup["project"], "Archie", "architect")
    db.session.commit()
    conversation = stages.start_issue(setup["project"].id, setup["issue"].id, None)
    created = stages.create_planned_tasks(conversation, [
        {"title": "a"}, {"title": "b"}, {"title": "c", "assignee_type": "coder"}], architect)
    db.session.commit()
    owners = [t.assigned_agent_id for t in created]
    assert owners.count(setup["coder"].id) in (1, 2) and owners.count(setup["coder2"].id) in (1, 2)
    # One task at a time per coder: two start, the third waits.
    started = [t for t in created if t.status == "in_progress"]
    assert len(started) == 2 and {t.assigned_agent_id for t in started} == {setup["coder"].id, setup["coder2"].id}
    assert all(t.issue_id == setup["issue"].id for t in created)
