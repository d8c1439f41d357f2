"""Recovery in one place: the reaper loop every worker runs, and the embedded web process too.

Each pass recovers turns whose worker died (``reaper_pass``), then does the process's
periodic duty: a worker keeps the next run of every periodic job scheduled on RQ's scheduler
(``periodic.ensure_scheduled``); the embedded web process, which has no worker, runs the due
ones itself (``periodic.run_due_in_process``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from mcc.events import publish_agent_status
from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.conversation import Conversation
from mcc.models.turn import Turn
from mcc.models.types import utcnow
from mcc.periodic import run_due_in_process
from mcc.redis_store import get_redis
from mcc.runtime import engine, gate
from mcc.runtime.scheduling import kick

log = logging.getLogger(__name__)


def reap_forever(app, interval: float, periodic, stop: threading.Event, guard=contextlib.nullcontext,
                 after=None) -> None:
    """Every ``interval`` seconds until ``stop`` is set: recover abandoned turns, then ``periodic()``.

    ``guard()`` is held for each pass (a worker holds off its forks with it); ``after()`` ends each
    pass inside the app context (a worker disposes its pooled connections there).
    """
    while True:
        with guard(), app.app_context():
            reaper_pass()
            try:
                periodic()
            except Exception:
                log.exception("the periodic jobs failed")
            if after is not None:
                after()
        if stop.wait(interval):
            return


_embedded_reaper = {"started": False, "lock": threading.Lock()}


def start_embedded_reaper(app) -> None:
    """Embedded mode has no worker, so the web process recovers the turns a previous run left
    "running" (it was stopped mid-turn) and any turn whose thread died, as a worker's reaper does,
    and runs the periodic jobs.
    Started by the first request, so `flask` commands never start it."""
    if get_redis() is not None or _embedded_reaper["started"]:
        return
    with _embedded_reaper["lock"]:
        if _embedded_reaper["started"]:
            return
        _embedded_reaper["started"] = True
    threading.Thread(target=reap_forever, args=(app, app.config["MCC_REAPER_SECONDS"], run_due_in_process,
                                                threading.Event()),
                     daemon=True, name="embedded-turn-reaper").start()


# --- turns whose worker died ----------------------------------------------------------------------

def reaper_pass() -> None:
    """One pass of a reaper thread (a worker's, or the embedded web process's), in its app context."""
    try:
        reap_abandoned()
    except Exception:
        log.exception("reaping abandoned turns failed")
    finally:
        db.session.remove()


def reap_abandoned() -> list[uuid.UUID]:
    """Turns whose worker died mid-turn: retried (MCC_TURN_MAX_ATTEMPTS) or failed, on record."""
    grace = utcnow() - timedelta(seconds=current_app.config["MCC_TURN_HEARTBEAT_SECONDS"] * 3)
    running = db.session.scalars(select(Turn).where(Turn.status == "running", Turn.started_at < grace)).all()
    to_kick = []
    for turn in running:
        if gate.is_alive(f"turn:{turn.id}"):
            continue
        retry = turn.attempts < current_app.config["MCC_TURN_MAX_ATTEMPTS"]
        taken = db.session.execute(
            update(Turn).where(Turn.id == turn.id, Turn.status == "running")
            .values(status="queued" if retry else "running").execution_options(synchronize_session=False)).rowcount
        if not taken:
            continue
        if retry:
            log.warning("turn %s was abandoned by its worker; retrying (attempt %s next)", turn.id,
                        turn.attempts + 1)
            db.session.commit()
            to_kick.append(turn.conversation_id)
        else:
            db.session.refresh(turn)
            agent = db.session.get(Agent, turn.agent_id)
            engine.fail_turn(turn, db.session.get(Conversation, turn.conversation_id), agent,
                             f"its worker died {turn.attempts} time(s) while running it")
            publish_agent_status(agent, None)
            to_kick.append(turn.conversation_id)
    for conversation_id in dict.fromkeys(to_kick):
        kick(conversation_id)
    _kick_stranded()
    return to_kick


def _kick_stranded() -> None:
    """Queued turns that nobody drives get a new kick.

    A kick that met the conversation lock of a worker that died (it lives on for ``engine.LOCK_TTL``) found
    the conversation busy and ended; so did a delayed kick when no RQ scheduler runs. Without
    this the turn would wait for the next message.
    """
    quiet = current_app.config["MCC_REAPER_SECONDS"] * 2
    stranded = db.session.scalars(select(Turn.conversation_id).where(
        Turn.status == "queued", Turn.created_at < utcnow() - timedelta(seconds=quiet)).distinct()).all()
    for conversation_id in stranded:
        if gate.is_locked(f"conversation:{conversation_id}"):
            continue  # a pump is on it, or a dead one's lock has yet to expire
        if gate.once_per(f"kick:{conversation_id}", quiet):
            log.info("conversation %s has queued turns and no pump; kicking it", conversation_id)
            kick(conversation_id)
