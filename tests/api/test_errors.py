"""Every error path answers the one error format, with a request id."""
from __future__ import annotations

import uuid

import pytest

from tests.factories import assert_error, auth_headers, make_user



@pytest.fixture
def headers(client):
    return auth_headers(client, make_user("admin"))


def test_anonymous_clients_get_401_even_for_unknown_paths(client):
    """Authentication runs before routing: nothing about the surface leaks to anonymous clients."""
    for path in ("/api/v1/projects", "/api/v1/does-not-exist", "/api/v1/users/123"):
        assert_error(client.get(path), 401, "UNAUTHORIZED")
    assert_error(client.delete("/api/v1/auth/me"), 401, "UNAUTHORIZED")


def test_public_endpoints_need_no_token(client):
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200
    assert_error(client.post("/api/v1/auth/login", json={"username": "x", "password": "y"}), 401, "UNAUTHORIZED")


def test_unknown_route_is_404(client, headers):
    assert_error(client.get("/api/v1/does-not-exist", headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_unknown_user_id_is_404_and_malformed_id_is_404(client, headers):
    error = assert_error(client.get(f"/api/v1/users/{uuid.uuid4()}", headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert "User" in error["message"]
    assert_error(client.get("/api/v1/users/not-a-uuid", headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_wrong_method_is_405_with_allowed_methods(client, headers):
    response = client.delete("/api/v1/auth/me", headers=headers)
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in error["details"]["allowed_methods"]
    assert "GET" in response.headers["Allow"]


def test_oversized_body_is_413(client, headers):
    big = "x" * (1024 * 1024 + 10)
    response = client.post("/api/v1/users", data=big, content_type="application/json", headers=headers)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_non_json_body_is_415(client):
    response = client.post("/api/v1/auth/login", data="username=a&password=b",
                           content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/auth/login", data='{"username": "a",', content_type="application/json")
    assert_error(response, 400, "BAD_REQUEST")


def test_schema_violations_are_422_with_per_field_details(client, headers):
    response = client.post("/api/v1/users", headers=headers,
                           json={"username": "", "role": "emperor", "surprise": 1})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert set(error["details"]) >= {"username", "password", "role", "surprise"}


def test_strings_the_database_cannot_store_are_422_not_500(client):
    response = client.post("/api/v1/auth/login", json={"username": "a\x00b", "password": "pw"})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "username" in error["details"]


def test_pagination_out_of_range_is_422_not_clamped(client, headers):
    for query in ("page=0", "limit=0", "limit=101", "page=abc"):
        assert_error(client.get(f"/api/v1/users?{query}", headers=headers), 422, "VALIDATION_ERROR")
    body = client.get("/api/v1/users?page=1&limit=100", headers=headers).get_json()
    assert set(body) == {"items", "total", "page", "pages"}
    assert body["page"] == 1 and body["pages"] == 1


def test_forbidden_is_403(client):
    response = client.get("/api/v1/users", headers=auth_headers(client, make_user("viewer")))
    assert_error(response, 403, "FORBIDDEN")


def test_request_id_is_echoed_when_valid_and_replaced_when_not(client):
    good = client.get("/api/v1/auth/me", headers={"X-Request-ID": "abc-123.DEF_4"})
    assert good.headers["X-Request-ID"] == "abc-123.DEF_4"
    assert good.get_json()["error"]["request_id"] == "abc-123.DEF_4"
    bad = client.get("/api/v1/auth/me", headers={"X-Request-ID": "evil value; injected=1"})
    assert bad.headers["X-Request-ID"] != "evil value; injected=1"
    uuid.UUID(bad.headers["X-Request-ID"])
    assert client.get("/healthz").headers["X-Request-ID"]


def test_unhandled_exception_is_500_without_a_stack_trace(test_env):
    """A bug answers INTERNAL_ERROR with the request id; the trace stays in the log."""
    from mcc import create_app
    from mcc.extensions import db
    from tests.factories import make_user as make

    app = create_app({"TESTING": False, "PROPAGATE_EXCEPTIONS": False}, env=test_env)

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    with app.app_context():
        user = make("viewer")
        try:
            client = app.test_client()
            headers = auth_headers(client, user)
            response = client.get("/api/v1/boom", headers=headers)
            error = assert_error(response, 500, "INTERNAL_ERROR")
            text = response.get_data(as_text=True)
            assert "secret internals" not in text and "Traceback" not in text
            assert error["request_id"]
        finally:
            db.session.delete(user)
            db.session.commit()


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readiness_and_api_report_a_dead_redis(test_env, tmp_path):
    """With Redis gone, /readyz says so (503) and the API answers 503, not 500."""
    from tests.live import start_web

    web, base = start_web(test_env, tmp_path / "web.log", {"REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        import requests

        response = requests.get(f"{base}/readyz", timeout=5)
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"].startswith("unreachable")
        api = requests.get(f"{base}/api/v1/auth/me", timeout=10)
        assert api.status_code == 503
        assert api.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert api.headers["Retry-After"] == "5"
    finally:
        web.stop()
