"""Enqueueing background work: RQ on Redis, or in-process execution in embedded mode.

Jobs are referenced by import path and take ids only (JSON-serialisable arguments).
"""
from __future__ import annotations

import logging

from flask import current_app
from rq import Queue
from rq.serializers import JSONSerializer

from mcc.redis_store import get_redis

log = logging.getLogger(__name__)

QUEUES = ("agent", "github", "default")
DEFAULT_TIMEOUT = 600


def get_queue(name: str = "default") -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_redis(), serializer=JSONSerializer)


def enqueue(func_path: str, *args, queue: str = "default", job_id: str | None = None,
            description: str | None = None, timeout: int = DEFAULT_TIMEOUT):
    """Run ``func_path(*args)`` in a worker; in embedded mode run it now, in this process."""
    if get_redis() is None:
        from rq.utils import import_attribute

        log.info("embedded mode: running %s%r in-process", func_path, args)
        return import_attribute(func_path)(*args)
    return get_queue(queue).enqueue(
        func_path, *args, job_id=job_id, description=description or f"{func_path}{args!r}",
        job_timeout=timeout, failure_ttl=7 * 24 * 3600)
