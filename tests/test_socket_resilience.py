"""The live channel under failure and abuse: no silent hang, no anonymous socket pile-up.

Real web processes (the Procfile line), real Socket.IO and WebSocket clients, and a private
redis-server the test stops, pauses and restarts.
"""
from __future__ import annotations

import logging
import queue
import time
import uuid

import pytest
import requests
import socketio
import websocket

from tests.factories import PASSWORD, make_user
from tests.live import RedisServer, start_web

pytestmark = pytest.mark.live


def login(base: str, username: str) -> str:
    response = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD},
                             timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def connect(base: str, token: str, timeout: float = 10) -> tuple[socketio.Client | None, dict | None, float]:
    """Connect; return (client or None, connect_error data or None, seconds it took to get an answer)."""
    client = socketio.Client(reconnection=False)
    errors = queue.Queue()
    client.on("connect_error", errors.put)
    started = time.monotonic()
    try:
        client.connect(base, transports=["websocket"], auth={"token": token}, wait_timeout=timeout)
    except socketio.exceptions.ConnectionError:
        return None, errors.get(timeout=1), time.monotonic() - started
    return client, None, time.monotonic() - started


@pytest.fixture
def operator(app, committed_db):
    with app.app_context():
        return make_user("operator").username


@pytest.fixture
def private_redis(tmp_path):
    server = RedisServer(tmp_path / "redis.log")
    yield server
    server.stop()


def test_redis_down_or_unreachable_refuses_connects_quickly_then_recovers(test_env, operator, private_redis,
                                                                           tmp_path):
    web, base = start_web(test_env, tmp_path / "web.log", {"REDIS_URL": private_redis.url})
    try:
        token = login(base, operator)
        client, error, _ = connect(base, token)
        assert error is None
        client.disconnect()

        private_redis.pause()  # unreachable: TCP accepted, nothing answers
        client, error, took = connect(base, token)
        assert client is None and took < 5, (error, took)
        assert error["data"]["code"] == "SERVICE_UNAVAILABLE" and error["data"]["message"]
        assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
        private_redis.resume()
        client, error, _ = connect(base, token)
        assert error is None
        client.disconnect()

        private_redis.stop()  # down: connection refused
        client, error, took = connect(base, token)
        assert client is None and took < 5 and error["data"]["code"] == "SERVICE_UNAVAILABLE"
        private_redis.start()
        client, error, _ = connect(base, token)
        assert error is None, error
        client.disconnect()
        assert "Traceback" not in web.output()
    finally:
        web.stop()


def anonymous_websocket(base: str, **headers) -> websocket.WebSocket:
    """A bare Engine.IO websocket that never sends the Socket.IO connect packet."""
    ws = websocket.create_connection(base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                     timeout=5, header=[f"{k}: {v}" for k, v in headers.items()])
    assert ws.recv().startswith("0{")  # Engine.IO open packet
    return ws


def anonymous_websocket_once_free(base: str, seconds: float = 5) -> websocket.WebSocket:
    """An anonymous websocket once the address has a free slot: a client that just disconnected
    holds its slot until the server has processed its close, so a connect right after may be
    refused (401) for a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return anonymous_websocket(base)
        except websocket.WebSocketBadStatusException as refused:
            if refused.status_code != 401 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def closed_within(ws: websocket.WebSocket, seconds: float) -> bool:
    ws.settimeout(seconds)
    try:
        while True:
            if ws.recv() in ("", None):
                return True
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True
    except websocket.WebSocketTimeoutException:
        return False


def test_anonymous_sockets_are_closed_and_capped_per_address(test_env, operator, tmp_path):
    web, base = start_web(test_env, tmp_path / "web.log", {
        "MCC_SOCKET_AUTH_SECONDS": "1", "MCC_SOCKET_MAX_PER_IP": "3", "MCC_TRUSTED_PROXIES": "1"})
    sockets = []
    try:
        sockets = [anonymous_websocket(base) for _ in range(3)]
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            anonymous_websocket(base)
        assert refused.value.status_code == 401
        polling = requests.get(f"{base}/socket.io/?EIO=4&transport=polling", timeout=5)
        assert polling.status_code == 401 and polling.json()["code"] == "TOO_MANY_CONNECTIONS"
        # Behind the trusted proxy, the forwarded address is the one counted.
        sockets.append(anonymous_websocket(base, **{"X-Forwarded-For": "203.0.113.9"}))
        # None of them authenticated: all closed after MCC_SOCKET_AUTH_SECONDS, and the address is free again.
        assert all(closed_within(ws, 4) for ws in sockets)
        # An authenticated client stays past the deadline.
        client, error, _ = connect(base, login(base, operator))
        assert error is None
        time.sleep(2.5)
        assert client.connected and client.call("join_conversation", {}, timeout=5)["ok"] is False
        client.disconnect()
        sockets = [anonymous_websocket_once_free(base) for _ in range(3)]
    finally:
        for ws in sockets:
            ws.close()
        web.stop()


@pytest.fixture
def queueless_app(app, test_env, committed_db):
    """An app without the Redis queue (Flask-SocketIO's in-process test client refuses one); the
    session app's Socket.IO server is restored afterwards."""
    from mcc import create_app
    from mcc.api import socket

    yield create_app({"TESTING": True}, env={**test_env, "REDIS_URL": ""})
    socket.init_app(app)


def test_a_failing_handler_answers_its_ack_with_a_request_id_and_logs_once(queueless_app, caplog):
    """A handler that raises: the ack says INTERNAL_ERROR with a request id, one log record with the traceback."""
    from flask_jwt_extended import create_access_token

    from mcc.extensions import socketio as server
    from mcc.api.socket import client_event

    @client_event("explode_for_test")
    def explode(connection, data):
        raise RuntimeError("boom")

    with queueless_app.app_context():
        user = make_user("operator")
        token = create_access_token(identity=str(user.id), additional_claims={"gen": user.token_generation})
    client = server.test_client(queueless_app, auth={"token": token})
    assert client.is_connected(), "in-process connect failed"
    with caplog.at_level(logging.ERROR, logger="mcc.api.socket"):
        ack = client.emit("explode_for_test", {}, callback=True)
    assert ack["ok"] is False and ack["error"]["code"] == "INTERNAL_ERROR"
    assert uuid.UUID(ack["error"]["details"]["request_id"]) and "boom" not in str(ack)
    failures = [r for r in caplog.records if r.name == "mcc.api.socket" and r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info[1].args == ("boom",)
    client.disconnect()
