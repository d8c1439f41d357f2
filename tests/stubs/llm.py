"""An OpenAI-compatible Chat Completions server on loopback, scripted by the tests.

It is a real HTTP server (our gateway client runs unpatched against it). Each request takes the
next scripted step, or the default reply when the script is empty; every request is recorded
with its arrival time.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Step:
    status: int = 200
    content: str | None = "ok"
    tool_calls: list | None = None
    usage: dict | None = None
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    body: dict | None = None  # raw body override


@dataclass
class Call:
    at: float
    body: dict
    headers: dict


class LLMStub:
    def __init__(self):
        self.calls: list[Call] = []
        self.script: list[Step] = []
        self.default = Step(usage={"prompt_tokens": 1000, "completion_tokens": 500})
        # A function(body) -> Step chosen per request, when set (overrides script and default).
        self.responder = None
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub.lock:
                    stub.calls.append(Call(time.time(), body, dict(self.headers)))
                    if stub.responder is not None:
                        step = stub.responder(body)
                    elif stub.script:
                        step = stub.script.pop(0)
                    else:
                        step = stub.default
                if self.path.rstrip("/") != "/v1/chat/completions":
                    step = Step(status=404, body={"error": {"message": f"no route {self.path}"}})
                if step.delay:
                    time.sleep(step.delay)
                payload = step.body if step.body is not None else (
                    {"id": "chatcmpl-stub", "object": "chat.completion", "model": body.get("model"),
                     "choices": [{"index": 0, "finish_reason": "tool_calls" if step.tool_calls else "stop",
                                  "message": {"role": "assistant", "content": step.content,
                                              **({"tool_calls": step.tool_calls} if step.tool_calls else {})}}],
                     "usage": step.usage if step.usage is not None else {"prompt_tokens": 10, "completion_tokens": 5}}
                    if step.status == 200 else {"error": {"message": f"stub error {step.status}"}})
                raw = json.dumps(payload).encode()
                self.send_response(step.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def calls_after(self, moment: float) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.at > moment]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
