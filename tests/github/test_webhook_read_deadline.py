"""Through the Procfile's web process (gevent): a webhook body trickling in loses its slot after
MCC_GITHUB_WEBHOOK_READ_SECONDS, so GitHub's own deliveries still get in."""
from __future__ import annotations

import json
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from mcc.github.webhooks import sign
from tests.github.conftest import SECRET
from tests.live import start_web

pytestmark = pytest.mark.live


def test_a_trickling_body_is_cut_off_and_a_real_delivery_gets_the_slot(test_env, github_env, committed_db, tmp_path):
    env = {**test_env, **github_env, "MCC_GITHUB_WEBHOOK_CONCURRENCY": "1", "MCC_GITHUB_WEBHOOK_READ_SECONDS": "1"}
    web, base = start_web(env, tmp_path / "web.log")
    url = urlsplit(base)
    slow = socket.create_connection((url.hostname, url.port), timeout=15)
    try:
        # Well-formed headers and signature (refused only after reading), 10 of 1,000 bytes, then silence.
        slow.sendall(("POST /api/v1/webhooks/github HTTP/1.1\r\n"
                      f"Host: {url.netloc}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                      f"X-GitHub-Event: ping\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
                      f"X-Hub-Signature-256: sha256={'0' * 64}\r\n\r\n").encode() + b'{"zen": "a')
        time.sleep(0.3)  # it holds the one slot now
        raw = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
        started = time.monotonic()
        real = requests.post(f"{base}/api/v1/webhooks/github", data=raw, timeout=15, headers={
            "X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(SECRET, raw), "Content-Type": "application/json"})
        waited = time.monotonic() - started
        # Without the deadline the slot stays taken and this is 503 after MCC_GITHUB_WEBHOOK_WAIT (5 s).
        assert real.status_code in (200, 202), real.text
        assert waited < 4.5
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] == b"408", answer[:300]
        assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
    finally:
        slow.close()
        web.stop()
