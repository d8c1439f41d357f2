"""The task pipeline end to end: real web and worker processes, the LLM stub scripted to call the
pipeline's tools, and a fake GitHub that also speaks the Git Data API (tests/pipeline/fake_git.py)."""
from __future__ import annotations

import json
import queue
import uuid

import pytest
import socketio

from tests.factories import make_user
from tests.pipeline.fake_git import FakeGit
from tests.stubs.llm import Step
from tests.workers.conftest import Runtime, llm, runtime_env  # noqa: F401  (fixtures)

SECRET = "pipeline-webhook-secret"
REPO = "Codertocat/Hello-World"  # the repository of the shared webhook payloads


@pytest.fixture
def fake_git():
    fake = FakeGit()
    yield fake
    fake.close()


@pytest.fixture
def repo(fake_git):
    """The repository on the fake: master with a README, and open issue #1 (the shared payload's)."""
    fake = fake_git.add_repo(REPO, default_branch="master", files={"README.md": "# Hello World\nSpeling.\n"})
    fake.add_issue(title="Spelling error in the README file", body="It is spelled wrong.")
    return fake


@pytest.fixture
def pipeline_env(runtime_env, fake_git):  # noqa: F811
    return {**runtime_env, "MCC_GITHUB_API_URL": fake_git.base_url, "MCC_GITHUB_TOKEN": fake_git.token,
            "MCC_GITHUB_WEBHOOK_SECRET": SECRET, "MCC_GITHUB_BACKOFF_BASE": "0.01", "MCC_GITHUB_MAX_RETRIES": "1",
            "MCC_GITHUB_RATE_LIMIT_WAIT": "3", "MCC_GITHUB_TIMEOUT": "5", "MCC_GITHUB_SYNC_INTERVAL": "0",
            "MCC_RATE_LIMIT": "100000 per minute"}  # the tests poll


@pytest.fixture
def prt(pipeline_env, committed_db, app, tmp_path, repo):
    """Runtime (web + 2 workers) configured for the fake GitHub."""
    with app.app_context():
        make_user("operator", username="operator")
        make_user("admin", username="admin")
    rt = Runtime(pipeline_env, tmp_path, workers=2)
    yield rt
    rt.stop()


@pytest.fixture
def team(app, prt):
    return make_pipeline_team(app)


def make_pipeline_team(app) -> dict:
    """A project bound to REPO with an architect, a coder, a tester and a reviewer."""
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.projects import create_project

    with app.app_context():
        project = create_project({"name": "Pipeline", "github_repo": REPO})
        agents = {name: create_agent(project.id, {"name": name, "type": type_, "model_config": {
            "model": "openai/gpt-4o-mini", "temperature": 0.0, "max_tokens": 500}})
            for name, type_ in (("Archie", "architect"), ("Cody", "coder"), ("Tess", "tester"),
                                ("Rev", "reviewer"))}
        db.session.commit()
        return {"project": str(project.id), "agents": {n: str(a.id) for n, a in agents.items()}}


class ProgressListener:
    """A Socket.IO client collecting task_progress events."""

    def __init__(self, base: str, token: str):
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("task_progress", self.events.put)
        self.client.connect(base, transports=["websocket"], wait_timeout=10, auth={"token": token})

    def drain(self) -> list[dict]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def close(self):
        self.client.disconnect()


@pytest.fixture
def progress(prt):
    listener = ProgressListener(prt.base, prt.token)
    yield listener
    listener.close()


# --- scripting the stub ---------------------------------------------------------------------------

def call(name: str, arguments: dict | None = None) -> Step:
    return Step(content=None, tool_calls=[{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                                           "function": {"name": name, "arguments": json.dumps(arguments or {})}}])


def tool_names(body: dict) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or []}


def role_of(body: dict) -> str:
    names = tool_names(body)
    for tool, role in (("create_tasks", "architect"), ("submit_changes", "coder"),
                       ("report_test_result", "tester"), ("submit_review", "reviewer")):
        if tool in names:
            return role
    return "unknown"


def last_tool_call(body: dict) -> str | None:
    """The tool this turn called last, when the request answers its result (else None: a fresh turn)."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "tool":
        return None
    for message in reversed(messages):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            return message["tool_calls"][-1]["function"]["name"]
    return None


def text_of(body: dict) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        parts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(parts)
