"""Stop controls with real workers: conversation pause/resume, pause-all/resume-all, the CLI."""
from __future__ import annotations

import re
import time
import uuid

import pytest
import requests
from redis import Redis

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import (SONNET, Listener, agent_replies, db_rows, flask_cli,  # noqa: F401
                                   runtime, start_runtime, who_is_asked)

pytestmark = pytest.mark.live

USAGE = {"prompt_tokens": 10, "completion_tokens": 5}


def _turn_statuses(app, team) -> list[str]:
    from mcc.models.turn import Turn

    return sorted(t.status for t in db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"])))


def _conversation_path(team) -> str:
    return f"/projects/{team['project']}/conversations/{team['conversation']}"


# --- conversation pause ---------------------------------------------------------------------------

def test_a_paused_conversation_stores_messages_and_resume_answers_each_in_order(runtime, llm, app):
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.responder = lambda body: Step(content=f"answer to {body['messages'][-1]['content'].split(': ', 1)[1]}",
                                      usage=USAGE)
    paused = runtime.api("POST", _conversation_path(team) + "/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    first = runtime.post(team["project"], team["conversation"], "first")
    second = runtime.post(team["project"], team["conversation"], "second")
    runtime.wait_for(lambda: _turn_statuses(app, team) == ["held", "held"])
    time.sleep(1)
    assert not llm.calls and not agent_replies(runtime, team)
    assert [m["content"] for m in runtime.messages(team["project"], team["conversation"])] == ["first", "second"]

    resumed = runtime.api("POST", _conversation_path(team) + "/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    replies = runtime.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(agent_replies(runtime, team)))
    assert [(r["content"], r["reply_to"]) for r in replies] == [("answer to first", first["id"]),
                                                                ("answer to second", second["id"])]
    time.sleep(0.5)
    assert len(llm.calls) == 2 and _turn_statuses(app, team) == ["succeeded", "succeeded"]


def test_pause_closes_the_running_call_and_resume_answers_the_message_again(runtime, llm, app):
    """Pausing used to let the running call finish and bill; now it closes the stream within a
    second, the partial call is on record, the turn ends cancelled, and a copy of it waits for the
    resume (the work is kept, the half-streamed answer is not used)."""
    from mcc.models.turn import LedgerEntry

    team = make_team(app, ("Ada", "architect", SONNET), ("Bob", "coder", SONNET))
    llm.responder = lambda body: (Step(content="thinking " * 300, chunk_delay=0.05, usage=USAGE)
                                  if who_is_asked(body) == "Ada" else Step(content="Bob here", usage=USAGE))
    start = runtime.post(team["project"], team["conversation"], "@Ada start")
    runtime.wait_for(lambda: llm.calls and llm.calls[0].chunks_sent >= 3, interval=0.05)
    assert runtime.api("POST", _conversation_path(team) + "/pause").status_code == 200
    paused = time.time()
    runtime.wait_for(lambda: _turn_statuses(app, team) == ["cancelled", "held"])
    # The stub notes the hang-up only at its next write, which can come after the turn's end.
    assert llm.calls[0].finished.wait(5)
    assert llm.calls[0].closed_at is not None and llm.calls[0].closed_at - paused < 1.0
    assert not llm.calls[0].completed
    [entry] = db_rows(app, LedgerEntry, conversation_id=uuid.UUID(team["conversation"]))
    assert entry.tokens_out > 0 and entry.cost_source == "estimated"
    [note] = [m for m in runtime.messages(team["project"], team["conversation"]) if m["author_type"] == "system"]
    assert note["content"].startswith("Ada was stopped: the conversation was paused.")
    assert note["content"].endswith("It answers again once the pause is lifted.")
    time.sleep(1)
    assert len(llm.calls) == 1 and not agent_replies(runtime, team)

    llm.responder = lambda body: Step(content="@Bob over to you" if who_is_asked(body) == "Ada" else "Bob here",
                                      usage=USAGE)
    runtime.api("POST", _conversation_path(team) + "/resume")
    ada, bob = runtime.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(agent_replies(runtime, team)))
    assert (ada["agent"]["name"], ada["reply_to"]) == ("Ada", start["id"])
    assert (bob["agent"]["name"], bob["reply_to"]) == ("Bob", ada["id"])


# --- pause-all --------------------------------------------------------------------------------------

def _ping_pong(body) -> Step:
    other = "Pong" if who_is_asked(body) == "Ping" else "Ping"
    return Step(content=f"@{other} your turn", delay=0.2, usage=USAGE)


def test_pause_all_stops_every_new_call_among_20_chains_and_resume_all_continues(start_runtime, llm, app):
    """20 conversations hand work back and forth on 2 workers; from pause-all's answer on, no call starts."""
    runtime = start_runtime(workers=2, MCC_MAX_CHAIN="1000")
    teams = [make_team(app, ("Ping", "coder", SONNET), ("Pong", "tester", SONNET), title=f"Chain {i}")
             for i in range(20)]
    llm.responder = _ping_pong
    for team in teams:
        runtime.post(team["project"], team["conversation"], "@Ping start")
    runtime.wait_for(lambda: len(llm.calls) >= 12, interval=0.05)

    response = runtime.api("POST", "/emergency/pause-all", json={"reason": "load test"})
    returned = time.time()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "All agents paused. Manual resume required."
    assert body["paused_agents"] >= 40 and body["active_conversations"] >= 20
    calls_before = len(llm.calls)
    time.sleep(2)
    late = llm.calls_after(returned)
    assert not late, f"{len(late)} LLM call(s) started after pause-all returned: " \
                     f"{[round(c.at - returned, 3) for c in late]}"

    def settled():  # the workers end the turns whose calls pause-all closed in their own time (maybe after 2 s)
        statuses = [s for team in teams for s in _turn_statuses(app, team)]
        return "running" not in statuses and "held" in statuses

    runtime.wait_for(settled)
    # A turn held before its call leaves its agent idle, not "working" for the length of the pause.
    from mcc.models.agent import Agent
    runtime.wait_for(lambda: {a.status for a in db_rows(app, Agent)} == {"idle"})
    assert not llm.calls_after(returned)  # nor did one start while they settled
    progressed = sum(1 for team in teams if "succeeded" in _turn_statuses(app, team))
    print(f"{calls_before} calls before the pause, {progressed} of 20 conversations had answers")

    admin = runtime.login("admin")
    assert runtime.api("POST", "/emergency/resume-all").status_code == 403  # operators cannot resume
    resumed = runtime.api("POST", "/emergency/resume-all", token=admin)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["resumed_by"] == "admin" and resumed.json()["resumed_conversations"] >= 1
    replies_before = sum(len(agent_replies(runtime, team)) for team in teams)
    runtime.wait_for(lambda: len(llm.calls_after(returned)) >= 10)
    runtime.wait_for(lambda: sum(len(agent_replies(runtime, team)) for team in teams) >= replies_before + 10)
    # Stop the chains so the workers can shut down quickly.
    assert runtime.api("POST", "/emergency/pause-all", json={"reason": "end of test"}).status_code == 200


def test_pause_all_is_announced_to_every_client_recorded_and_resumed_by_an_admin(start_runtime, llm, app):
    from mcc.models.control import EmergencyEvent, Notification

    runtime = start_runtime()
    team = make_team(app, ("Ada", "architect", SONNET))
    admin = runtime.login("admin")
    listeners = [Listener(runtime.base, runtime.token), Listener(runtime.base, admin)]
    try:
        response = runtime.api("POST", "/emergency/pause-all", json={"reason": "runaway costs"})
        assert response.status_code == 200
        assert set(response.json()) >= {"paused_agents", "active_conversations", "message"}
        for listener in listeners:
            # Socket.IO's Redis channel is shared by every Redis database: skip other runs' events.
            event = listener.next("emergency_pause", where=lambda d: d["reason"] == "runaway costs")
            assert event["triggered_by"] == "user"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["timestamp"])
        status = runtime.api("GET", "/emergency/status").json()
        assert status == {"status": "paused", "triggered_by": "user", "actor": "operator",
                          "reason": "runaway costs", "timestamp": event["timestamp"]}
        # Work posted during the pause is held, not dropped.
        runtime.post(team["project"], team["conversation"], "anyone?")
        runtime.wait_for(lambda: _turn_statuses(app, team) == ["held"])
        time.sleep(1)
        assert not llm.calls

        assert runtime.api("POST", "/emergency/resume-all", token=admin).status_code == 200
        assert listeners[0].next("emergency_resume")["resumed_by"] == "admin"
        runtime.wait_for(lambda: agent_replies(runtime, team))
        assert runtime.api("GET", "/emergency/status").json() == {"status": "running"}
        assert runtime.api("POST", "/emergency/resume-all", token=admin).status_code == 409
        events = sorted(db_rows(app, EmergencyEvent), key=lambda e: e.created_at)
        assert [(e.action, e.actor, e.reason) for e in events] == [("pause", "operator", "runaway costs"),
                                                                   ("resume", "admin", None)]
        kinds = {n.kind for n in db_rows(app, Notification)}
        assert {"emergency_pause", "emergency_resume"} <= kinds
    finally:
        for listener in listeners:
            listener.close()


def test_the_pause_holds_when_redis_loses_the_flag(start_runtime, llm, app):
    """The database is the source of truth: a flushed or restarted Redis does not lift the pause."""
    runtime = start_runtime()
    team = make_team(app, ("Ada", "architect", SONNET))
    assert runtime.api("POST", "/emergency/pause-all", json={}).status_code == 200
    Redis.from_url(runtime.env["REDIS_URL"]).delete("mcc:emergency", "mcc:emergency:synced")
    runtime.post(team["project"], team["conversation"], "hello?")
    runtime.wait_for(lambda: _turn_statuses(app, team) == ["held"])
    time.sleep(1)
    assert not llm.calls
    assert runtime.api("GET", "/emergency/status").json()["status"] == "paused"
    assert runtime.api("POST", "/emergency/resume-all", token=runtime.login("admin")).status_code == 200
    runtime.wait_for(lambda: agent_replies(runtime, team))


# --- the CLI ----------------------------------------------------------------------------------------

def test_cli_pause_all_status_resume_all_and_jobs(start_runtime, llm, app):
    runtime = start_runtime()
    env = runtime.env
    team = make_team(app, ("Ada", "architect", SONNET), title="CLI chat")
    assert flask_cli(env, "emergency", "status").stdout.strip() == "running"

    # A failed turn, for `jobs` to show.
    llm.script = [Step(status=400)]
    runtime.post(team["project"], team["conversation"], "fail please")
    runtime.wait_for(lambda: _turn_statuses(app, team) == ["failed"])

    listener = Listener(runtime.base, runtime.token)
    try:
        paused = flask_cli(env, "emergency", "pause-all", "--reason", "maintenance window")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("All agents paused. Manual resume required.")
        event = listener.next("emergency_pause", where=lambda d: d["reason"] == "maintenance window")
        assert event["triggered_by"] == "user"
    finally:
        listener.close()
    status = flask_cli(env, "emergency", "status").stdout.strip()
    assert re.fullmatch(r"paused by cli:\S+ \(user\) at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: maintenance window", status)
    assert runtime.api("GET", "/emergency/status").json()["status"] == "paused"

    runtime.post(team["project"], team["conversation"], "wait for me")
    runtime.wait_for(lambda: _turn_statuses(app, team) == ["failed", "held"])
    jobs = flask_cli(env, "jobs")
    assert jobs.returncode == 0, jobs.stderr
    sections = dict(re.findall(r"^(queued|held|running|failed) \((\d+)\+?\)$", jobs.stdout, re.M))
    assert sections == {"queued": "0", "held": "1", "running": "0", "failed": "1"}
    assert "agent 'Ada'  conversation 'CLI chat'" in jobs.stdout
    assert team["conversation"] in jobs.stdout and "error: the LLM gateway failed" in jobs.stdout

    resumed = flask_cli(env, "emergency", "resume-all")
    assert resumed.returncode == 0, resumed.stderr
    assert "All agents resumed." in resumed.stdout and "1 conversations had held work" in resumed.stdout
    runtime.wait_for(lambda: agent_replies(runtime, team))
    assert flask_cli(env, "emergency", "status").stdout.strip() == "running"
    again = flask_cli(env, "emergency", "resume-all")
    assert again.returncode != 0 and "Agents are not paused." in again.stderr
    assert requests.get(f"{runtime.base}/healthz", timeout=5).status_code == 200
