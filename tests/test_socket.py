"""The Socket.IO channel, driven with the python-socketio client against real web processes."""
from __future__ import annotations

import queue
import time
import uuid

import pytest
import requests
import socketio

from tests.factories import PASSWORD, make_user
from tests.live import start_web

pytestmark = pytest.mark.live


class Listener:
    """A connected client that records every server event it receives."""

    def __init__(self, base: str, token: str | None = None, **connect_kwargs):
        self.client = socketio.Client(reconnection=False)
        self.events: dict[str, queue.Queue] = {}
        for name in ("message", "error", "user_typing", "agent_status", "conversation_status"):
            self.events[name] = queue.Queue()
            self.client.on(name, (lambda n: lambda data: self.events[n].put(data))(name))
        if token is not None:
            connect_kwargs.setdefault("auth", {"token": token})
        self.client.connect(base, transports=["websocket"], wait_timeout=10, **connect_kwargs)

    def call(self, event: str, data) -> dict:
        return self.client.call(event, data, timeout=10)

    def next(self, event: str, timeout: float = 10):
        return self.events[event].get(timeout=timeout)

    def nothing(self, event: str, wait: float = 0.5) -> bool:
        try:
            self.events[event].get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def disconnected(self, timeout: float = 10) -> bool:
        """Whether the server cuts this client within the timeout (polled)."""
        deadline = time.monotonic() + timeout
        while self.client.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.client.connected

    def close(self):
        self.client.disconnect()


