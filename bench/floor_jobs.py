"""The floor's RQ job: insert a row, commit, emit it to a Socket.IO room. No product logic.

Used by ``bench/turn_overhead.py`` through ``bench/floor_server.py`` (``POST /turn``) and
``bench/floor_worker.py``. No product code runs: MCC is imported
only for the database URL's driver.
"""
from __future__ import annotations

import os
import uuid

from flask_socketio import SocketIO
from sqlalchemy import create_engine, text

from mcc.config import normalise_database_url  # the driver MCC uses (psycopg2), not the dialect default

CHANNEL = "mcc-bench-floor"
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS bench_floor_messages (id uuid PRIMARY KEY, room text NOT NULL, "
             "author text NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
INSERT = text("INSERT INTO bench_floor_messages (id, room, author, content) VALUES (:id, :room, :author, :content)")


def database_url(url: str | None = None) -> str:
    return normalise_database_url(url or os.environ["DATABASE_URL"])


# Made when the module is imported (preloaded by the worker): a forked horse inherits both with no
# connection open yet (the parent never runs a job), and opens its own on first use; the greenlet
# pool keeps its connections across jobs.
ENGINE = create_engine(database_url(), pool_size=10) if "DATABASE_URL" in os.environ else None
EMITTER = SocketIO(message_queue=os.environ["REDIS_URL"], channel=CHANNEL) if "REDIS_URL" in os.environ else None


def insert(room: str, author: str, content: str) -> dict:
    row = {"id": str(uuid.uuid4()), "room": room, "author": author, "content": content}
    with ENGINE.begin() as connection:
        connection.execute(INSERT, row)
    return row


def reply(room: str, content: str) -> str:
    """The job: store the answer, then emit it to the room."""
    row = insert(room, "agent", content)
    EMITTER.emit("message", row, to=room)
    return row["id"]
