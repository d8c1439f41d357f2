"""Every input answered in the one error format, and the security headers on every response."""
from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.factories import assert_error
from tests.live import start_web

# --- deep nesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/auth/login"])
def test_deeply_nested_json_is_400_not_500(client, operator, path):
    """50,000 nested '[' made the JSON parser raise RecursionError: a 500."""
    response = client.post(path, data="[" * 50_000, headers={**operator, "Content-Type": "application/json"})
    assert "nested too deeply" in assert_error(response, 400, "BAD_REQUEST")["message"]


# --- OPTIONS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/users", "/api/v1/no-such-thing",
                                  "/api/v1/projects/00000000-0000-0000-0000-000000000000/tasks"])
def test_anonymous_options_is_401_without_a_route_map(client, path):
    response = client.open(path, method="OPTIONS")
    assert_error(response, 401, "UNAUTHORIZED")
    assert "Allow" not in response.headers


def test_options_with_a_revoked_or_temp_token_is_401_too(client, operator):
    token = operator["Authorization"]
    assert client.open("/api/v1/projects", method="OPTIONS", headers=operator).status_code == 200
    assert client.post("/api/v1/auth/logout", json={}, headers=operator).status_code in (200, 204)
    assert_error(client.open("/api/v1/projects", method="OPTIONS", headers={"Authorization": token}),
                 401, "UNAUTHORIZED")
    assert_error(client.open("/api/v1/projects", method="OPTIONS", headers={"Authorization": "Bearer junk"}),
                 401, "UNAUTHORIZED")


def test_public_paths_still_answer_options(client):
    assert client.open("/api/v1/auth/login", method="OPTIONS").status_code == 200


# --- over-long URIs -----------------------------------------------------------------------------------

def test_an_over_long_uri_is_414_json(client, operator):
    response = client.get("/api/v1/projects?page=1&x=" + "a" * 5000, headers=operator)
    assert_error(response, 414, "URI_TOO_LONG")
    anonymous = client.get("/api/v1/projects?x=" + "a" * 5000)
    assert_error(anonymous, 414, "URI_TOO_LONG")
    assert client.get("/api/v1/projects?page=1&x=" + "a" * 3000, headers=operator).status_code == 200


def _raw_get(base: str, target: str) -> tuple[int, str, str]:
    """One GET over a plain socket (no client-side URL handling): status, Content-Type, body."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    content_type = re.search(rb"(?im)^content-type:\s*([^\r\n]+)", head)
    return status, content_type.group(1).decode() if content_type else "", body.decode(errors="replace")


def test_the_procfile_web_process_answers_long_request_lines_in_json(test_env, committed_db, tmp_path):
    """gunicorn's default limit (4,094 bytes) answered its own HTML 414; the Procfile raises it to the
    maximum (8,190) so that MCC answers, in JSON. Beyond 8,190 gunicorn still answers (documented)."""
    web, base = start_web(test_env, tmp_path / "web.log")
    try:
        for length in (4_200, 8_000):
            status, content_type, body = _raw_get(base, "/api/v1/projects?x=" + "a" * length)
            assert (status, content_type) == (414, "application/json"), body[:300]
            assert '"URI_TOO_LONG"' in body
        long_header = requests.get(f"{base}/api/v1/projects", headers={"X-Long": "h" * 8_000}, timeout=10)
        assert long_header.status_code == 401 and long_header.headers["Content-Type"] == "application/json"
    finally:
        web.stop()


# --- security headers -----------------------------------------------------------------------------------

def test_every_api_response_says_nosniff_and_no_referrer(client, operator):
    for response in (client.get("/api/v1/projects", headers=operator), client.get("/api/v1/projects"),
                     client.get("/healthz"), client.get("/api/v1/openapi.json")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_auth_responses_are_not_stored(client, operator):
    from tests.factories import PASSWORD, make_user

    user = make_user()
    login = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD})
    assert login.status_code == 200 and login.headers["Cache-Control"] == "no-store"
    assert client.get("/api/v1/auth/me", headers=operator).headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/api/v1/projects", headers=operator).headers.get("Cache-Control", "")


def test_the_docs_page_is_framed_by_no_one_and_runs_only_its_own_scripts(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["X-Frame-Options"] == "DENY"
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}'", csp), csp
    html = page.get_data(as_text=True)
    assert "cdn." not in html and "https://" not in html.split("<body>")[0]
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/api/v1/docs/assets/"), src
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.data) > 1000, src


def test_swagger_assets_are_a_fixed_list(client):
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
    for name in ("../../../../etc/passwd", "VERSION", "oauth2-redirect.html", "index.css"):
        assert client.get(f"/api/v1/docs/assets/{name}").status_code == 404
