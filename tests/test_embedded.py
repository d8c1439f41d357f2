"""Embedded mode: SQLite under instance/, no Redis — what a newcomer runs with nothing installed."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import requests

from tests.live import ROOT, free_port


@pytest.fixture
def embedded_app(tmp_path):
    from flask_migrate import upgrade

    from mcc import create_app

    app = create_app({"TESTING": True}, env={"MCC_INSTANCE_PATH": str(tmp_path)})
    with app.app_context():
        upgrade()
    return app


def test_embedded_auth_round_trip(embedded_app):
    """Login, refresh rotation, logout and revocation work with SQLite and no Redis."""
    from mcc.redis_store import get_redis
    from mcc.services.users import create_user
    from mcc.extensions import db

    with embedded_app.app_context():
        assert get_redis() is None
        create_user("solo", "solo password!", "admin")
        db.session.commit()
    client = embedded_app.test_client()
    tokens = client.post("/api/v1/auth/login", json={"username": "solo", "password": "solo password!"})
    assert tokens.status_code == 200
    body = tokens.get_json()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    me = client.get("/api/v1/auth/me", headers=headers)
    assert me.get_json()["username"] == "solo"
    assert me.headers["X-RateLimit-Limit"] == "100"  # counted in memory without Redis
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}).get_json()
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    fresh = client.post("/api/v1/auth/login", json={"username": "solo", "password": "solo password!"}).get_json()
    fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert client.post("/api/v1/auth/logout", json={}, headers=fresh_headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=fresh_headers).status_code == 401
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["redis"].startswith("not configured")


def test_quickstart_command_starts_the_service(tmp_path):
    """`scripts/start` migrates SQLite, prints a first admin's password, and serves the API."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MCC_INSTANCE_PATH": str(tmp_path)}
    for name in ("DATABASE_URL", "REDIS_URL", "MCC_SECRET_KEY"):
        env.pop(name, None)
    log = open(tmp_path / "start.log", "wb")
    proc = subprocess.Popen([str(ROOT / "scripts" / "start")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        output = (tmp_path / "start.log").read_text()
        match = re.search(r"username: (\S+)\s+password: (\S+)", output)
        assert match, output
        assert f"http://127.0.0.1:{port}" in output
        login = requests.post(f"{base}/api/v1/auth/login",
                              json={"username": match[1], "password": match[2]}, timeout=5)
        assert login.status_code == 200, login.text
        assert (tmp_path / "mcc.db").exists()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        log.close()
