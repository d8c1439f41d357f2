"""Stopping work already under way: an LLM call at the gateway is closed within a poll.

Whoever wants a running turn stopped (pause-all, a conversation pause, an agent reset or
deactivation, a budget block reached, a breaker, a person cancelling the turn) leaves a cancel
mark in Redis for the turn (``turn:<id>``) or the call (``call:<id>``; pause-all marks every call
in flight). The worker streaming the call runs a ``CallWatch`` beside it, which polls the marks
and the emergency flag every ``MCC_CANCEL_POLL_SECONDS`` (0.1 s) and closes the stream on the
first hit; the turn engine records the partial call and ends the turn ``cancelled``.
Marks live a day; a turn's mark is cleared when the turn is held or ends.

A mark says what kind of stop it is: ``pause`` (pause-all, a conversation pause, a budget
``pause``) keeps the work — the turn is answered again once the pause is lifted — and ``stop``
(a reset, a deactivation, a budget block, a breaker, a person cancelling the turn) drops it.
"""
from __future__ import annotations

import logging
import threading
import uuid

from flask import current_app
from sqlalchemy import select

from mcc.extensions import db
from mcc.llm.gateway import CancelToken
from mcc.models.conversation import Conversation
from mcc.models.task import Task
from mcc.models.turn import Turn
from mcc.runtime import gate

log = logging.getLogger(__name__)


PAUSE, STOP = "pause", "stop"


def reason_of(kind: str, text: str) -> str:
    """A mark's value: its kind and the words people read."""
    return f"{kind}|{text}"


def parse(reason: str) -> tuple[str, str]:
    kind, _, text = reason.partition("|")
    return (kind, text) if kind in (PAUSE, STOP) else (STOP, reason)


def emergency_reason(state: dict | None) -> str:
    return reason_of(PAUSE, f"all agents were paused ({(state or {}).get('reason') or 'emergency pause'})")


def _turn_mark(turn_id) -> str:
    return f"turn:{turn_id}"


def pending_reason(turn_id: uuid.UUID) -> str | None:
    """Why this turn was asked to stop (a mark's value, see ``parse``), if it was."""
    return gate.cancel_marks([_turn_mark(turn_id)])[1]


def forget(turn_id: uuid.UUID) -> None:
    gate.clear_cancel_marks([_turn_mark(turn_id)])


def stop_turns(turn_ids: list[uuid.UUID], reason: str, kind: str = STOP) -> int:
    """Ask these running turns to stop; returns how many were not already asked."""
    return gate.cancel_mark([_turn_mark(t) for t in turn_ids], reason_of(kind, reason))


def running_turns(project_id: uuid.UUID | None = None, conversation_id: uuid.UUID | None = None,
                  agent_id: uuid.UUID | None = None, task_ids=None) -> list[uuid.UUID]:
    query = select(Turn.id).where(Turn.status == "running")
    if project_id is not None:
        query = query.join(Conversation, Conversation.id == Turn.conversation_id).where(
            Conversation.project_id == project_id)
    if conversation_id is not None:
        query = query.where(Turn.conversation_id == conversation_id)
    if agent_id is not None:
        query = query.where(Turn.agent_id == agent_id)
    if task_ids is not None:
        query = query.where(Turn.task_id.in_(task_ids))
    return list(db.session.scalars(query))


def stop_running(reason: str, except_turn: uuid.UUID | None = None, kind: str = STOP, **scope) -> int:
    """Stop the running turns in a scope (project_id, conversation_id, agent_id, task_ids)."""
    turn_ids = [t for t in running_turns(**scope) if t != except_turn]
    stopped = stop_turns(turn_ids, reason, kind)
    if stopped:
        log.warning("asked %s running turn(s) to stop: %s", stopped, reason)
    return stopped


def issue_task_ids(issue_id: uuid.UUID):
    return select(Task.id).where(Task.issue_id == issue_id)


class CallWatch:
    """Beside one streaming call: polls the cancel marks and the emergency flag, cancels the token."""

    def __init__(self, call_id: str, turn_id: uuid.UUID, token: CancelToken):
        self.marks = [f"call:{call_id}", _turn_mark(turn_id)]
        self.token = token
        self.interval = current_app.config["MCC_CANCEL_POLL_SECONDS"]
        self.app = current_app._get_current_object()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"cancel-watch-{call_id}")

    def __enter__(self):
        # Once before the call leaves: a pause-all that came between the gate and here marked this
        # call, and pause-all returns within 50 ms; the first poll would only see it after sending.
        self._look(warned=False)
        self.thread.start()
        return self

    def _look(self, warned: bool) -> bool | None:
        """Cancel the token if the call or its turn is marked, or the emergency flag is up.
        True when cancelled; None when the marks could not be read."""
        try:
            emergency, reason = gate.cancel_marks(self.marks)
        except Exception:  # Redis down: the call runs on; the gate still refuses new ones
            if not warned:
                log.warning("cancel watch could not read the marks", exc_info=True)
            return None
        if reason or emergency:
            self.token.cancel(reason or emergency_reason(emergency))
            return True
        return False

    def _run(self):
        warned = False
        with self.app.app_context():
            while not self.token.reason and not self.stopped.wait(self.interval):
                seen = self._look(warned)
                warned = warned or seen is None
                if seen:
                    return

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=2)
        gate.clear_cancel_marks(self.marks[:1])
