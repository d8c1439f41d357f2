"""Embedded mode: SQLite under instance/, no Redis — what a newcomer runs with nothing installed.

Run as a real process (``scripts/start``, the README's first command), so it shares no
in-process state with the PostgreSQL/Redis app of the other tests.
"""
from __future__ import annotations

import os
import re
import subprocess
import time

import requests

from tests.live import ROOT, free_port


def test_quickstart_serves_the_api_with_sqlite_and_no_redis(tmp_path):
    """`scripts/start` migrates SQLite, prints a first admin, and the auth round trip works."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MCC_INSTANCE_PATH": str(tmp_path)}
    for name in ("DATABASE_URL", "REDIS_URL", "MCC_SECRET_KEY"):
        env.pop(name, None)
    log = open(tmp_path / "start.log", "wb")
    proc = subprocess.Popen([str(ROOT / "scripts" / "start")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/v1"
    try:
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
        replay = requests.post(f"{api}/auth/refresh", json={"refresh_token": body["refresh_token"]}, timeout=5)
        assert replay.status_code == 401
        again = requests.post(f"{api}/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]},
                              timeout=5)
        assert again.status_code == 401  # the family was revoked

        fresh = requests.post(f"{api}/auth/login", json=credentials, timeout=5).json()
        fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        assert requests.post(f"{api}/auth/logout", json={}, headers=fresh_headers, timeout=5).status_code == 204
        assert requests.get(f"{api}/auth/me", headers=fresh_headers, timeout=5).status_code == 401
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        log.close()
