"""Scale-out for real: two web processes behind nginx (sticky by client address), two workers,
one Redis message queue. Clients spread across both web processes all receive a message posted
through either process, and the agent's reply produced by a worker."""
from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests

from tests.factories import PASSWORD, make_user
from tests.live import Nginx, Process, procfile, start_web
from tests.workers.conftest import make_team
from tests.workers.helpers import SONNET, Listener

pytestmark = pytest.mark.live

# ip_hash keys on the first three octets of the client address: one client per /24 of loopback.
CLIENT_ADDRESSES = [f"127.0.{n}.1" for n in range(1, 7)]


def through(proxy: Nginx, source: str) -> dict:
    """Socket.IO client options for a connection to ``proxy`` from the loopback address ``source``."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10, source_address=(source, 0))
    return {"websocket_extra_options": {"socket": sock}}


def test_clients_on_two_web_processes_behind_nginx_all_receive_every_message(runtime_env, committed_db, app,
                                                                              tmp_path):
    with app.app_context():
        username = make_user("operator").username
    team = make_team(app, ("Ada", "architect", SONNET))
    env = {**runtime_env, "MCC_TRUSTED_PROXIES": "1", "MCC_RATE_LIMIT": "100000 per minute"}
    started: list = []
    listeners: list[Listener] = []
    try:
        webs = [start_web(env, tmp_path / f"web-{name}.log") for name in "ab"]
        started += [process for process, _ in webs]
        workers = [Process(procfile()["worker"], env, tmp_path / f"worker-{n}.log") for n in (1, 2)]
        started += workers
        proxy = Nginx([base for _, base in webs], tmp_path / "nginx")
        started.append(proxy)

        login = requests.post(f"{proxy.base}/api/v1/auth/login", json={"username": username, "password": PASSWORD},
                              timeout=10)
        token = login.json()["access_token"]
        listeners = [Listener(proxy.base, token, **through(proxy, source)) for source in CLIENT_ADDRESSES]
        for listener in listeners:
            listener.join(team["conversation"])
        connected = [process.output().count(f"connected as {username}") for process, _ in webs]
        assert sum(connected) == len(CLIENT_ADDRESSES) and min(connected) >= 1, connected

        deadline = time.monotonic() + 90
        while not all("*** Listening on" in w.output() for w in workers):
            assert time.monotonic() < deadline, "workers not listening"
            time.sleep(0.1)
        for _, base in webs:  # posted straight to each web process in turn
            posted = requests.post(
                f"{base}/api/v1/projects/{team['project']}/conversations/{team['conversation']}/messages",
                json={"content": f"hello from {uuid.uuid4().hex[:6]}"},
                headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert posted.status_code == 201, posted.text
            for listener in listeners:
                assert listener.next("message", where=lambda m: m["id"] == posted.json()["id"])
                reply = listener.next("message", timeout=60, where=lambda m: m["author_type"] == "agent"
                                      and m["reply_to"] == posted.json()["id"])
                assert reply["agent"]["name"] == "Ada"
        # The web processes saw the clients' own addresses, forwarded by nginx (MCC_TRUSTED_PROXIES=1).
        seen = "".join(process.output() for process, _ in webs)
        assert all(f"connected as {username} from {address}\n" in seen for address in CLIENT_ADDRESSES)
    finally:
        for listener in listeners:
            listener.close()
        for process in reversed(started):
            process.stop()
