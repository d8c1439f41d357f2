"""OpenAI-compatible Chat Completions over HTTP (OpenRouter, OpenAI, vLLM, Ollama, LiteLLM).

Retries 429, 5xx and connection failures with exponential backoff and full jitter, honouring
Retry-After; never retries other 4xx. Without an API key a simulated provider answers instead,
labelled as such, so a newcomer sees agents work with no account.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
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


class LLMError(Exception):
    """The gateway could not produce an answer (after retries, where retrying made sense)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


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
    cost_source: str  # "gateway", "price_table", "unknown_price" or "simulated"
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
             tools: list[dict] | None = None) -> LLMResult:
        if self.simulated:
            return simulated_answer(model, messages)
        body: dict = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        if tools:
            body["tools"] = tools
        if self.settings.usage_accounting:
            body["usage"] = {"include": True}  # OpenRouter: report usage.cost
        data = self._post_with_retries(body)
        return self._result(model, data)

    def _post_with_retries(self, body: dict) -> dict:
        url = f"{self.settings.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.post(url, data=json.dumps(body), headers=headers,
                                             timeout=self.settings.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = LLMError(f"gateway unreachable: {type(exc).__name__}", retryable=True)
                wait = None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise LLMError("gateway answered 200 with a body that is not JSON", 200) from exc
                retryable = response.status_code in RETRYABLE_STATUSES
                error = LLMError(f"gateway answered {response.status_code}: {_error_text(response)}",
                                 response.status_code, retryable)
                wait = _retry_after_seconds(response)
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
