"""Migrations build the schema from empty on PostgreSQL and SQLite, and match the models."""
from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mcc.extensions import db
from tests.live import ROOT

DRIFT_CHECK = """
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mcc.extensions import db
from wsgi import app
with app.app_context(), db.engine.connect() as conn:
    diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)
print("DRIFT", diff)
"""


def test_models_and_migrations_agree(app):
    """Autogenerate against the migrated database finds nothing to add: no drift."""
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == [], f"models and migrations differ; run `flask db migrate -m ...`: {diff}"


def test_upgrade_and_downgrade_from_empty_on_sqlite(tmp_path):
    """The operator commands, run as processes against an embedded SQLite database."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["MCC_INSTANCE_PATH"] = str(tmp_path)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi", "db"]

    def run(args):
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run(flask + ["upgrade"])
    assert "DRIFT []" in run([sys.executable, "-c", DRIFT_CHECK])
    run(flask + ["downgrade", "base"])
    import sqlite3

    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables <= {"alembic_version"}


def _sqlite_flask_db(tmp_path):
    """``flask db ARGS`` as a process, on an embedded SQLite database in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["MCC_INSTANCE_PATH"] = str(tmp_path)

    def flask_db(*args):
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    return flask_db


def test_sqlite_migrations_keep_the_rows_of_the_tables_they_rebuild_and_of_those_referring_to_them(tmp_path):
    """Batch mode rebuilds `users` (ecb6321c5a16) and `cost_daily` (741588b2af7f) on SQLite: the rows
    of those tables and of every table pointing at them (refresh tokens, messages' authors) stay."""
    import sqlite3
    import uuid

    flask_db = _sqlite_flask_db(tmp_path)

    flask_db("upgrade", "89aaed4c0ffb")  # before the two rebuilding migrations
    user, project, conversation = (uuid.uuid4().hex for _ in range(3))
    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        conn.execute("INSERT INTO users (id, username, password_hash, role, is_active, token_generation, created_at) "
                     "VALUES (?, 'ada', 'x', 'admin', 1, 0, '2026-11-01 00:00:00')", (user,))
        conn.execute("INSERT INTO refresh_tokens (jti, user_id, family_id, expires_at, issued_at) "
                     "VALUES ('jti-1', ?, ?, '2030-01-01 00:00:00', '2026-11-01 00:00:00')", (user, uuid.uuid4().hex))
        conn.execute("INSERT INTO projects (id, name, github_repo, is_active, created_at, updated_at) "
                     "VALUES (?, 'P', 'o/p', 1, '2026-11-01 00:00:00', '2026-11-01 00:00:00')", (project,))
        conn.execute("INSERT INTO conversations (id, project_id, title, type, status, created_by_id, created_at, "
                     "updated_at) VALUES (?, ?, 'C', 'general', 'active', ?, '2026-11-01 00:00:00', "
                     "'2026-11-01 00:00:00')", (conversation, project, user))
        conn.execute("INSERT INTO cost_daily (day, project_id, cost_usd, tokens_in, tokens_out, calls, messages) "
                     "VALUES ('2026-11-01', ?, 1.5, 0, 0, 1, 0)", (project,))
    flask_db("upgrade")
    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        assert conn.execute("SELECT count(*) FROM refresh_tokens").fetchone() == (1,)
        assert conn.execute("SELECT created_by_id FROM conversations").fetchone() == (user,)
        assert conn.execute("SELECT project_id, cost_usd FROM cost_daily").fetchone() == (project, 1.5)
        assert conn.execute("SELECT username FROM users").fetchall() == [("ada",)]


def test_project_webhook_secrets_are_sealed_by_the_upgrade_and_unsealed_by_the_downgrade(tmp_path):
    """3c1d2e9f7a10: secrets stored in plain text by earlier versions are sealed in place."""
    import sqlite3
    import uuid

    flask_db = _sqlite_flask_db(tmp_path)

    flask_db("upgrade", "15440a5d70f4")
    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        conn.execute("INSERT INTO projects (id, name, github_repo, is_active, created_at, updated_at, "
                     "github_webhook_secret) VALUES (?, 'P', 'o/p', 1, '2026-11-01 00:00:00', "
                     "'2026-11-01 00:00:00', 'plain-old-project-secret')", (uuid.uuid4().hex,))
    flask_db("upgrade", "3c1d2e9f7a10")
    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        [(stored,)] = conn.execute("SELECT github_webhook_secret FROM projects").fetchall()
    assert stored.startswith("v1:") and "plain-old-project-secret" not in stored
    flask_db("downgrade", "15440a5d70f4")
    with sqlite3.connect(tmp_path / "mcc.db") as conn:
        assert conn.execute("SELECT github_webhook_secret FROM projects").fetchall() == [("plain-old-project-secret",)]
