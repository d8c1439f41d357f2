"""Work to do after the current unit of work commits: events to publish, conversations to kick.

Services queue it (``later``) while they change data; whoever commits runs it (``flush``), so
nothing is announced that might still roll back.
"""
from __future__ import annotations

import logging

from flask import g

log = logging.getLogger(__name__)


def later(func, *args) -> None:
    g.setdefault("mcc_outbox", []).append((func, args))


def discard() -> None:
    g.pop("mcc_outbox", None)


def mark() -> int:
    """Where the outbox stands now; ``discard_since(mark)`` drops what a rolled-back savepoint queued."""
    return len(g.get("mcc_outbox", []))


def discard_since(position: int) -> None:
    del g.setdefault("mcc_outbox", [])[position:]


def flush() -> None:
    for func, args in g.pop("mcc_outbox", []):
        try:
            func(*args)
        except Exception:  # one failed announcement must not hide the others
            log.exception("after-commit step %s failed", getattr(func, "__name__", func))
