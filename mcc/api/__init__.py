"""The REST API: one flask-smorest blueprint per resource, all under /api/v1."""
from __future__ import annotations

from flask_smorest import Api

from mcc import hardening  # noqa: F401  (its argument parser, before any blueprint uses one)
from mcc.errors import handle_http_exception
from mcc.schemas.common import ErrorSchema

BEARER = [{"bearerAuth": []}]


class MccApi(Api):
    """flask-smorest's Api documenting and producing our one error format."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return handle_http_exception(error)


api = MccApi()


def init_app(app) -> None:
    from mcc.api import agents, analytics, auth, budget, conversations, emergency, notifications, projects, users
    from mcc.api import audit, github_settings, issues, pull_requests, tasks, turns, webhooks

    api.init_app(app, spec_kwargs={
        "security": BEARER,
        "info": {"description": (
            "Mission Control Center: run crews of LLM coding agents on GitHub repositories. "
            "Every error has the body `{\"error\": {code, message, details, request_id}}`. "
            "All routes need `Authorization: Bearer <access token>` unless marked otherwise. "
            "Rate limit: MCC_RATE_LIMIT (default 100/minute) per client IP across the API, "
            "reported in X-RateLimit-* headers; 429 carries Retry-After.")},
    })
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for module in (auth, users, audit, projects, agents, conversations, emergency, budget, analytics, notifications,
                   issues, pull_requests, webhooks, github_settings, tasks, turns):
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
