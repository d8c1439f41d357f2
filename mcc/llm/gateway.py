"""OpenAI-compatible Chat Completions over HTTP (OpenRouter, OpenAI, vLLM, Ollama, LiteLLM).

Calls stream (``stream: true`` with ``stream_options.include_usage``) so a call can be stopped
half way: a ``CancelToken`` cancelled from another thread shuts the socket down, and the call
ends with ``LLMCancelled`` carrying what was received so far and its cost (the gateway's usage
when it sent one, else the price table on the streamed tokens, marked ``estimated``). A gateway
that ignores ``stream`` and answers one JSON body is understood too.

Retries 429, 5xx and connection failures with exponential backoff and full jitter, honouring
Retry-After; never retries other 4xx, nor a stream that broke after it began. Without an API key a
simulated provider answers instead, labelled as such, so a newcomer sees agents work with no account.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from decimal import Decimal, InvalidOperation

import requests

from mcc.llm.prices import Price, cost_of, find_price

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# The longest Retry-After we wait for (or twice MCC_LLM_BACKOFF_MAX when larger); longer fails the call.
RETRY_AFTER_CEILING = 60.0


class CancelToken:
    """Set from another thread to stop a call: closes the stream it is reading, at once."""

    def __init__(self):
        self.reason: str | None = None
        self._closers: list = []
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> bool:
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
            closers = list(self._closers)
        for close in closers:
            close()
        return True

    def on_cancel(self, close) -> None:
        with self._lock:
            if self.reason is None:
                self._closers.append(close)
                return
        close()


class LLMError(Exception):
    """The gateway could not produce an answer (after retries, where retrying made sense)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class LLMCancelled(Exception):
    """The call was stopped half way; ``partial`` is what it received and cost until then."""

    def __init__(self, reason: str, partial: "LLMResult"):
        super().__init__(reason)
        self.reason, self.partial = reason, partial


@dataclass
class LLMSettings:
    base_url: str
    api_key: str | None
    timeout: float = 120.0
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    usage_accounting: bool = True
    prices: dict[str, Price] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> "LLMSettings":
        return cls(
            base_url=config["MCC_LLM_BASE_URL"].rstrip("/"),
            api_key=config["MCC_LLM_API_KEY"],
            timeout=config["MCC_LLM_TIMEOUT"],
            max_retries=config["MCC_LLM_MAX_RETRIES"],
            backoff_base=config["MCC_LLM_BACKOFF_BASE"],
            backoff_max=config["MCC_LLM_BACKOFF_MAX"],
            usage_accounting=config["MCC_LLM_USAGE_ACCOUNTING"],
            prices=config["MCC_LLM_PRICE_TABLE"],
        )


