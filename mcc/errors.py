"""Domain errors and the one error format: ``{"error": {code, message, details, request_id}}``.

Services raise ``ApiError`` subclasses; every other failure (routing, webargs, werkzeug, the
rate limiter, JWT, unhandled exceptions) is mapped here. Nothing else builds an error body.
"""
from __future__ import annotations

import logging

from flask import g, jsonify
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# HTTP status -> error code for errors raised by the framework rather than by our services.
STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class TwoFactorRequired(ApiError):
    """A dangerous act without a fresh TOTP code (``details.reason`` says what is missing)."""

    status, code = 403, "TWO_FACTOR_REQUIRED"


class NotFound(ApiError):
    status, code = 404, "RESOURCE_NOT_FOUND"


class RequestTimeout(ApiError):
    status, code = 408, "REQUEST_TIMEOUT"


class Conflict(ApiError):
    status, code = 409, "CONFLICT"


class ValidationFailed(ApiError):
    status, code = 422, "VALIDATION_ERROR"


class TooManyAttempts(ApiError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"retry_after": retry_after}, {"Retry-After": str(retry_after)})


class ServiceUnavailable(ApiError):
    status, code = 503, "SERVICE_UNAVAILABLE"


class GitHubApiError(ApiError):
    """GitHub refused or failed a call; ``github_status`` is GitHub's HTTP status (None: no answer)."""

    status, code = 502, "GITHUB_API_ERROR"

    def __init__(self, message: str, details: dict | None = None, github_status: int | None = None):
        super().__init__(message, details)
        self.github_status = github_status


class GitHubNotConfigured(ApiError):
    status, code = 409, "GITHUB_NOT_CONFIGURED"


class ChecksNotPassed(ApiError):
    status, code = 409, "CHECKS_NOT_PASSED"


class StaleHead(ApiError):
    status, code = 409, "STALE_HEAD"


class NotMergeable(ApiError):
    status, code = 409, "NOT_MERGEABLE"


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict | None = None):
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": getattr(g, "request_id", None),
        }
    }
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_webargs_messages(messages: dict) -> dict:
    """webargs nests field errors under their location ({"json": {...}}); callers want fields."""
    details: dict = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            details.update(fields)
        else:
            details[location] = fields
    return details


def handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    code = STATUS_CODES.get(status, "ERROR")
    data = getattr(exc, "data", None) or {}
    headers = dict(data.get("headers") or {})
    details: dict = {}
    message = exc.description or exc.name
    if status == 422:
        details = _flatten_webargs_messages(data.get("messages") or data.get("errors") or {})
        message = "The request is not valid; see details for each field."
    elif status == 400 and data.get("messages"):
        details = _flatten_webargs_messages(data["messages"])
        message = "The request body is not valid JSON."
    elif status == 404:
        message = "No such resource."
    elif status == 405:
        message = "This method is not allowed on this resource."
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            details = {"allowed_methods": sorted(allowed)}
            headers["Allow"] = ", ".join(sorted(allowed))
    elif status == 413:
        message = "The request body is too large."
    elif status == 429:
        limit = getattr(exc, "limit", None)
        message = "Too many requests; slow down."
        if limit is not None:
            details = {"limit": str(limit.limit)}
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.description)
    response = error_response(status, code, message, details, headers)
    return response


def handle_api_error(exc: ApiError):
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def handle_backing_service_down(exc: Exception):
    # Redis or the database went away: say so (503), the client may retry; not a bug (500).
    log.error("backing service unavailable: %s: %s", type(exc).__name__, exc)
    g.retry_after = "5"
    return error_response(503, "SERVICE_UNAVAILABLE", "A backing service is unavailable; retry shortly.",
                          headers={"Retry-After": "5"})


def handle_unexpected(exc: Exception):
    # The trace goes to the log with the request id, never to the client.
    log.exception("unhandled exception")
    return error_response(500, "INTERNAL_ERROR", "Internal server error. Quote the request id when reporting it.")


def retry_after_only_where_meaningful(response):
    """after_request, registered before Flask-Limiter's so that it runs after it (Flask runs
    after_request hooks last-registered first): the limiter puts Retry-After on every limited
    response, but it means something only on a 429, or on a 503 whose handler chose its value."""
    if response.status_code != 429:
        own = getattr(g, "retry_after", None)
        if own is not None:
            response.headers["Retry-After"] = own
        else:
            response.headers.pop("Retry-After", None)
    return response


def init_app(app) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RedisConnectionError, handle_backing_service_down)
    app.register_error_handler(RedisTimeoutError, handle_backing_service_down)
    app.register_error_handler(OperationalError, handle_backing_service_down)
    app.register_error_handler(PoolTimeoutError, handle_backing_service_down)
    app.register_error_handler(Exception, handle_unexpected)
