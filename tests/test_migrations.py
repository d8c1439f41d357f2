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
