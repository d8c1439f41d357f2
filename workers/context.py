"""The Flask app a worker process builds once, before RQ forks a work horse per job."""
from __future__ import annotations

import functools

_app = None


def set_app(app) -> None:
    global _app
    _app = app


def get_app():
    global _app
    if _app is None:  # a job run outside `python -m workers` (rq CLI, embedded mode tests)
        from mcc import create_app
        _app = create_app()
    return _app


def job(func):
    """Run the job inside an app context; commit is the job's own business."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from flask import has_app_context
        if has_app_context():
            return func(*args, **kwargs)
        with get_app().app_context():
            return func(*args, **kwargs)
    return wrapper
