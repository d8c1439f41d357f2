"""The Procfile's processes, started exactly as written, and behaviour that needs several of them."""
from __future__ import annotations

import time
import uuid

import psycopg2
import pytest
import requests
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy.engine import make_url

from tests.factories import PASSWORD, make_user
from tests.live import Process, free_port, procfile, start_web

pytestmark = pytest.mark.live


@pytest.fixture
def fresh_database(test_env):
    """An empty database, for the release step to build from nothing."""
    url = make_url(test_env["DATABASE_URL"])
    name = f"mcc_release_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                             dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False).replace("+psycopg2", "")
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_procfile_release_web_and_worker_start(test_env, fresh_database, tmp_path):
    """release migrates an empty database, web serves the API, worker runs jobs from Redis."""
    env = {**test_env, "DATABASE_URL": fresh_database}
    lines = procfile()
    assert set(lines) >= {"release", "web", "worker"}

    release = Process(lines["release"], env, tmp_path / "release.log")
    assert release.proc.wait(60) == 0, release.output()
    release.stop()

    create = Process("flask --app wsgi users create ops --role operator --password 'ops password 1'",
                     env, tmp_path / "create.log")
    assert create.proc.wait(60) == 0, create.output()
    create.stop()

    web, base = start_web(env, tmp_path / "web.log")
    worker = Process(lines["worker"], env, tmp_path / "worker.log")
    try:
        assert requests.get(f"{base}/readyz", timeout=5).json()["checks"] == {"database": "ok", "redis": "ok"}
        login = requests.post(f"{base}/api/v1/auth/login",
                              json={"username": "ops", "password": "ops password 1"}, timeout=5)
        assert login.status_code == 200
        token = login.json()["access_token"]
        me = requests.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.json()["role"] == "operator"

        import redis

        queue = Queue("default", connection=redis.Redis.from_url(env["REDIS_URL"]), serializer=JSONSerializer)
        job = queue.enqueue("workers.maintenance.purge_expired_tokens")
        deadline = time.monotonic() + 30
        while job.get_status(refresh=True) not in ("finished", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.get_status() == "finished", worker.output()
        assert job.return_value() == {"revoked_tokens": 0, "refresh_tokens": 0}
    finally:
        worker.stop()
        web.stop()


def test_rate_limit_is_shared_by_two_web_processes(test_env, committed_db, app, tmp_path):
    """Both processes count into one Redis bucket per client IP; the 11th request is 429."""
    limited = {"MCC_RATE_LIMIT": "10 per minute"}
    first, base_a = start_web(test_env, tmp_path / "a.log", limited)
    second, base_b = start_web(test_env, tmp_path / "b.log", limited)
    try:
        remaining = []
        for i in range(10):
            base = base_a if i % 2 == 0 else base_b
            response = requests.get(f"{base}/api/v1/auth/me", timeout=5)
            assert response.status_code == 401
            assert "Retry-After" not in response.headers  # only a 429 (or a 503) says when to retry
            assert response.headers["X-RateLimit-Limit"] == "10"
            assert int(response.headers["X-RateLimit-Reset"]) > time.time()
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == list(range(9, -1, -1))
        for base in (base_a, base_b):
            response = requests.get(f"{base}/api/v1/auth/me", timeout=5)
            assert response.status_code == 429
            assert 0 < int(response.headers["Retry-After"]) <= 60
            error = response.json()["error"]
            assert error["code"] == "RATE_LIMITED"
            assert error["request_id"] == response.headers["X-Request-ID"]
        # Probes stay outside the API limit.
        assert requests.get(f"{base_a}/healthz", timeout=5).status_code == 200
    finally:
        first.stop()
        second.stop()


def test_request_id_appears_in_the_log_lines_of_its_request(test_env, committed_db, app, tmp_path):
    with app.app_context():
        make_user("viewer", username="logreader")
    web, base = start_web(test_env, tmp_path / "web.log", {"MCC_ENV": "production"})
    try:
        request_id = f"trace-{uuid.uuid4().hex}"
        bad = requests.post(f"{base}/api/v1/auth/login", json={"username": "logreader", "password": "wrong"},
                            headers={"X-Request-ID": request_id}, timeout=5)
        assert bad.status_code == 401
        assert bad.headers["X-Request-ID"] == request_id
        ok = requests.post(f"{base}/api/v1/auth/login", json={"username": "logreader", "password": PASSWORD},
                           timeout=5)
        assert ok.status_code == 200
        time.sleep(0.5)
        lines = [line for line in web.output().splitlines() if request_id in line]
        # The access line and the failed-login line, both as JSON in production.
        assert len(lines) >= 2, web.output()
        assert all(line.startswith("{") for line in lines)
    finally:
        web.stop()


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp, state 0A = LISTEN)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_rq_dashboard_listens_on_loopback_unless_told_otherwise(test_env, tmp_path):
    port = free_port()
    env = {**test_env, "RQ_DASHBOARD_USERNAME": "ops", "RQ_DASHBOARD_PASSWORD": "dashboard secret",
           "RQ_DASHBOARD_PORT": str(port)}
    dashboard = Process(procfile()["rqdashboard"], env, tmp_path / "rqdashboard.log")
    try:
        deadline = time.monotonic() + 30
        while not _listening_addresses(port) and time.monotonic() < deadline:
            assert dashboard.proc.poll() is None, dashboard.output()
            time.sleep(0.2)
        assert _listening_addresses(port) == {"127.0.0.1"}, dashboard.output()
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401  # basic auth
    finally:
        dashboard.stop()
