"""The gateway client against a real OpenAI-compatible server on loopback (the stub), unpatched."""
from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from http.server import ThreadingHTTPServer

import pytest

from mcc.llm.gateway import CancelToken, Gateway, LLMCancelled, LLMError, LLMSettings
from mcc.llm.prices import load_prices
from tests.live import free_port
from tests.stubs.llm import LLMStub, Step

SONNET = "anthropic/claude-3.5-sonnet"
MESSAGES = [{"role": "system", "content": "You are Ada, the architect agent."},
            {"role": "user", "content": "[operator]: plan the login page"}]


@pytest.fixture
def stub():
    server = LLMStub()
    yield server
    server.close()


def gateway(base_url: str, **overrides) -> Gateway:
    settings = dict(base_url=base_url, api_key="sk-test", timeout=5, max_retries=3, backoff_base=0.01,
                    backoff_max=0.05, usage_accounting=False, prices=load_prices())
    return Gateway(LLMSettings(**{**settings, **overrides}))


def chat(gw: Gateway, model: str = SONNET, tools=None, cancel=None):
    return gw.chat(model, MESSAGES, 0.3, 800, tools, cancel)


def test_a_request_is_an_openai_chat_completion(stub):
    result = chat(gateway(stub.base_url))
    [call] = stub.calls
    assert call.headers["Authorization"] == "Bearer sk-test"
    assert call.body == {"model": SONNET, "messages": MESSAGES, "temperature": 0.3, "max_tokens": 800,
                         "stream": True, "stream_options": {"include_usage": True}}
    assert (result.content, result.tokens_in, result.tokens_out) == ("ok", 1000, 500)
    assert call.finished.wait(5), "the stub never finished the stream"
    assert call.completed and call.closed_at is None
    assert result.simulated is False and result.tool_calls == []


def test_429_is_retried_after_the_retry_after_delay(stub):
    stub.script = [Step(status=429, headers={"Retry-After": "0.5"}), Step(content="finally")]
    assert chat(gateway(stub.base_url)).content == "finally"
    first, second = stub.calls
    assert second.at - first.at >= 0.5  # longer than any backoff these settings allow


def test_retry_after_as_an_http_date_or_garbage_is_understood(stub):
    # An HTTP date has whole seconds: "now + 3" truncated is 2 to 3 s away when written, so the
    # gateway, however late it reads it, waits well over a second (any backoff here is <= 0.05 s).
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    stub.script = [Step(status=429, headers={"Retry-After": soon}), Step(status=503, headers={"Retry-After": "soon"}),
                   Step(content="ok")]
    assert chat(gateway(stub.base_url)).content == "ok"
    assert stub.calls[1].at - stub.calls[0].at >= 1.0
    assert stub.calls[2].at - stub.calls[1].at < 0.5  # not a number nor a date: the usual backoff


def test_a_retry_after_beyond_the_ceiling_fails_at_once(stub):
    stub.script = [Step(status=429, headers={"Retry-After": "3600"})]
    with pytest.raises(LLMError, match="asked to retry after 3600 s") as caught:
        chat(gateway(stub.base_url))
    assert caught.value.status == 429 and len(stub.calls) == 1


def test_5xx_is_retried_then_fails_with_the_status(stub):
    stub.default = Step(status=502)
    with pytest.raises(LLMError, match="gateway answered 502") as caught:
        chat(gateway(stub.base_url, max_retries=2))
    assert caught.value.status == 502 and caught.value.retryable
    assert len(stub.calls) == 3


def test_5xx_then_success_is_one_answer(stub):
    stub.script = [Step(status=500), Step(status=503), Step(content="third")]
    assert chat(gateway(stub.base_url)).content == "third" and len(stub.calls) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(stub, status):
    stub.script = [Step(status=status)]
    with pytest.raises(LLMError, match=f"gateway answered {status}: stub error {status}") as caught:
        chat(gateway(stub.base_url))
    assert caught.value.status == status and not caught.value.retryable
    assert len(stub.calls) == 1


