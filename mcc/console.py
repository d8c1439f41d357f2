"""The operator console: the single-page app built from dashboard/ (scripts/console), served at /.

Every console path answers index.html, so a reload or a shared link lands on the right page; the
app routes by path in the browser. The bundle's files have content hashes in their names and are
cached for a year; index.html is revalidated on every load. The page runs under a strict
Content-Security-Policy: scripts, styles and connections from this origin only, nothing inline.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory

from mcc.config import PROJECT_ROOT
from mcc.errors import error_response

DIST = PROJECT_ROOT / "dashboard" / "dist"
CONSOLE_PATHS = ("/", "/login", "/budget", "/notifications", "/projects/<path:rest>")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",  # same-origin REST and Socket.IO (ws:/wss: to this host included)
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
YEAR = 365 * 24 * 3600

bp = Blueprint("console", __name__)


def _dist() -> Path:
    return Path(current_app.config.get("MCC_CONSOLE_DIST") or DIST)


def index(rest: str | None = None):
    page = _dist() / "index.html"
    if not page.is_file():
        return error_response(503, "CONSOLE_NOT_BUILT",
                              "The console is not built on this server: run scripts/console (needs Node.js).")
    response = Response(page.read_bytes(), mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    return response


for number, rule in enumerate(CONSOLE_PATHS):
    bp.add_url_rule(rule, f"page{number}", index, methods=["GET"])


@bp.get("/assets/<path:name>")
def asset(name: str):
    """A bundle file (content-hashed name: cached for a year, never revalidated)."""
    response = send_from_directory(_dist() / "assets", name, max_age=YEAR)
    response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    response.headers.update(PAGE_HEADERS)
    return response
