"""Through real processes: the Procfile's web and worker lines, the fake GitHub, committed data.
A project created over HTTP is imported by the worker; a signed webhook posted to the web process
is stored, answered 202 and applied by the worker; POST /sync brings in what changed."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from mcc.github.webhooks import sign
from tests.factories import PASSWORD, make_user
from tests.github.conftest import SECRET, load_payload
from tests.live import Process, procfile, start_web

pytestmark = pytest.mark.live


@pytest.fixture
def processes(test_env, github_env, committed_db, app, tmp_path):
    with app.app_context():
        make_user("operator", username="gh-operator")
    env = {**test_env, **github_env, "MCC_RATE_LIMIT": "100000 per minute"}
    web, base = start_web(env, tmp_path / "web.log")
    worker = Process(procfile()["worker"], env, tmp_path / "worker.log")
    yield base, worker
    worker.stop()
    web.stop()


def wait_for(predicate, worker, timeout: float = 45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out; worker log:\n{worker.output()[-4000:]}")


def test_worker_imports_new_projects_applies_webhooks_and_syncs(processes, fake_github):
    base, worker = processes
    repo = fake_github.add_repo("octo-org/live-repo")
    for n in range(3):
        repo.add_issue(title=f"Live issue {n}")
    repo.add_pull(title="Live pull request")
    token = requests.post(f"{base}/api/v1/auth/login", json={"username": "gh-operator", "password": PASSWORD},
                          timeout=10).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    created = session.post(f"{base}/api/v1/projects", json={"name": "Live", "github_repo": "octo-org/live-repo"},
                           timeout=10)
    assert created.status_code == 201, created.text
    project = created.json()["id"]

    def listed(what: str) -> list[dict]:
        return session.get(f"{base}/api/v1/projects/{project}/{what}?state=all", timeout=10).json()["items"]

    def sync_status() -> str | None:
        sync = session.get(f"{base}/api/v1/projects/{project}/github", timeout=10).json()["sync"]
        return sync and sync["last_status"]

    # Issues are committed before pull requests; a user (and this test) waits for the sync to finish.
    wait_for(lambda: sync_status() == "ok", worker)
    assert sorted(i["title"] for i in listed("issues")) == [f"Live issue {n}" for n in range(3)]
    assert [p["title"] for p in listed("pull-requests")] == ["Live pull request"]

    payload = load_payload("pull_request/opened.payload.json")
    payload["repository"]["full_name"] = "octo-org/live-repo"
    payload["pull_request"].update(number=77, title="Opened on GitHub just now")
    raw = json.dumps(payload).encode()
    response = requests.post(f"{base}/api/v1/webhooks/github", data=raw, timeout=10, headers={
        "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, raw), "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    wait_for(lambda: any(p["number"] == 77 for p in listed("pull-requests")), worker)

    repo.add_issue(title="Filed after the first sync")
    assert session.post(f"{base}/api/v1/projects/{project}/sync", timeout=10).status_code == 202
    wait_for(lambda: any(i["title"] == "Filed after the first sync" for i in listed("issues")), worker)
    assert "Traceback" not in worker.output()