def test_connection_refused_is_retried_until_the_server_is_up(stub, caplog):
    """Nothing listens on the port at first; a server comes up there during the backoff (100 retries
    of up to 0.1 s with full jitter: ~5 s of backoff, room for a timer late on a loaded machine)."""
    port = free_port()
    servers = []

    def come_up():  # binding is what makes the port accept connections
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), stub.server.RequestHandlerClass))
        servers[0].serve_forever()

    threading.Timer(0.4, come_up).start()
    caplog.set_level(logging.INFO, logger="mcc.llm.gateway")
    try:
        result = chat(gateway(f"http://127.0.0.1:{port}/v1", max_retries=100, backoff_base=0.05, backoff_max=0.1))
    finally:
        servers[0].shutdown()
        servers[0].server_close()
    assert result.content == "ok" and len(stub.calls) == 1
    assert "gateway unreachable: ConnectionError" in caplog.text


def test_connection_refused_exhausting_the_retries_fails(caplog):
    caplog.set_level(logging.INFO, logger="mcc.llm.gateway")
    with pytest.raises(LLMError, match="gateway unreachable") as caught:
        chat(gateway(f"http://127.0.0.1:{free_port()}/v1", max_retries=2))
    assert caught.value.retryable and caught.value.status is None
    assert caplog.text.count("retrying in") == 2


def test_a_slow_gateway_times_out_and_is_retried(stub):
    # Every retry answers "fast": a retry that is itself late on a loaded machine is retried again.
    stub.script = [Step(delay=1.0)]
    stub.default = Step(content="fast")
    assert chat(gateway(stub.base_url, timeout=0.3)).content == "fast"
    assert len(stub.calls) >= 2


def test_cost_comes_from_usage_cost_when_reported(stub):
    stub.script = [Step(usage={"prompt_tokens": 1000, "completion_tokens": 500, "cost": 0.00421})]
    result = chat(gateway(stub.base_url))
    assert (result.cost_usd, result.cost_source, result.price_known) == (Decimal("0.004210"), "gateway", True)


def test_cost_comes_from_the_price_table_otherwise(stub):
    """claude-3.5-sonnet at $3 in / $15 out per million: 1,000 in + 500 out = $0.0105."""
    result = chat(gateway(stub.base_url))
    assert (result.cost_usd, result.cost_source) == (Decimal("0.010500"), "price_table")


def test_the_price_table_can_be_overridden(stub):
    prices = load_prices('{"acme/house-model": {"input": 1, "output": 2}, "anthropic/claude-3.5-sonnet": '
                         '{"input": 6, "output": 30}}')
    gw = gateway(stub.base_url, prices=prices)
    assert chat(gw, "acme/house-model").cost_usd == Decimal("0.002000")
    assert chat(gw).cost_usd == Decimal("0.021000")


def test_an_unknown_model_costs_zero_and_is_flagged(stub, caplog):
    result = chat(gateway(stub.base_url), "acme/mystery-9")
    assert (result.cost_usd, result.cost_source, result.price_known) == (Decimal("0"), "unknown_price", False)
    assert (result.tokens_in, result.tokens_out) == (1000, 500)
    assert "no price known for model acme/mystery-9" in caplog.text


