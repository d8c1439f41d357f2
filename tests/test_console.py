"""The console's blueprint: the app's page on every console path, under a strict CSP; hashed
assets cached for a year; a clear 503 when the console was not built."""
from __future__ import annotations

import pytest

PAGE = b'<!doctype html><script type="module" src="/assets/console-abc.js"></script>'


@pytest.fixture
def dist(app, tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_bytes(PAGE)
    (tmp_path / "assets" / "console-abc.js").write_text("console.log(1)")
    saved = app.config.get("MCC_CONSOLE_DIST")
    app.config["MCC_CONSOLE_DIST"] = str(tmp_path)
    yield tmp_path
    app.config["MCC_CONSOLE_DIST"] = saved


@pytest.mark.parametrize("path", ["/", "/login", "/budget", "/notifications", "/projects/abc",
                                  "/projects/abc/conversations/def"])
def test_every_console_path_serves_the_page_under_a_strict_policy(client, dist, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.data == PAGE
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy  # no inline code, no other origin
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_assets_are_cached_for_a_year(client, dist):
    response = client.get("/assets/console-abc.js")
    assert response.status_code == 200
    assert response.data == b"console.log(1)"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.mimetype in ("text/javascript", "application/javascript")


def test_a_missing_asset_or_path_is_404_not_the_page(client, dist):
    assert client.get("/assets/console-nope.js").status_code == 404
    assert client.get("/assets/../index.html").status_code == 404
    assert client.get("/no-such-page").status_code == 404


def test_console_routes_leave_the_api_alone(client, dist):
    response = client.get("/api/v1/projects")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_not_built_answers_503_saying_how_to_build(client, app, tmp_path):
    saved = app.config.get("MCC_CONSOLE_DIST")
    app.config["MCC_CONSOLE_DIST"] = str(tmp_path / "nothing")
    try:
        response = client.get("/")
    finally:
        app.config["MCC_CONSOLE_DIST"] = saved
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "CONSOLE_NOT_BUILT" and "scripts/console" in error["message"]
