"""An OpenAI-compatible Chat Completions server on loopback, scripted by the tests.

It is a real HTTP server (our gateway client runs unpatched against it). Each request takes the
next scripted step, or the default reply when the script is empty; every request is recorded
with its arrival time. A request with ``stream: true`` gets server-sent events: the content word
by word (``chunk_delay`` seconds apart), tool calls, a usage chunk, ``[DONE]``; the record says
when the client closed the stream early (``closed_at``) or that it was read to the end.
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
    chunk_delay: float = 0.0  # streaming: seconds between two chunks
    stream_usage: bool = True  # streaming: send the usage chunk at the end
    # The answer waits until this is set (at most a minute), outside the stub's lock: other
    # requests are answered meanwhile.
    hold: threading.Event | None = None


@dataclass
class Call:
    at: float
    body: dict
    headers: dict
    chunks_sent: int = 0
    closed_at: float | None = None  # the client hung up before the end of the stream
    completed: bool = False
    # Set once the stub has finished with the request (answered to the end or saw the hang-up):
    # the client may return before that, when it has read the last byte.
    finished: threading.Event = field(default_factory=threading.Event)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # a hundred calls arriving at once are all accepted, none waits on a SYN retry


class LLMStub:
    def __init__(self):
        self.calls: list[Call] = []
        self.script: list[Step] = []
        self.default = Step(usage={"prompt_tokens": 1000, "completion_tokens": 500})
        # A function(body) -> Step chosen per request, when set (overrides script and default).
        self.responder = None
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0  # requests being answered at once: now, and at most
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                with stub.lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    self._post()
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                record = Call(time.time(), body, dict(self.headers))
                with stub.lock:
                    stub.calls.append(record)
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
                if step.hold is not None:
                    step.hold.wait(timeout=60)
                if body.get("stream") and step.status == 200 and step.body is None:
                    self._stream(step, body, record)
                    return
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
                record.completed = True
                record.finished.set()

            def _stream(self, step: Step, body: dict, record: Call):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": body.get("model")}
                deltas = [{"role": "assistant", "content": word} for word in _words(step.content or "")]
                deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(step.tool_calls or [])]
                events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
                events.append({**base, "choices": [{"index": 0, "delta": {},
                                                    "finish_reason": "tool_calls" if step.tool_calls else "stop"}]})
                if step.stream_usage:
                    usage = step.usage if step.usage is not None else {"prompt_tokens": 10, "completion_tokens": 5}
                    events.append({**base, "choices": [], "usage": usage})
                try:
                    for index, event in enumerate(events):
                        if index and step.chunk_delay:
                            time.sleep(step.chunk_delay)
                        self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                        record.chunks_sent += 1
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                    record.completed = True
                except OSError:  # the client closed the stream
                    record.closed_at = time.time()
                    self.close_connection = True
                finally:
                    record.finished.set()

            def _chunk(self, data: bytes):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.server = _Server(("127.0.0.1", 0), Handler)
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
