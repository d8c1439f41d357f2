"""Enqueueing background work: RQ on Redis, or a background thread in embedded mode.

Jobs are referenced by import path and take ids only (JSON-serialisable arguments).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import current_app
from rq import Queue
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from mcc.logging_setup import current_request_id, job_context
from mcc.redis_store import get_redis

log = logging.getLogger(__name__)

QUEUES = ("agent", "github", "default")
DEFAULT_TIMEOUT = 900
# Embedded mode: one process, jobs on two background threads, same job code.
_embedded_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mcc-job")


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

    def reap_forever():
        from mcc.periodic import run_due_in_process
        from mcc.runtime.engine import reaper_pass

        while True:
            with app.app_context():
                reaper_pass()
                run_due_in_process()  # no worker runs the periodic jobs either
            threading.Event().wait(app.config["MCC_REAPER_SECONDS"])

    threading.Thread(target=reap_forever, daemon=True, name="embedded-turn-reaper").start()


def get_queue(name: str = "default") -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_redis(), serializer=JSONSerializer)


def _run_embedded(app, func_path: str, args: tuple, request_id: str | None) -> None:
    with app.app_context(), job_context(request_id=request_id):
        try:
            import_attribute(func_path)(*args)
        except Exception:
            log.exception("embedded job %s%r failed", func_path, args)


def enqueue(func_path: str, *args, queue: str = "default", job_id: str | None = None,
            description: str | None = None, timeout: int = DEFAULT_TIMEOUT, delay: float | None = None):
    """Run ``func_path(*args)`` on a worker (after ``delay`` seconds when given).

    The job carries the id of the request that caused it (``meta.request_id``): its log lines show it.
    """
    request_id = current_request_id()
    if get_redis() is None:
        app = current_app._get_current_object()
        if delay:
            timer = threading.Timer(delay, lambda: _embedded_pool.submit(_run_embedded, app, func_path, args,
                                                                         request_id))
            timer.daemon = True
            timer.start()
        else:
            _embedded_pool.submit(_run_embedded, app, func_path, args, request_id)
        return None
    options = dict(job_id=job_id, description=description or f"{func_path}{args!r}", job_timeout=timeout,
                   failure_ttl=7 * 24 * 3600, result_ttl=3600, meta={"request_id": request_id} if request_id else None)
    if delay:
        return get_queue(queue).enqueue_in(timedelta(seconds=delay), func_path, *args, **options)
    return get_queue(queue).enqueue(func_path, *args, **options)
