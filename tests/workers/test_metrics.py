"""GET /metrics with the Procfile's processes: what any web process serves is read from Redis and
the database at scrape time, so a second web process reports what the first one saw."""
from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.live import start_web
from tests.stubs.llm import Step
from tests.workers.conftest import make_team
from tests.workers.helpers import Listener, agent_replies, runtime, start_runtime  # noqa: F401

pytestmark = pytest.mark.live

SONNET = "anthropic/claude-3.5-sonnet"
TOKEN = "metrics-token-0123456789"
MESSAGES_ROUTE = "/api/v1/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/messages"


def scrape(base: str) -> dict:
    response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels) -> float:
    matching = [v for got, v in samples[name] if all(got.get(k) == w for k, w in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_metrics_are_read_at_scrape_time_by_any_web_process(start_runtime, llm, app, tmp_path):
    runtime = start_runtime(MCC_METRICS_TOKEN=TOKEN)
    team = make_team(app, ("Ada", "architect", SONNET))
    llm.default = Step(content="done", usage={"prompt_tokens": 1000, "completion_tokens": 500})
    listener = Listener(runtime.base, runtime.token)
    other, other_base = start_web(runtime.env, tmp_path / "web-b.log")
    try:
        runtime.post(team["project"], team["conversation"], "Plan it")
        runtime.wait_for(lambda: agent_replies(runtime, team))
        assert requests.get(f"{runtime.base}/metrics", timeout=5).status_code == 401
        wrong = requests.get(f"{runtime.base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "UNAUTHORIZED"

        def flushed():  # each process writes what it saw to Redis within a second
            samples = scrape(other_base)  # the other process: it served none of the requests above
            counts = {(labels["route"], labels["status"]): v
                      for labels, v in samples.get("mcc_http_request_duration_seconds_count", [])}
            return samples if (counts.get((MESSAGES_ROUTE, "201")) == 1 and counts.get(("/metrics", "401")) == 2
                               and samples.get("mcc_socket_connections")) else None

        samples = runtime.wait_for(flushed, timeout=10)
        assert value(samples, "mcc_emergency_paused") == 0
        assert value(samples, "mcc_turns", status="succeeded") == 1
        assert value(samples, "mcc_turns", status="failed") == 0
        assert value(samples, "mcc_workers") == 1  # one process, however many loops its pool runs
        assert value(samples, "mcc_worker_slots") == int(runtime.env.get("MCC_MAX_CONCURRENT_CALLS", 100))
        assert value(samples, "mcc_queue_jobs", queue="agent", state="queued") >= 0
        assert value(samples, "mcc_queue_jobs", queue="default", state="failed") == 0
        assert value(samples, "mcc_llm_calls_in_flight") == 0
        assert value(samples, "mcc_project_spend_today_usd", project_id=team["project"]) == pytest.approx(0.0105)
        assert sum(v for _, v in samples["mcc_socket_connections"]) == 1
        assert value(samples, "mcc_http_request_duration_seconds_count", route=MESSAGES_ROUTE, method="POST",
                     status="201") == 1
        assert value(samples, "mcc_http_request_duration_seconds_bucket", route=MESSAGES_ROUTE, method="POST",
                     status="201", le="+Inf") == 1
        assert value(samples, "mcc_http_request_duration_seconds_sum", route=MESSAGES_ROUTE, method="POST",
                     status="201") > 0
        assert value(samples, "mcc_http_request_duration_seconds_count", route="/metrics", method="GET",
                     status="401") == 2

        runtime.api("POST", "/emergency/pause-all", json={"reason": "metrics"})
        assert value(scrape(runtime.base), "mcc_emergency_paused") == 1
    finally:
        listener.close()
        other.stop()


def test_metrics_answer_404_while_no_token_is_configured(client):
    response = client.get("/metrics")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "RESOURCE_NOT_FOUND"
