"""HTTP hardening that applies to every response or request, whatever the route.

- Over-long request URIs: 414 ``URI_TOO_LONG`` in the one error format (gunicorn's own limit,
  raised to its maximum in the Procfile, would answer HTML).
- JSON nested deeper than the parser's recursion limit: 400 ``BAD_REQUEST`` (it was a 500).
- Security headers: ``nosniff`` and ``Referrer-Policy: no-referrer`` everywhere, ``Cache-Control:
  no-store`` on ``/api/v1/auth/*``, and a Content-Security-Policy (inline scripts allowed by their
  hash only) plus ``X-Frame-Options: DENY`` on HTML pages.
- Swagger UI's assets served from the pinned ``flask-swagger-ui`` package, not a CDN.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import flask_smorest
from flask import Blueprint, request, send_from_directory
from flask.json.provider import DefaultJSONProvider
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest, NotFound

from mcc.errors import error_response
from mcc.logging_setup import assign_request_id

MAX_URI_BYTES = 4096
AUTH_PREFIX = "/api/v1/auth/"
SWAGGER_ASSETS = "/api/v1/docs/assets/"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)  # attribute-less: inline code only


class BoundedJSONProvider(DefaultJSONProvider):
    """``loads`` that answers 400 for JSON nested beyond Python's recursion limit."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise BadRequest("The JSON body is nested too deeply.") from None


class BoundedParser(FlaskParser):
    """webargs parses request bodies with the json module itself: the same 400 for deep nesting."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise BadRequest("The JSON body is nested too deeply.") from None


# Before any resource module decorates its views (mcc.api imports this module first).
flask_smorest.Blueprint.ARGUMENTS_PARSER = BoundedParser()


def refuse_long_uri():
    """before_request (first): 414 for a request line MCC will not process."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    if len(raw.encode("latin-1", "replace")) > MAX_URI_BYTES:
        return error_response(414, "URI_TOO_LONG", f"The request URI is longer than {MAX_URI_BYTES} bytes.")
    return None


def _csp(body: bytes) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(code).digest()).decode()}'"
                      for code in _INLINE_SCRIPT.findall(body))
    # Styles: Swagger UI sets style attributes from its script; scripts: files from here, and the
    # page's own inline blocks by hash (nothing injected runs).
    return ("default-src 'none'; "
            f"script-src 'self'{' ' + hashes if hashes else ''}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def security_headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith(AUTH_PREFIX):
        headers["Cache-Control"] = "no-store"
    if response.mimetype == "text/html":
        headers.setdefault("X-Frame-Options", "DENY")
        if "Content-Security-Policy" not in headers:
            body = b"" if response.direct_passthrough else response.get_data()
            headers["Content-Security-Policy"] = _csp(body)
    return response


def _swagger_dist() -> Path:
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).resolve().parent / "dist"


swagger_assets = Blueprint("swagger_assets", __name__)


@swagger_assets.route(SWAGGER_ASSETS + "<path:filename>")
def swagger_asset(filename: str):
    if filename not in {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                        "favicon-32x32.png", "favicon-16x16.png"}:
        raise NotFound()
    return send_from_directory(_swagger_dist(), filename, max_age=86400)


def init_app(app) -> None:
    app.json = BoundedJSONProvider(app)

    funcs = app.before_request_funcs.setdefault(None, [])
    at = funcs.index(assign_request_id) + 1 if assign_request_id in funcs else 0
    funcs.insert(at, refuse_long_uri)  # right after the request id: before the limiter and authentication
    app.after_request(security_headers)
    app.register_blueprint(swagger_assets)
