"""Agent turns run by real RQ workers against the LLM stub."""
from __future__ import annotations

import pytest

from tests.stubs.llm import Step
from tests.workers.conftest import make_team

pytestmark = pytest.mark.live

SONNET = "anthropic/claude-3.5-sonnet"


def test_a_message_is_answered_with_tokens_and_cost_recorded(runtime, llm, app):
    """Price table: 1,000 in + 500 out of claude-3.5-sonnet cost $0.0105."""
    team = make_team(app, ("Senior Architect", "architect", SONNET))
    sent = runtime.post(team["project"], team["conversation"], "Plan the login page")
    replies = runtime.wait_for(lambda: [m for m in runtime.messages(team["project"], team["conversation"])
                                        if m["author_type"] == "agent"])
    reply = replies[0]
    assert reply["agent"]["name"] == "Senior Architect"
    assert reply["reply_to"] == sent["id"]
    assert (reply["tokens_in"], reply["tokens_out"]) == (1000, 500)
    assert reply["cost_usd"] == pytest.approx(0.0105)
    assert reply["metadata"]["cost_source"] == "price_table" and reply["metadata"]["simulated"] is False
    body = llm.calls[0].body
    assert body["model"] == SONNET and body["temperature"] == 0.2 and body["max_tokens"] == 1000
    assert llm.calls[0].headers["Authorization"] == "Bearer test-key"
    assert body["messages"][0]["role"] == "system" and "Senior Architect" in body["messages"][0]["content"]
    assert body["messages"][-1]["content"].endswith("Plan the login page")
