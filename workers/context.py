"""The Flask app a worker process builds once, before RQ forks a work horse per job."""
from __future__ import annotations

import functools
import os

from mcc import create_app
from mcc.extensions import db
from mcc.logging_setup import job_context

_app = None
_app_pid = None


def set_app(app) -> None:
    global _app, _app_pid
    _app, _app_pid = app, os.getpid()


def get_app():
    global _app
    if _app is None:  # a job run outside `python -m workers` (rq CLI)
        set_app(create_app({"MCC_PROCESS": "worker"}))
    return _app


def _rq_job_context():
    """Log lines of an RQ job carry its id and the request id in its meta."""
    from rq import get_current_job

    current = get_current_job()
    if current is None:
        return job_context()
    return job_context(request_id=(current.meta or {}).get("request_id"), job_id=current.id)


def job(func):
    """Run the job inside an app context; commit is the job's own business."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from flask import has_app_context

        if has_app_context():  # embedded mode, or a work horse forked inside the worker's app context
            with _rq_job_context():
                return func(*args, **kwargs)
        app = get_app()
        with app.app_context(), _rq_job_context():
            if os.getpid() != _app_pid:
                # A forked work horse: drop the parent's pooled connections without closing them.
                db.engine.dispose(close=False)
            try:
                return func(*args, **kwargs)
            finally:
                db.session.remove()
    return wrapper
