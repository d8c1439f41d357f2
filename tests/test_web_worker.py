"""The Procfile's web line: gevent, psycopg2 cooperative, and no async mode it cannot serve."""
from __future__ import annotations

import threading
import time

import psycopg2
import pytest
import requests

from tests.factories import PASSWORD, make_user
from tests.live import start_web

pytestmark = pytest.mark.live


def test_a_query_waiting_on_postgresql_does_not_freeze_the_web_process(test_env, app, committed_db, tmp_path):
    """Under gevent an unpatched psycopg2 would block every greenlet while one query waits."""
    with app.app_context():
        username = make_user("operator").username
    web, base = start_web(test_env, tmp_path / "web.log")
    locker = psycopg2.connect(test_env["DATABASE_URL"])
    try:
        assert "Socket.IO async mode gevent, psycopg2 cooperative" in web.output()
        token = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD},
                              timeout=5).json()["access_token"]
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        stuck = {}
        waiting = threading.Thread(target=lambda: stuck.update(response=requests.get(
            f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)))
        waiting.start()
        time.sleep(1)  # the request now waits on the lock inside psycopg2
        assert waiting.is_alive()
        started = time.monotonic()
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 3  # frozen, it would not answer before the lock goes (5 s timeout)
        locker.rollback()
        waiting.join(10)
        assert stuck["response"].status_code == 200
    finally:
        locker.close()
        web.stop()


@pytest.mark.parametrize("value, says", [
    ("eventlet", "MCC_SOCKETIO_ASYNC_MODE='eventlet' is not supported"),
    ("threading", "MCC_SOCKETIO_ASYNC_MODE=threading needs gunicorn --worker-class gthread"),
])
def test_an_async_mode_the_process_cannot_serve_refuses_to_start(test_env, tmp_path, value, says):
    with pytest.raises(RuntimeError) as failed:
        start_web(test_env, tmp_path / "web.log", {"MCC_SOCKETIO_ASYNC_MODE": value})
    assert says in str(failed.value)
