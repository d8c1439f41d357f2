"""Agent turns over REST (/turns) and in `flask jobs`: a failed turn is found, retried, and succeeds."""
from __future__ import annotations

import json
import uuid

import pytest

from tests.factories import make_user
from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import agent_replies, flask_cli, runtime, start_runtime  # noqa: F401

pytestmark = pytest.mark.live

SONNET = "anthropic/claude-3.5-sonnet"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500}


def _tool_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_a_reply_keeps_the_start_of_a_long_tool_call_and_the_turn_all_of_it():
    from mcc.runtime.tools import calls_of

    log = [{"call": _tool_call("c1", "submit_changes", json.dumps({"body": "x" * 50})), "result": {"ok": "y" * 50}},
           {"step_end": 1}]
    [whole] = calls_of(log)
    assert whole == {"name": "submit_changes", "arguments": json.dumps({"body": "x" * 50}), "call_id": "c1",
                     "result": {"ok": "y" * 50}}
    [shown] = calls_of(log, limit=20)
    assert shown["arguments"] == json.dumps({"body": "x" * 50})[:20] + "…"
    assert shown["result"] == json.dumps({"ok": "y" * 50})[:20] + "…"
    assert calls_of(log, limit=1000)[0]["result"] == json.dumps({"ok": "y" * 50})


def test_a_failed_turn_is_listed_shown_with_its_calls_and_succeeds_on_retry(runtime, llm, app):
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.script = [Step(content=None, tool_calls=[_tool_call("c1", "list_participants", "{}")], usage=USAGE),
                  Step(status=400)]
    runtime.post(team["project"], team["conversation"], "who is here?")
    failed = runtime.wait_for(lambda: runtime.api("GET", "/turns?status=failed").json()["items"])
    assert len(failed) == 1
    turn = failed[0]
    assert set(turn) == {"id", "status", "attempts", "project_id", "agent_id", "conversation_id", "task_id",
                         "created_at", "started_at", "finished_at", "heartbeat_age_s", "error", "cost_usd"}
    assert (turn["status"], turn["attempts"], turn["project_id"], turn["agent_id"], turn["conversation_id"]) == (
        "failed", 1, team["project"], team["agents"]["Ada"], team["conversation"])
    assert "LLM gateway failed" in turn["error"] and turn["finished_at"] and turn["heartbeat_age_s"] is None
    assert turn["cost_usd"] == pytest.approx(0.0105)  # the first call, before the failing one
    # Filters narrow; other projects' turns are not mixed in.
    assert runtime.api("GET", f"/turns?project_id={team['project']}&status=succeeded").json()["total"] == 0
    assert runtime.api("GET", f"/turns?agent_id={uuid.uuid4()}").json()["items"] == []
    assert runtime.api("GET", "/turns?status=exploded").status_code == 422

    detail = runtime.api("GET", f"/turns/{turn['id']}").json()
    assert [(c["name"], c["call_id"]) for c in detail["tool_calls"]] == [("list_participants", "c1")]
    assert detail["tool_calls"][0]["result"]["agents"] == []
    assert [(row["attempt"], row["call_index"], row["tokens_in"]) for row in detail["ledger"]] == [(1, 0, 1000)]

    jobs = flask_cli(runtime.env, "jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    listed = json.loads(jobs.stdout)
    assert [item["id"] for item in listed["failed"]["items"]] == [turn["id"]] and listed["failed"]["total"] == 1

    with app.app_context():
        make_user("viewer", username="watcher")
    viewer = runtime.login("watcher")
    assert runtime.api("POST", f"/turns/{turn['id']}/retry", token=viewer).status_code == 403
    retried = runtime.api("POST", f"/turns/{turn['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] in ("queued", "running", "succeeded") and retried.json()["error"] is None
    reply = runtime.wait_for(lambda: agent_replies(runtime, team))[0]
    done = runtime.api("GET", f"/turns/{turn['id']}").json()
    assert (done["status"], done["attempts"], done["reply_message_id"]) == ("succeeded", 2, reply["id"])
    # It continued where it stopped: the tool was not run again, the new call is attempt 2's.
    assert len(done["tool_calls"]) == 1
    # The reply shows the console the turn's tool calls, the result as JSON text.
    assert reply["metadata"]["tool_calls"] == [{"name": "list_participants", "arguments": "{}", "call_id": "c1",
                                                "result": json.dumps(done["tool_calls"][0]["result"])}]
    assert [(row["attempt"], row["call_index"]) for row in done["ledger"]] == [(1, 0), (2, 0)]
    admin = runtime.login("admin")
    [retry_audit] = runtime.api("GET", f"/audit?action=turn.retried&target_id={turn['id']}",
                                token=admin).json()["items"]
    assert retry_audit["actor"] == "operator" and "LLM gateway failed" in retry_audit["details"]["error"]
    again = runtime.api("POST", f"/turns/{turn['id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    assert runtime.api("POST", f"/turns/{uuid.uuid4()}/retry").status_code == 404


def test_cancel_a_waiting_turn_at_once_and_a_running_one_within_a_second(start_runtime, llm, app):
    import time

    runtime = start_runtime(workers=1)
    team = make_team(app, ("Ada", "architect", SONNET), ("Bob", "coder", SONNET))
    llm.default = Step(content="slow " * 600, chunk_delay=0.05, usage=USAGE)  # half a minute of streaming
    runtime.post(team["project"], team["conversation"], "@Ada first")
    runtime.post(team["project"], team["conversation"], "@Bob second")
    running = runtime.wait_for(lambda: runtime.api("GET", "/turns?status=running").json()["items"])[0]
    assert running["agent_id"] == team["agents"]["Ada"] and running["heartbeat_age_s"] is not None
    assert 0 <= running["heartbeat_age_s"] < 5
    waiting = runtime.api("GET", "/turns?status=queued").json()["items"]
    assert [t["agent_id"] for t in waiting] == [team["agents"]["Bob"]]
    cancelled = runtime.api("POST", f"/turns/{waiting[0]['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    audit = runtime.api("GET", "/audit?action=turn.cancelled", token=runtime.login("admin")).json()["items"]
    assert [(e["target_id"], e["details"]["was"]) for e in audit] == [(waiting[0]["id"], "queued")]
    runtime.wait_for(lambda: llm.calls and llm.calls[0].chunks_sent >= 3, interval=0.05)
    stopping = runtime.api("POST", f"/turns/{running['id']}/cancel")
    asked = time.time()
    assert stopping.status_code == 200 and stopping.json()["status"] == "running"
    done = runtime.wait_for(lambda: (lambda t: t if t["status"] == "cancelled" else None)(
        runtime.api("GET", f"/turns/{running['id']}").json()), interval=0.05)
    runtime.wait_for(lambda: llm.calls[0].closed_at, interval=0.05)  # the stub notices at its next writes
    assert llm.calls[0].closed_at - asked < 1.0 and not llm.calls[0].completed
    assert done["error"] == "a person cancelled the turn" and len(done["ledger"]) == 1  # the partial call
    assert len(llm.calls) == 1 and not agent_replies(runtime, team)  # Bob's turn never ran
    assert runtime.api("POST", f"/turns/{waiting[0]['id']}/cancel").status_code == 409
