"""Real web and RQ worker processes, an LLM stub on loopback, and committed data to work on."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.factories import PASSWORD, make_user
from tests.live import Process, procfile, start_web
from tests.stubs.llm import LLMStub


@pytest.fixture
def llm():
    stub = LLMStub()
    yield stub
    stub.close()


@pytest.fixture
def runtime_env(test_env, llm):
    return {**test_env, "MCC_LLM_BASE_URL": llm.base_url, "MCC_LLM_API_KEY": "test-key",
            "MCC_LLM_BACKOFF_BASE": "0.01", "MCC_LLM_BACKOFF_MAX": "0.05", "MCC_TURN_HEARTBEAT_SECONDS": "1",
            "MCC_REAPER_SECONDS": "1", "MCC_AGENT_BUSY_RETRY_SECONDS": "0.5"}


class Runtime:
    """A web process, worker processes, and an operator logged in over HTTP."""

    def __init__(self, env: dict, tmp_path, workers: int = 1):
        self.env, self.tmp_path = env, tmp_path
        self.web, self.base = start_web(env, tmp_path / "web.log")
        self.workers = [self.start_worker() for _ in range(workers)]
        self.token = self.login("operator")

    def start_worker(self, **extra) -> Process:
        return Process(procfile()["worker"], {**self.env, **extra},
                       self.tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log")

    def login(self, username: str) -> str:
        response = requests.post(f"{self.base}/api/v1/auth/login",
                                 json={"username": username, "password": PASSWORD}, timeout=10)
        return response.json()["access_token"]

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return requests.request(method, f"{self.base}/api/v1{path}", headers=headers, timeout=15, **kwargs)

    def post(self, project, conversation, content: str, **extra) -> dict:
        response = self.api("POST", f"/projects/{project}/conversations/{conversation}/messages",
                            json={"content": content, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def messages(self, project, conversation) -> list[dict]:
        page = self.api("GET", f"/projects/{project}/conversations/{conversation}/messages?limit=100").json()
        return list(reversed(page["items"]))  # oldest first

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out; worker logs:\n{self.logs(tail=4000)}")

    def logs(self, tail: int | None = None) -> str:
        """Each worker's whole log, or its last ``tail`` characters (for failure messages: a pool
        worker logs a line per loop, so a search in a tail can miss what it looks for)."""
        return "\n".join(w.output()[-tail if tail else 0:] for w in self.workers)

    def stop(self):
        for worker in self.workers:
            worker.stop()
        self.web.stop()


@pytest.fixture
def runtime(runtime_env, committed_db, app, tmp_path):
    with app.app_context():
        make_user("operator", username="operator")
        make_user("admin", username="admin")
    rt = Runtime(runtime_env, tmp_path)
    yield rt
    rt.stop()


def make_team(app, *agents: tuple[str, str, str], title: str = "Team chat") -> dict:
    """A committed project with agents (name, type, model) all in one conversation."""
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project

    with app.app_context():
        project = create_project({"name": "Runtime", "github_repo": f"octo/rt-{uuid.uuid4().hex[:8]}"})
        created = [create_agent(project.id, {"name": name, "type": type_, "model_config": {
            "model": model, "temperature": 0.2, "max_tokens": 1000}}) for name, type_, model in agents]
        conversation = create_conversation(project.id, None, {"title": title, "agent_ids": [a.id for a in created]})
        db.session.commit()
        return {"project": str(project.id), "conversation": str(conversation.id),
                "agents": {a.name: str(a.id) for a in created}}
