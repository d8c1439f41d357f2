"""MCC — Mission Control Center. ``create_app`` builds the web application."""
from __future__ import annotations

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from mcc.config import load_config
from mcc.errors import error_response

JSON_BODY_METHODS = {"POST", "PUT", "PATCH"}
# Paths whose bodies are not ours to dictate (GitHub may post form-encoded webhooks).
ANY_BODY_PATHS = ("/api/v1/webhooks/",)


def _require_json_body():
    """415 for a request body that is not JSON: the API speaks JSON only."""
    if request.method not in JSON_BODY_METHODS or request.path.startswith(ANY_BODY_PATHS):
        return None
    has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding")
    if has_body and not request.is_json:
        return error_response(415, "UNSUPPORTED_MEDIA_TYPE",
                              "Request bodies must be JSON (Content-Type: application/json).")
    return None


def create_app(overrides: dict | None = None, env: dict | None = None) -> Flask:
    """Build the app from the environment (``env``), then apply test ``overrides``."""
    from mcc import api, cli, console, errors, hardening, health, metrics, redis_store, security
    from mcc.api import socket
    from mcc import models  # noqa: F401  (registers every table with the metadata)
    from mcc.extensions import db, jwt, limiter, migrate
    from mcc.pipeline import tools as pipeline_tools
    from mcc.runtime import recovery, tools
    from mcc.logging_setup import assign_request_id, configure_logging, echo_request_id, log_request

    app = Flask(__name__, static_folder=None)
    app.config.update(load_config(env))
    app.config.update(overrides or {})
    configure_logging(app.config["MCC_LOG_LEVEL"], app.config["MCC_LOG_FORMAT"])
    _warn_about_open_settings(app)

    # Order matters: request id first (every later error carries it), then the rate limiter
    # (anonymous floods are counted too), then authentication, then the body check.
    app.before_request(assign_request_id)
    redis_store.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(_migrations_dir()), render_as_batch=True, compare_type=True)
    jwt.init_app(app)
    # Unmatched paths (404/405) count too: the limiter skips requests without an endpoint.
    app.config.setdefault("RATELIMIT_REQUEST_IDENTIFIER", lambda: request.endpoint or "unmatched")
    app.after_request(errors.retry_after_only_where_meaningful)  # runs after the limiter's own hook
    limiter.init_app(app)
    limiter.request_filter(lambda: not request.path.startswith("/api/v1"))
    app.before_request(security.authenticate_api_request)
    app.before_request(_require_json_body)
    security.init_app(app)
    errors.init_app(app)
    api.init_app(app)
    errors.init_app(app)  # again: flask-smorest registered its own HTTPException handler
    app.register_blueprint(health.bp)
    limiter.exempt(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(console.bp)
    limiter.exempt(console.bp)
    socket.init_app(app)
    cli.init_app(app)
    tools.load_registry(pipeline_tools.TOOLS)  # the agents' tools: an explicit list
    hardening.init_app(app)  # its URI check runs right after the request id is assigned
    app.after_request(echo_request_id)
    app.after_request(log_request)
    app.after_request(metrics.observe_request)
    app.before_request(lambda: recovery.start_embedded_reaper(app))
    # Outermost, around Socket.IO's middleware too: sockets are counted per forwarded client address.
    proxies = app.config["MCC_TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app


def _warn_about_open_settings(app: Flask) -> None:
    import logging

    if app.config.get("MCC_GITHUB_ALLOWED_REPOS") is None:
        logging.getLogger("mcc").warning(
            "MCC_GITHUB_ALLOWED_REPOS is unset: operators may bind projects to any repository MCC's GitHub "
            "credential reaches. Set it to the owners/repositories MCC may work on.")


def _migrations_dir():
    from mcc.config import PROJECT_ROOT
    return PROJECT_ROOT / "migrations"
