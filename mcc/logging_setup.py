"""Logging: every line carries the request id of the request that wrote it."""
from __future__ import annotations

import logging
import re
import sys
import uuid

from flask import g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

# What we echo back from a client: short and boring, so it cannot inject into logs or headers.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(g, "request_id", "-") if has_request_context() else "-"
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"levelname": "level", "asctime": "time"},
        ))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    # Idempotent: create_app may run more than once in one process (tests, CLI).
    for existing in list(root.handlers):
        if getattr(existing, "_mcc", False):
            root.removeHandler(existing)
    handler._mcc = True
    root.addHandler(handler)
    root.setLevel(level)


def assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else str(uuid.uuid4())


def echo_request_id(response):
    response.headers["X-Request-ID"] = getattr(g, "request_id", None) or str(uuid.uuid4())
    return response


def log_request(response):
    logging.getLogger("mcc.access").info(
        "%s %s %s", request.method, request.path, response.status_code)
    return response