@pytest.fixture
def world(app, committed_db):
    """Committed data: an operator, a viewer, a project with an agent and a conversation."""
    from mcc.extensions import db
    from mcc.services.agents import create_agent
    from mcc.services.conversations import create_conversation
    from mcc.services.projects import create_project

    with app.app_context():
        operator, viewer = make_user("operator"), make_user("viewer")
        project = create_project({"name": "Sock", "github_repo": f"octo/sock-{uuid.uuid4().hex[:6]}"})
        agent = create_agent(project.id, {"name": "Archie", "type": "architect", "model_config": {
            "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})
        conversation = create_conversation(project.id, operator.id, {"title": "Chat", "agent_ids": [agent.id]})
        db.session.commit()
        return {"operator": operator.username, "viewer": viewer.username, "project": str(project.id),
                "agent": str(agent.id), "conversation": str(conversation.id)}


@pytest.fixture
def web(test_env, tmp_path):
    process, base = start_web(test_env, tmp_path / "web.log")
    yield base
    process.stop()


def token_for(base: str, username: str) -> str:
    response = requests.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD},
                             timeout=5)
    return response.json()["access_token"]


def refusal(base: str, auth) -> dict:
    """Connect expecting a refusal; return the reason the server gave (connect_error data)."""
    client = socketio.Client(reconnection=False)
    reasons = queue.Queue()
    client.on("connect_error", reasons.put)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(base, transports=["websocket"], auth=auth, wait_timeout=5)
    return reasons.get(timeout=5)


def test_connection_needs_a_valid_token(web, world):
    token = token_for(web, world["operator"])
    assert refusal(web, None)["message"].startswith("missing token")
    assert refusal(web, {"token": "garbage"}) == {"message": "invalid token", "data": {"code": "UNAUTHORIZED"}}
    assert refusal(web, {"token": token + "x"})["message"] == "invalid token"
    # The header and the query parameter work as well as auth.
    Listener(web, headers={"Authorization": f"Bearer {token}"}).close()
    listener = socketio.Client(reconnection=False)
    listener.connect(f"{web}?token={token}", transports=["websocket"], wait_timeout=5)
    listener.disconnect()


def test_revoked_token_is_refused_and_cuts_live_connections(web, world):
    token = token_for(web, world["operator"])
    live = Listener(web, token)
    assert live.call("join_conversation", {"conversation_id": world["conversation"]})["ok"]
    requests.post(f"{web}/api/v1/auth/logout", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert refusal(web, {"token": token})["message"] == "token revoked"
    ack = live.call("join_conversation", {"conversation_id": world["conversation"]})
    assert ack["ok"] is False and ack["error"]["code"] == "UNAUTHORIZED"
    assert live.next("error")["code"] == "UNAUTHORIZED"
    assert live.disconnected()  # the server cuts it 0.2 s after the ack; polled, not a fixed sleep


def test_a_listening_socket_is_cut_when_its_token_is_revoked(test_env, world, tmp_path):
    """A client that only listens still loses the channel once its token is revoked."""
    process, base = start_web(test_env, tmp_path / "sweep.log", {"MCC_SOCKET_SWEEP_SECONDS": "0.5"})
    try:
        token = token_for(base, world["operator"])
        listener = Listener(base, token)
        assert listener.call("join_conversation", {"conversation_id": world["conversation"]})["ok"]
        requests.post(f"{base}/api/v1/auth/logout", json={}, headers={"Authorization": f"Bearer {token}"},
                      timeout=5)
        assert listener.disconnected()
    finally:
        process.stop()


def test_rest_message_reaches_every_client_in_the_room(web, world):
    token = token_for(web, world["operator"])
    first, second, outsider = Listener(web, token), Listener(web, token_for(web, world["viewer"])), Listener(web, token)
    try:
        for listener in (first, second):
            ack = listener.call("join_conversation", {"conversation_id": world["conversation"]})
            assert ack == {"ok": True, "conversation_id": world["conversation"]}
        url = f"{web}/api/v1/projects/{world['project']}/conversations/{world['conversation']}/messages"
        posted = requests.post(url, json={"content": "hello room"}, headers={"Authorization": f"Bearer {token}"},
                               timeout=5)
        assert posted.status_code == 201
        message = {k: v for k, v in posted.json().items() if k != "blocked_agents"}
        assert first.next("message") == message
        assert second.next("message") == message
        assert outsider.nothing("message")
    finally:
        for listener in (first, second, outsider):
            listener.close()


def test_send_message_over_the_socket_is_stored_once_and_acknowledged(web, world):
    token = token_for(web, world["operator"])
    sender, watcher = Listener(web, token), Listener(web, token)
    try:
        watcher.call("join_conversation", {"conversation_id": world["conversation"]})
        ack = sender.call("send_message", {"conversation_id": world["conversation"], "content": "via socket"})
        assert ack["ok"] is True
        assert ack["message"]["content"] == "via socket" and ack["message"]["author_type"] == "user"
        assert watcher.next("message")["id"] == ack["message"]["id"]
        page = requests.get(f"{web}/api/v1/projects/{world['project']}/conversations/{world['conversation']}"
                            "/messages", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        assert [m["id"] for m in page["items"]] == [ack["message"]["id"]]

        invalid = sender.call("send_message", {"conversation_id": world["conversation"], "content": ""})
        assert invalid["ok"] is False and invalid["error"]["code"] == "VALIDATION_ERROR"
        assert "content" in invalid["error"]["details"]
        assert sender.next("error")["code"] == "VALIDATION_ERROR"
        missing = sender.call("send_message", {"conversation_id": str(uuid.uuid4()), "content": "x"})
        assert missing["error"]["code"] == "RESOURCE_NOT_FOUND"
    finally:
        sender.close()
        watcher.close()


def test_viewers_listen_but_do_not_send(web, world):
    viewer = Listener(web, token_for(web, world["viewer"]))
    try:
        assert viewer.call("join_conversation", {"conversation_id": world["conversation"]})["ok"] is True
        ack = viewer.call("send_message", {"conversation_id": world["conversation"], "content": "let me in"})
        assert ack["ok"] is False and ack["error"]["code"] == "FORBIDDEN"
        assert viewer.next("error")["code"] == "FORBIDDEN"
    finally:
        viewer.close()


@pytest.mark.parametrize("event_name", ["typing", "typing_indicator"])
def test_typing_goes_to_the_others_in_the_room(web, world, event_name):
    """`typing_indicator` (the spec's heading) and `typing` (its example) are one event."""
    token = token_for(web, world["operator"])
    typist, reader = Listener(web, token), Listener(web, token)
    try:
        for listener in (typist, reader):
            listener.call("join_conversation", {"conversation_id": world["conversation"]})
        ack = typist.call(event_name, {"conversation_id": world["conversation"], "is_typing": True})
        assert ack == {"ok": True}
        event = reader.next("user_typing")
        assert event["conversation_id"] == world["conversation"]
        assert event["is_typing"] is True and event["user"]["username"] == world["operator"]
        assert typist.nothing("user_typing")
        refused = typist.call(event_name, {"conversation_id": "not-a-uuid"})
        assert refused["ok"] is False and refused["error"]["code"] == "VALIDATION_ERROR"
        reader.call("leave_conversation", {"conversation_id": world["conversation"]})
        typist.call(event_name, {"conversation_id": world["conversation"], "is_typing": False})
        assert reader.nothing("user_typing")
    finally:
        typist.close()
        reader.close()


def test_agent_status_goes_to_every_connection(web, world):
    token = token_for(web, world["operator"])
    listener = Listener(web, token)
    try:
        reset = requests.post(f"{web}/api/v1/projects/{world['project']}/agents/{world['agent']}/reset",
                              headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert reset.status_code == 200
        event = listener.next("agent_status")
        assert event["agent_id"] == world["agent"] and event["status"] == "idle"
        assert event["timestamp"].endswith("Z")
    finally:
        listener.close()


def test_client_event_rate_limit_refuses_but_keeps_the_connection(test_env, world, tmp_path):
    process, base = start_web(test_env, tmp_path / "limited.log", {"MCC_SOCKET_RATE_LIMIT": "5 per minute"})
    listener = Listener(base, token_for(base, world["operator"]))
    try:
        acks = [listener.call("join_conversation", {"conversation_id": world["conversation"]}) for _ in range(6)]
        assert [a["ok"] for a in acks] == [True] * 5 + [False]
        assert acks[5]["error"]["code"] == "RATE_LIMITED"
        assert listener.next("error")["code"] == "RATE_LIMITED"
        assert listener.client.connected
    finally:
        listener.close()
        process.stop()


def test_events_cross_web_processes_through_redis(test_env, world, tmp_path):
    """A client on process A sees a message posted through process B."""
    process_a, base_a = start_web(test_env, tmp_path / "a.log")
    process_b, base_b = start_web(test_env, tmp_path / "b.log")
    token = token_for(base_a, world["operator"])
    listener = Listener(base_a, token)
    try:
        listener.call("join_conversation", {"conversation_id": world["conversation"]})
        url = f"{base_b}/api/v1/projects/{world['project']}/conversations/{world['conversation']}/messages"
        posted = requests.post(url, json={"content": "from B"}, headers={"Authorization": f"Bearer {token}"},
                               timeout=5)
        assert posted.status_code == 201
        assert listener.next("message") == {k: v for k, v in posted.json().items() if k != "blocked_agents"}
    finally:
        listener.close()
        process_a.stop()
        process_b.stop()


def test_a_message_mentioning_more_agents_than_the_chain_allows_says_so_live(test_env, world, app, tmp_path):
    """MCC_MAX_CHAIN=1 and two agents mentioned: the room sees the message, then the system notice."""
    from mcc.extensions import db
    from mcc.models.conversation import Conversation
    from mcc.services.agents import create_agent

    with app.app_context():
        bella = create_agent(uuid.UUID(world["project"]), {"name": "Bella", "type": "coder", "model_config": {
            "model": "anthropic/claude-3.5-sonnet", "temperature": 0.2, "max_tokens": 1000}})
        conversation = db.session.get(Conversation, uuid.UUID(world["conversation"]))
        conversation.agents.append(bella)
        db.session.commit()
    process, base = start_web(test_env, tmp_path / "chain.log", {"MCC_MAX_CHAIN": "1"})
    token = token_for(base, world["operator"])
    watcher = Listener(base, token)
    try:
        watcher.call("join_conversation", {"conversation_id": world["conversation"]})
        url = f"{base}/api/v1/projects/{world['project']}/conversations/{world['conversation']}/messages"
        posted = requests.post(url, json={"content": "@Archie and @Bella, both of you please"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert posted.status_code == 201, posted.text
        assert watcher.next("message")["id"] == posted.json()["id"]
        notice = watcher.next("message")
        assert notice["author_type"] == "system" and "Bella" in notice["content"]
        assert "MCC_MAX_CHAIN" in notice["content"] and notice["metadata"]["reason"] == "chain_limit"
    finally:
        watcher.close()
        process.stop()
