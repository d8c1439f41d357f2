"""The worker pool (the Procfile's `worker:` line): turns waiting on the model overlap in one
process, never more of them at once than MCC_MAX_CONCURRENT_CALLS."""
from __future__ import annotations

import threading
import time
import uuid

from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import start_runtime  # noqa: F401  (fixture)


def test_one_worker_process_overlaps_slow_calls_up_to_MCC_MAX_CONCURRENT_CALLS(start_runtime, llm, app):  # noqa: F811
    rt = start_runtime(MCC_MAX_CONCURRENT_CALLS="4")
    release = threading.Event()  # the calls wait for it: how many overlap does not hang on how fast we post
    llm.default = Step(content="done", delay=1.0, hold=release, usage={"prompt_tokens": 10, "completion_tokens": 5})
    teams = [make_team(app, (f"Agent{i}", "coder", "anthropic/claude-3.5-sonnet"), title=f"chat {uuid.uuid4().hex[:6]}")
             for i in range(10)]
    try:
        for team in teams:
            rt.post(team["project"], team["conversation"], "go")
        rt.wait_for(lambda: llm.in_flight >= 4, interval=0.05)
        time.sleep(0.5)  # a fifth call, were it let through, would be in flight by now
        assert llm.max_in_flight == 4, llm.max_in_flight
    finally:
        release.set()

    def all_answered():
        return all(any(m["author_type"] == "agent" for m in rt.messages(t["project"], t["conversation"]))
                   for t in teams)

    rt.wait_for(all_answered, timeout=60)
    assert len(llm.calls) == 10
    # One process ran several calls at once (a forking worker would show 1), and never more than the bound.
    assert llm.max_in_flight == 4, llm.max_in_flight
