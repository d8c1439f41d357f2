"""Logging: every line carries the request id of the request that caused it.

In a web process that is the HTTP request's id (``X-Request-ID`` or a new uuid). A job enqueued
while handling a request carries that id in its RQ meta, and every line the job writes carries it
too, with the job id and, while a turn runs, the turn id (``job_context``): a failed turn can be
traced to the POST that queued it.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
import uuid

from flask import g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

# What we echo back from a client: short and boring, so it cannot inject into logs or headers.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")

# Outside a request (a job, a socket event, a thread): request_id, job_id, turn_id.
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("mcc_log_context", default={})


def current_request_id() -> str | None:
    """The id of the request (or of the job's originating request) this code runs for."""
    if has_request_context() and getattr(g, "request_id", None):
        return g.request_id
    return _context.get().get("request_id")


@contextlib.contextmanager
def job_context(**values):
    """Log lines written inside carry these values (request_id, job_id, turn_id), nested ones win."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        record.request_id = current_request_id() or "-"
        record.job_id = context.get("job_id", "-")
        record.turn_id = context.get("turn_id", "-")
        extra = "".join(f" {label}={context[name]}" for name, label in (("job_id", "job"), ("turn_id", "turn"))
                        if name in context)
        record.context = extra
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s %(turn_id)s",
            rename_fields={"levelname": "level", "asctime": "time"},
        ))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(request_id)s%(context)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    # Idempotent: create_app may run more than once in one process (tests, CLI).
    for existing in list(root.handlers):
        if getattr(existing, "_mcc", False):
            root.removeHandler(existing)
    handler._mcc = True
    root.addHandler(handler)
    root.setLevel(level)


def assign_request_id() -> None:
    """The client's X-Request-ID when plain; for a GitHub webhook, GitHub's delivery id; else a new one."""
    incoming = request.headers.get("X-Request-ID") or request.headers.get("X-GitHub-Delivery") or ""
    g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else str(uuid.uuid4())
    g.request_started = time.perf_counter()


def echo_request_id(response):
    response.headers["X-Request-ID"] = getattr(g, "request_id", None) or str(uuid.uuid4())
    return response


def request_duration() -> float:
    started = getattr(g, "request_started", None)
    return time.perf_counter() - started if started is not None else 0.0


def log_request(response):
    """The one access-log line of a request (gunicorn's own access log is off in the Procfile)."""
    duration = request_duration()
    logging.getLogger("mcc.access").info(
        "%s %s %s %.1fms", request.method, request.path, response.status_code, duration * 1000,
        extra={"method": request.method, "path": request.path, "status": response.status_code,
               "duration_ms": round(duration * 1000, 1), "remote_addr": request.remote_addr,
               "bytes": response.calculate_content_length()})
    return response
