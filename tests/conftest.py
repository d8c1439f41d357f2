"""Fixtures: a fresh PostgreSQL database and a private Redis database per test run.

Unit and API tests run inside an outer transaction that is rolled back after each test
(SQLAlchemy's "joining a Session into an external transaction" recipe). Tests that start real
processes (web servers, workers) use ``committed_db``, which truncates every table afterwards,
since another process cannot see a transaction that is never committed.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from flask_sqlalchemy.session import _app_ctx_id
from sqlalchemy.engine import make_url
from sqlalchemy.orm import scoped_session, sessionmaker

from tests.live import free_port  # noqa: F401  (re-exported for tests)

ADMIN_DB_URL = os.environ.get("MCC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("MCC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ROOT = Path(__file__).resolve().parent.parent


def _admin_connection():
    url = make_url(ADMIN_DB_URL.replace("postgres://", "postgresql://", 1))
    conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                            password=url.password, dbname=url.database or "postgres")
    conn.autocommit = True
    return conn


def _claim_redis_db() -> tuple[int, redis_lib.Redis]:
    """Take a Redis database no other test run on this machine is using (runs may overlap)."""
    run = uuid.uuid4().hex
    for index in range(1, 16):
        client = redis_lib.Redis.from_url(f"{REDIS_BASE_URL}/{index}")
        if client.set("mcc-test-run-lock", run, nx=True, ex=3 * 3600):
            return index, client
    raise RuntimeError("no free Redis database (1-15) for this test run")


@pytest.fixture(scope="session")
def test_env(tmp_path_factory):
    """Environment of this run: what the app and every process it starts is configured with."""
    name = f"mcc_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    index, lock_client = _claim_redis_db()
    lock_client.flushdb()
    lock_client.set("mcc-test-run-lock", "held", ex=3 * 3600)
    base = make_url(ADMIN_DB_URL.replace("postgres://", "postgresql://", 1))
    env = {
        "DATABASE_URL": base.set(database=name).render_as_string(hide_password=False),
        "REDIS_URL": f"{REDIS_BASE_URL}/{index}",
        "MCC_SECRET_KEY": "test-" + uuid.uuid4().hex * 2,
        "MCC_INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        "MCC_ENV": "development",
        "MCC_LOG_LEVEL": "INFO",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    lock_client.flushdb()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def app(test_env):
    from flask_migrate import upgrade

    from mcc import create_app

    app = create_app({"TESTING": True}, env=test_env)
    with app.app_context():
        upgrade()
    return app


@pytest.fixture
def redis_client(app):
    from mcc.redis_store import get_redis

    with app.app_context():
        client = get_redis()
    return client


@pytest.fixture(autouse=True)
def _clean_redis(request, test_env):
    """Every test starts with an empty Redis database (keeping the run's lock)."""
    client = redis_lib.Redis.from_url(test_env["REDIS_URL"])
    client.flushdb()
    client.set("mcc-test-run-lock", "held", ex=3 * 3600)
    yield


@pytest.fixture
def db_session(app):
    """The app's session, bound to a connection whose outer transaction is rolled back."""
    from mcc.extensions import db

    with app.app_context():
        connection = db.engine.connect()
        transaction = connection.begin()
        original = db.session
        # A plain SQLAlchemy session: Flask-SQLAlchemy's own would route to its engine and
        # ignore this connection.
        db.session = scoped_session(
            sessionmaker(bind=connection, join_transaction_mode="create_savepoint"),
            scopefunc=_app_ctx_id)
        try:
            yield db.session
        finally:
            db.session.remove()
            db.session = original
            transaction.rollback()
            connection.close()


@pytest.fixture
def client(app, db_session):
    return app.test_client()


@pytest.fixture
def committed_db(app):
    """For tests whose data other processes must see: commit for real, truncate afterwards."""
    from mcc.extensions import db

    yield db
    with app.app_context():
        db.session.remove()
        tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