def test_tools_go_out_and_tool_calls_come_back_in_openai_format(stub):
    from mcc.runtime.tools import LIST_PARTICIPANTS

    tools = [LIST_PARTICIPANTS.spec()]
    call = {"id": "call_1", "type": "function", "function": {"name": "list_participants", "arguments": "{}"}}
    stub.script = [Step(content=None, tool_calls=[call])]
    result = chat(gateway(stub.base_url), tools=tools)
    assert stub.calls[0].body["tools"] == [{"type": "function", "function": {
        "name": "list_participants", "description": tools[0]["function"]["description"],
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}]
    assert result.tool_calls == [call]
    assert result.assistant_message == {"role": "assistant", "content": None, "tool_calls": [call]}
    chat(gateway(stub.base_url))
    assert "tools" not in stub.calls[1].body  # an agent without tools sends none


def test_usage_accounting_is_asked_for_only_when_configured(stub):
    chat(gateway(stub.base_url, usage_accounting=True))
    chat(gateway(stub.base_url, usage_accounting=False))
    assert stub.calls[0].body["usage"] == {"include": True}
    assert "usage" not in stub.calls[1].body


def test_usage_accounting_defaults_to_on_for_openrouter_only(tmp_path):
    from mcc.config import load_config

    base = {"MCC_INSTANCE_PATH": str(tmp_path), "MCC_SECRET_KEY": "x"}
    assert load_config(base)["MCC_LLM_USAGE_ACCOUNTING"] is True  # default base URL: OpenRouter
    assert load_config({**base, "MCC_LLM_BASE_URL": "http://127.0.0.1:8000/v1"})["MCC_LLM_USAGE_ACCOUNTING"] is False
    assert load_config({**base, "MCC_LLM_BASE_URL": "http://litellm:4000", "MCC_LLM_USAGE_ACCOUNTING": "1"})[
        "MCC_LLM_USAGE_ACCOUNTING"] is True


def test_an_answer_without_choices_is_an_error(stub):
    stub.script = [Step(body={"id": "x", "usage": {}})]
    with pytest.raises(LLMError, match="no choices"):
        chat(gateway(stub.base_url))


def test_without_an_api_key_the_simulated_provider_answers_deterministically(stub, caplog):
    caplog.set_level(logging.INFO, logger="mcc.llm.gateway")
    gw = gateway(stub.base_url, api_key=None)
    first, second = chat(gw), chat(gw)
    assert not stub.calls  # no HTTP at all
    assert gw.simulated and first.simulated
    assert first.content == second.content and first.content.startswith("[simulated reply")
    assert "plan the login page" in first.content
    assert first.tokens_in > 0 and first.tokens_out > 0
    assert (first.cost_usd, first.cost_source) == (Decimal("0"), "simulated")
    assert "simulated LLM answer" in caplog.text


# --- streaming and cancellation --------------------------------------------------------------------

def test_a_streamed_answer_is_put_back_together_word_by_word_with_its_tool_calls(stub):
    call = {"id": "call_7", "type": "function", "function": {"name": "list_participants", "arguments": "{}"}}
    stub.script = [Step(content="three streamed words", tool_calls=[call],
                        usage={"prompt_tokens": 40, "completion_tokens": 9, "cost": 0.0007})]
    result = chat(gateway(stub.base_url))
    assert stub.calls[0].chunks_sent == 6  # 3 words, 1 tool call, the finish, the usage
    assert (result.content, result.tool_calls) == ("three streamed words", [call])
    assert (result.tokens_in, result.tokens_out, result.cost_usd, result.cost_source) == (
        40, 9, Decimal("0.000700"), "gateway")


def test_a_stream_without_usage_is_estimated_from_what_came(stub):
    stub.script = [Step(content="word " * 40, stream_usage=False)]
    result = chat(gateway(stub.base_url))
    assert result.tokens_out >= 40 and result.tokens_in > 0 and result.cost_usd > 0


def test_cancelling_closes_the_stream_at_once_and_keeps_what_came(stub):
    """A slow stream (a word every 50 ms for a minute) stopped from another thread after ~0.5 s."""
    stub.script = [Step(content="tok " * 1200, chunk_delay=0.05)]
    token = CancelToken()
    cancelled = []

    def cancel():  # latency counts from the cancel, not from when the timer was armed
        cancelled.append(time.time())
        token.cancel("emergency pause")

    timer = threading.Timer(0.5, cancel)
    timer.start()
    with pytest.raises(LLMCancelled, match="emergency pause") as caught:
        chat(gateway(stub.base_url), cancel=token)
    assert time.time() - cancelled[0] < 1.0
    partial = caught.value.partial
    assert 4 <= partial.tokens_out <= 20 and partial.content.startswith("tok tok")
    # 3 $/M in, 15 $/M out: the price table on the streamed tokens, marked as an estimate.
    assert partial.cost_source == "estimated" and partial.cost_usd > 0
    stub_call = stub.calls[0]
    assert stub_call.finished.wait(5)  # the stub notices the hang-up at its next write
    assert stub_call.closed_at is not None and not stub_call.completed
    assert stub_call.closed_at - cancelled[0] < 1.0


def test_a_call_cancelled_before_it_starts_sends_nothing(stub):
    token = CancelToken()
    token.cancel("conversation paused")
    with pytest.raises(LLMCancelled) as caught:
        chat(gateway(stub.base_url), cancel=token)
    assert not stub.calls and caught.value.partial.tokens_out == 0 and caught.value.partial.cost_usd == 0


def test_a_stream_that_breaks_without_a_cancel_is_an_error(stub):
    # Every attempt breaks: one that times out before its headers (a slow stub) is retried, and the
    # retry must break too rather than answer in full.
    stub.default = Step(content="half an answer", stream_usage=False, chunk_delay=0.3)
    with pytest.raises(LLMError, match="stream broke|ended before"):
        chat(gateway(stub.base_url, timeout=0.1))
