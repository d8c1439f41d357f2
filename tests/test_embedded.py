"""Embedded mode: SQLite under instance/, no Redis — what a newcomer runs with nothing installed.

Run as a real process (``scripts/start``, the README's first command), so it shares no
in-process state with the PostgreSQL/Redis app of the other tests.
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from contextlib import contextmanager

import requests

from tests.live import ROOT, free_port


@contextmanager
def quickstart(tmp_path, log_name: str = "start.log"):
    """`scripts/start` on a free port with nothing configured; yields (base URL, its output so far)."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MCC_INSTANCE_PATH": str(tmp_path), "MCC_REAPER_SECONDS": "1",
           "MCC_TURN_HEARTBEAT_SECONDS": "1"}
    for name in ("DATABASE_URL", "REDIS_URL", "MCC_SECRET_KEY", "MCC_LLM_API_KEY"):
        env.pop(name, None)
    log = open(tmp_path / log_name, "wb")
    proc = subprocess.Popen([str(ROOT / "scripts" / "start")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        yield base, (tmp_path / log_name).read_text()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        log.close()


def test_quickstart_serves_the_api_with_sqlite_and_no_redis(tmp_path):
    """`scripts/start` migrates SQLite, prints a first admin, and the auth round trip works."""
    with quickstart(tmp_path) as (base, output):
        api = f"{base}/api/v1"
        match = re.search(r"username: (\S+)\s+password: (\S+)", output)
        assert match, output
        assert base in output
        assert (tmp_path / "mcc.db").exists() and (tmp_path / "secret_key").exists()
        assert requests.get(f"{base}/readyz", timeout=5).json()["checks"]["redis"].startswith("not configured")

        credentials = {"username": match[1], "password": match[2]}
        body = requests.post(f"{api}/auth/login", json=credentials, timeout=5).json()
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        me = requests.get(f"{api}/auth/me", headers=headers, timeout=5)
        assert me.json()["role"] == "admin"
        assert me.headers["X-RateLimit-Limit"] == "100"  # counted in memory without Redis

        rotated = requests.post(f"{api}/auth/refresh", json={"refresh_token": body["refresh_token"]}, timeout=5)
        assert rotated.status_code == 200
        # Presented again within MCC_REFRESH_REUSE_GRACE_SECONDS (a reload mid-refresh): a new pair.
        retry = requests.post(f"{api}/auth/refresh", json={"refresh_token": body["refresh_token"]}, timeout=5)
        assert retry.status_code == 200, retry.text
        with sqlite3.connect(tmp_path / "mcc.db") as database:  # past the grace: the rotation is old
            assert database.execute("UPDATE refresh_tokens SET revoked_at = '2000-01-01 00:00:00.000000' "
                                    "WHERE replaced_by IS NOT NULL").rowcount
        replay = requests.post(f"{api}/auth/refresh", json={"refresh_token": body["refresh_token"]}, timeout=5)
        assert replay.status_code == 401
        again = requests.post(f"{api}/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]},
                              timeout=5)
        assert again.status_code == 401  # the family was revoked

        fresh = requests.post(f"{api}/auth/login", json=credentials, timeout=5).json()
        fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert requests.post(f"{api}/auth/logout", json={}, headers=fresh_headers, timeout=5).status_code == 204
        assert requests.get(f"{api}/auth/me", headers=fresh_headers, timeout=5).status_code == 401


def _login(api: str, admin) -> dict:
    token = requests.post(f"{api}/auth/login", json={"username": admin[1], "password": admin[2]},
                          timeout=5).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _wait_for_agent_replies(url: str, headers: dict, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        items = requests.get(url, headers=headers, timeout=5).json()["items"]
        replies = [m for m in items if m["author_type"] == "agent"]
        if len(replies) >= count or time.monotonic() > deadline:
            return replies
        time.sleep(0.3)


def test_a_turn_left_running_by_a_stopped_quickstart_is_retried_after_a_restart(tmp_path):
    """Stopped mid-turn (simulated: the turn is put back to `running` while the server is down),
    the next start recovers it: the embedded web process reaps abandoned turns as a worker does."""
    with quickstart(tmp_path) as (base, output):
        api = f"{base}/api/v1"
        admin = re.search(r"username: (\S+)\s+password: (\S+)", output)
        headers = _login(api, admin)
        project = requests.post(f"{api}/projects", json={"name": "Demo", "github_repo": "octo/demo"},
                                headers=headers, timeout=5).json()["id"]
        agent = requests.post(f"{api}/projects/{project}/agents", headers=headers, timeout=5, json={
            "name": "Archie", "type": "architect",
            "model_config": {"model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}}).json()
        conversation = requests.post(f"{api}/projects/{project}/conversations", headers=headers, timeout=5,
                                     json={"title": "Hi", "agent_ids": [agent["id"]]}).json()["id"]
        path = f"/projects/{project}/conversations/{conversation}/messages"
        assert requests.post(f"{api}{path}", json={"content": "@Archie hello"}, headers=headers, timeout=5).ok
        assert len(_wait_for_agent_replies(f"{api}{path}", headers, 1)) == 1

    with sqlite3.connect(tmp_path / "mcc.db") as database:
        changed = database.execute(
            "UPDATE turns SET status = 'running', attempts = 1, reply_message_id = NULL, finished_at = NULL, "
            "started_at = '2000-01-01 00:00:00.000000'").rowcount
    assert changed == 1

    with quickstart(tmp_path, "restart.log") as (base, _):
        api = f"{base}/api/v1"
        replies = _wait_for_agent_replies(f"{api}{path}", _login(api, admin), 2)
        assert len(replies) == 2, (tmp_path / "restart.log").read_text()[-3000:]
    with sqlite3.connect(tmp_path / "mcc.db") as database:
        assert database.execute("SELECT status, attempts FROM turns").fetchall() == [("succeeded", 2)]


def test_embedded_mode_runs_the_periodic_token_purge_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("MCC_TOKEN_PURGE_INTERVAL", "1")
    with quickstart(tmp_path) as (base, output):
        match = re.search(r"username: (\S+)\s+password: (\S+)", output)
        assert match, output
        requests.post(f"{base}/api/v1/auth/login", json={"username": match[1], "password": match[2]}, timeout=5)
        with sqlite3.connect(tmp_path / "mcc.db") as database:
            assert database.execute("UPDATE refresh_tokens SET expires_at = '2000-01-01 00:00:00.000000'").rowcount
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "mcc.db") as database:
                if database.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0] == 0:
                    return
            time.sleep(0.3)
        raise AssertionError("the expired refresh token was not purged")
