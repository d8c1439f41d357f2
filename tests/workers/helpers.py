"""Shared by the worker tests: a runtime with its own settings, socket listeners, DB look-ups."""
from __future__ import annotations

import os
import queue
import subprocess
import time

import pytest
import socketio

from tests.factories import make_user
from tests.live import ROOT, VENV_BIN
from tests.workers.conftest import Runtime

SONNET = "anthropic/claude-3.5-sonnet"


@pytest.fixture
def start_runtime(runtime_env, committed_db, app, tmp_path):
    """Start a web process and workers with extra settings: ``start_runtime(workers=2, MCC_MAX_CHAIN="3")``."""
    started: list[Runtime] = []
    with app.app_context():
        make_user("operator", username="operator")
        make_user("admin", username="admin")

    def start(workers: int = 1, **overrides) -> Runtime:
        # Tests poll the API for minutes: lift the per-IP rate limit (100 per minute by default).
        env = {**runtime_env, "MCC_RATE_LIMIT": "100000 per minute", **overrides}
        runtime = Runtime(env, tmp_path, workers=workers)
        started.append(runtime)
        wait_until_listening(runtime, runtime.workers)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


@pytest.fixture
def runtime(start_runtime):
    """Shadows the conftest's ``runtime`` where imported: same processes, rate limit lifted, workers ready."""
    return start_runtime()


def wait_until_listening(runtime: Runtime, workers, timeout: float = 90) -> None:
    """Workers take seconds to import the app (more on a loaded machine): wait until RQ listens."""
    deadline = time.monotonic() + timeout
    while not all("*** Listening on" in worker.output() for worker in workers):
        if time.monotonic() > deadline or any(worker.proc.poll() is not None for worker in workers):
            raise AssertionError(f"workers not listening after {timeout} s:\n{runtime.logs(tail=4000)}")
        time.sleep(0.1)


class Listener:
    """A Socket.IO client that records every event the server sends it, by name."""

    def __init__(self, base: str, token: str, **client_options):
        self.client = socketio.Client(reconnection=False, **client_options)
        self.events: dict[str, queue.Queue] = {}
        self.client.on("*", self._record)
        self.client.connect(base, transports=["websocket"], auth={"token": token}, wait_timeout=10)

    def _record(self, event, data=None):
        self.events.setdefault(event, queue.Queue()).put(data)

    def join(self, conversation_id: str) -> None:
        ack = self.client.call("join_conversation", {"conversation_id": conversation_id}, timeout=10)
        assert ack["ok"], ack

    def next(self, event: str, timeout: float = 15, where=None):
        """The next ``event`` (matching ``where(data)`` when given), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        pending = self.events.setdefault(event, queue.Queue())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} event within {timeout} s")
            try:
                data = pending.get(timeout=left)
            except queue.Empty:
                continue
            if where is None or where(data):
                return data

    def close(self):
        self.client.disconnect()


def agent_replies(runtime: Runtime, team: dict) -> list[dict]:
    return [m for m in runtime.messages(team["project"], team["conversation"]) if m["author_type"] == "agent"]


def system_notes(runtime: Runtime, team: dict) -> list[dict]:
    return [m for m in runtime.messages(team["project"], team["conversation"]) if m["author_type"] == "system"]


def db_rows(app, model, **filters) -> list:
    """Committed rows of ``model`` (read in a fresh session), filtered by equality."""
    from sqlalchemy import select

    from mcc.extensions import db

    with app.app_context():
        query = select(model)
        for name, value in filters.items():
            query = query.where(getattr(model, name) == value)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        db.session.remove()
        return rows


def flask_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``flask --app wsgi ...`` run as an operator would, with the test environment."""
    full_env = {**os.environ, **env, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["flask", "--app", "wsgi", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def who_is_asked(body: dict) -> str:
    """The agent a stub request is for: the name in its system prompt ("You are <name>, the ...")."""
    system = body["messages"][0]["content"]
    return system[len("You are "):system.index(",")]
