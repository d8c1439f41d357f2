"""The coder's repository tools refuse paths that leave the repository or touch protected files.

In-process: the tools run against the fake GitHub (a real HTTP server on loopback) with the project's
token; what the fake received proves which requests were (not) made.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mcc.extensions import db
from mcc.models.task import Task
from mcc.runtime.tools import run_tool_call
from tests.factories import make_agent, make_conversation, make_project
from tests.github.conftest import github_config, rsa_keys  # noqa: F401  (fixtures)
from tests.pipeline.fake_git import FakeGit

REPO = "acme/app"


@pytest.fixture
def fake_github(rsa_keys):  # noqa: F811  (the Git-speaking fake in place of the plain one)
    fake = FakeGit(public_key=rsa_keys[1])
    fake.add_repo(REPO, files={"README.md": "# App\n", "src/main.py": "print('hi')\n",
                               ".github/workflows/ci.yml": "on: push\n"})
    fake.add_repo("victim/private", files={"secret.env": "TOKEN=hunter2\n"})
    yield fake
    fake.close()


@pytest.fixture
def bench(app, db_session, github_config):  # noqa: F811
    project = make_project(github_repo=REPO)
    coder = make_agent(project, type="coder")
    conversation = make_conversation(project, agents=[coder])
    return SimpleNamespace(project=project, coder=coder, conversation=conversation)


def run(bench, name: str, arguments: dict, task=None) -> dict:
    turn = SimpleNamespace(task_id=task.id if task is not None else None)
    call = {"function": {"name": name, "arguments": json.dumps(arguments)}}
    return run_tool_call(call, turn, bench.coder, bench.conversation, bench.project)


def outside_requests(fake) -> list:
    return [c for c in fake.calls() if not c.path.startswith(f"/repos/{REPO}")]


def test_a_file_of_the_repository_is_read(bench, fake_github):
    assert run(bench, "read_file", {"path": "src/main.py"})["content"] == "print('hi')\n"
    assert [c.path for c in fake_github.calls(path_regex="/contents")] == [f"/repos/{REPO}/contents/src/main.py"]


@pytest.mark.parametrize("path", [
    "../../../victim/private/contents/secret.env",  # the reproduction: another repository, same token
    "../../../../user",  # the token owner's profile
    "src/../../../../victim/private/contents/secret.env",
    "./README.md", "src//main.py", "/etc/passwd", "src\\..\\..\\x",
    "%2e%2e/%2e%2e/%2e%2e/victim/private/contents/secret.env", "%252e%252e/x", "src%2f..%2f..%2fx",
    "src/\x00main.py", "src/\nmain.py",
])
def test_read_file_refuses_a_path_leaving_the_repository_without_any_request(bench, fake_github, path):
    result = run(bench, "read_file", {"path": path})
    assert set(result) == {"error"} and "path" in result["error"], result
    assert fake_github.calls() == []  # refused before any request, not even the default branch
    assert "hunter2" not in json.dumps(result)


@pytest.mark.parametrize("path", ["..", "../victim", "src/./..", "%2E%2E"])
def test_list_files_refuses_a_path_leaving_the_repository(bench, fake_github, path):
    result = run(bench, "list_files", {"path": path})
    assert set(result) == {"error"}, result
    assert fake_github.calls() == []


def test_list_files_at_the_root_still_works(bench, fake_github):
    result = run(bench, "list_files", {"path": ""})
    assert "error" not in result, result
    assert outside_requests(fake_github) == []


def in_progress_task(bench) -> Task:
    task = Task(project_id=bench.project.id, title="Change things", status="in_progress",
                assigned_agent_id=bench.coder.id)
    db.session.add(task)
    db.session.commit()
    return task


@pytest.mark.parametrize("change", [
    {"files": [{"path": ".github/workflows/ci.yml", "content": "on: push\njobs: {steal: {}}\n"}]},
    {"files": [{"path": ".github/workflows/new.yml", "content": "on: push\n"}]},
    {"files": [{"path": ".GitHub/Workflows/new.yml", "content": "on: push\n"}]},
    {"files": [{"path": ".github/actions/setup/action.yml", "content": "runs: {}\n"}]},
    {"files": [{"path": ".github/CODEOWNERS", "content": "* @mallory\n"}]},
    {"delete": [".github/workflows/ci.yml"]},
    {"files": [{"path": "src/ok.py", "content": "x = 1\n"}], "delete": [".github/workflows/ci.yml"]},
    {"files": [{"path": "../../x/y", "content": "x"}]},
])
def test_submit_changes_refuses_protected_and_unsafe_paths_before_writing(bench, fake_github, change):
    task = in_progress_task(bench)
    result = run(bench, "submit_changes", {"title": "Sneaky", **change}, task=task)
    assert set(result) == {"error"}, result
    assert fake_github.calls(method="POST") == [] and fake_github.calls(method="PATCH") == []
    db.session.refresh(task)
    assert task.status == "in_progress" and task.branch is None


def test_submit_changes_of_ordinary_files_still_commits(bench, fake_github):
    task = in_progress_task(bench)
    result = run(bench, "submit_changes", {"title": "Fix", "files": [{"path": "src/main.py", "content": "x\n"}]},
                 task=task)
    assert "error" not in result, result
    assert fake_github.branch_files(REPO, result["branch"])["src/main.py"] == "x\n"


def test_protected_paths_are_configurable(bench, fake_github, app):
    saved = app.config["MCC_PROTECTED_PATHS"]
    app.config["MCC_PROTECTED_PATHS"] = ["deploy/", "Makefile"]
    try:
        task = in_progress_task(bench)
        refused = run(bench, "submit_changes", {"title": "x", "files": [{"path": "Makefile", "content": "x"}]},
                      task=task)
        assert "protected" in refused["error"]
        allowed = run(bench, "submit_changes", {"title": "x", "files": [
            {"path": ".github/workflows/ci.yml", "content": "on: push\n"}]}, task=task)
        assert "error" not in allowed, allowed
    finally:
        app.config["MCC_PROTECTED_PATHS"] = saved


def test_a_rules_file_path_leaving_the_repository_is_not_read(bench, fake_github):
    from mcc.github.contents import read_rules

    assert read_rules(bench.project, "../../../victim/private/contents/secret.env") is None
    assert fake_github.calls() == []
    assert read_rules(bench.project, "README.md") == "# App\n"