@dataclass
class LLMResult:
    content: str
    tool_calls: list[dict]
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal
    cost_source: str  # "gateway", "price_table", "estimated", "unknown_price" or "simulated"
    model: str
    simulated: bool = False
    assistant_message: dict = field(default_factory=dict)

    @property
    def price_known(self) -> bool:
        return self.cost_source != "unknown_price"


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # not a date either: back off as usual
        return None
    if parsed.tzinfo is None:  # HTTP dates are GMT
        parsed = parsed.replace(tzinfo=timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else str(error)
        return message or response.text[:300]
    except ValueError:
        return response.text[:300] or response.reason


class Gateway:
    def __init__(self, settings: LLMSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()

    @property
    def simulated(self) -> bool:
        return not self.settings.api_key

    def chat(self, model: str, messages: list[dict], temperature: float, max_tokens: int,
             tools: list[dict] | None = None, cancel: CancelToken | None = None) -> LLMResult:
        if self.simulated:
            return simulated_answer(model, messages)
        body: dict = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
                      "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = tools
        if self.settings.usage_accounting:
            body["usage"] = {"include": True}  # OpenRouter: report usage.cost
        response = self._post_with_retries(body, cancel)
        if "text/event-stream" not in response.headers.get("Content-Type", ""):
            try:
                data = response.json()
            except ValueError as exc:
                raise LLMError("gateway answered 200 with a body that is not JSON", 200) from exc
            finally:
                response.close()
            return self._result(model, data)
        return self._read_stream(model, messages, response, cancel)

    def _post_with_retries(self, body: dict, cancel: CancelToken | None = None) -> requests.Response:
        url = f"{self.settings.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            if cancel is not None and cancel.reason:
                raise LLMCancelled(cancel.reason, self._partial(body["model"], body["messages"], "", {}, 0, {}))
            try:
                response = self.session.post(url, data=json.dumps(body), headers=headers,
                                             timeout=self.settings.timeout, stream=True)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = LLMError(f"gateway unreachable: {type(exc).__name__}", retryable=True)
                wait = None
            else:
                if response.status_code == 200:
                    return response
                try:
                    retryable = response.status_code in RETRYABLE_STATUSES
                    error = LLMError(f"gateway answered {response.status_code}: {_error_text(response)}",
                                     response.status_code, retryable)
                    wait = _retry_after_seconds(response)
                finally:
                    response.close()
            if wait is not None and wait > max(RETRY_AFTER_CEILING, self.settings.backoff_max * 2):
                # Retrying sooner than the gateway asked is pointless; waiting longer blocks a worker.
                error = LLMError(f"{error} (asked to retry after {wait:.0f} s)", error.status, retryable=False)
            if not error.retryable or attempt > self.settings.max_retries:
                log.warning("LLM call failed after %s attempt(s): %s", attempt, error)
                raise error
            backoff = random.uniform(0, min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1)))
            delay = wait if wait is not None else backoff  # Retry-After is the gateway's word: never sooner
            log.info("LLM call attempt %s failed (%s); retrying in %.2fs", attempt, error, delay)
            time.sleep(delay)

    def _read_stream(self, model: str, messages: list[dict], response: requests.Response,
                     cancel: CancelToken | None) -> LLMResult:
        """Server-sent events: content and tool-call deltas, then a usage chunk, then [DONE]."""
        if cancel is not None:
            cancel.on_cancel(lambda: _shut(response))
        text: list[str] = []
        calls: dict[int, dict] = {}
        usage: dict = {}
        pieces, finished, saw_finish, answered_model = 0, False, False, model
        try:
            for line in response.iter_lines():
                if not line or not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    finished = True
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                answered_model = chunk.get("model") or answered_model
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        pieces += 1
                    for call in delta.get("tool_calls") or []:
                        pieces += 1
                        _merge_tool_call(calls, call)
                    saw_finish = saw_finish or bool(choice.get("finish_reason"))
        except (requests.RequestException, OSError, ValueError) as exc:
            if cancel is None or not cancel.reason:
                raise LLMError(f"the gateway's stream broke: {type(exc).__name__}") from exc
        finally:
            response.close()
        tool_calls = [calls[i] for i in sorted(calls)]
        if not finished and saw_finish:  # the whole answer came; only the usage chunk or [DONE] did not
            finished = True
        if not finished:
            if cancel is not None and cancel.reason:
                raise LLMCancelled(cancel.reason, self._partial(answered_model, messages, "".join(text), usage,
                                                                pieces, calls))
            raise LLMError("the gateway's stream ended before [DONE]")
        if not usage:  # a gateway that ignores include_usage: the streamed text, estimated
            estimate = self._partial(answered_model, messages, "".join(text), {}, pieces, calls)
            usage = {"prompt_tokens": estimate.tokens_in, "completion_tokens": estimate.tokens_out}
        message = {"role": "assistant", "content": "".join(text) or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return self._result(model, {"model": answered_model, "choices": [{"message": message}], "usage": usage})

    def _partial(self, model: str, messages: list[dict], text: str, usage: dict, pieces: int,
                 calls: dict) -> LLMResult:
        """What a stopped call received: the gateway's usage if it came, else an estimate."""
        if usage:
            return self._result(model, {"model": model, "choices": [{"message": {"role": "assistant",
                                                                                  "content": text}}],
                                        "usage": usage})
        tokens_in = estimate_tokens(json.dumps(messages)) if pieces else 0
        tokens_out = max(pieces, estimate_tokens(text + json.dumps(list(calls.values())))) if pieces else 0
        price = find_price(self.settings.prices, model)
        cost = cost_of(price, tokens_in, tokens_out) if price is not None else Decimal("0")
        return LLMResult(content=text, tool_calls=[], tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost,
                         cost_source="estimated" if price is not None else "unknown_price", model=model,
                         assistant_message={"role": "assistant", "content": text})

    def _result(self, model: str, data: dict) -> LLMResult:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError("gateway answer has no choices[0].message") from exc
        usage = data.get("usage") or {}
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        cost, source = self._cost(model, usage, tokens_in, tokens_out)
        content = message.get("content") or ""
        if isinstance(content, list):  # some gateways answer content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return LLMResult(content=content, tool_calls=message.get("tool_calls") or [], tokens_in=tokens_in,
                         tokens_out=tokens_out, cost_usd=cost, cost_source=source, model=data.get("model") or model,
                         assistant_message={k: v for k, v in message.items() if k in ("role", "content", "tool_calls")})

    def _cost(self, model: str, usage: dict, tokens_in: int, tokens_out: int) -> tuple[Decimal, str]:
        if usage.get("cost") is not None:
            try:
                return Decimal(str(usage["cost"])).quantize(Decimal("0.000001")), "gateway"
            except InvalidOperation:
                log.warning("gateway reported a cost that is not a number: %r", usage["cost"])
        price = find_price(self.settings.prices, model)
        if price is None:
            log.warning("no price known for model %s: cost recorded as 0 and flagged", model)
            return Decimal("0"), "unknown_price"
        return cost_of(price, tokens_in, tokens_out), "price_table"


def _merge_tool_call(calls: dict[int, dict], delta: dict) -> None:
    """Tool calls stream in pieces keyed by index: the id and name once, the arguments in parts."""
    call = calls.setdefault(delta.get("index", len(calls)),
                            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def _shut(response: requests.Response) -> None:
    """Stop a stream another thread is reading: the socket shut down, its read returns at once."""
    try:
        sock = response.raw.connection.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass


def estimate_tokens(text: str) -> int:
    """About four characters a token: good enough to trim prompts and estimate reservations."""
    return max(1, len(text) // 4)


def simulated_answer(model: str, messages: list[dict]) -> LLMResult:
    """A deterministic answer with plausible token counts and zero cost."""
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    who = system.split("\n", 1)[0][:120]
    quoted = " ".join(last_user.split())[:160]
    content = (f"[simulated reply — no MCC_LLM_API_KEY set] {who} I read: \"{quoted}\". "
               "With a real model configured I would answer this properly.")
    prompt_chars = sum(len(m.get("content") or "") for m in messages)
    log.info("simulated LLM answer for %s (no MCC_LLM_API_KEY)", model)
    return LLMResult(content=content, tool_calls=[], tokens_in=max(1, prompt_chars // 4),
                     tokens_out=estimate_tokens(content), cost_usd=Decimal("0"), cost_source="simulated",
                     model=model, simulated=True, assistant_message={"role": "assistant", "content": content})
