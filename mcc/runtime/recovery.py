"""Recovery in one place: the reaper loop every worker runs, and the embedded web process too.

Each pass recovers turns whose worker died (``engine.reaper_pass``), then does the process's
periodic duty: a worker keeps the next run of every periodic job scheduled on RQ's scheduler
(``periodic.ensure_scheduled``); the embedded web process, which has no worker, runs the due
ones itself (``periodic.run_due_in_process``).
"""
from __future__ import annotations

import contextlib
import logging
import threading

from mcc.periodic import run_due_in_process
from mcc.redis_store import get_redis
from mcc.runtime.engine import reaper_pass

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
