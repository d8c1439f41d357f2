"""Operating the runtime: the request id in a job's log lines, periodic jobs on RQ's scheduler, /readyz."""
from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import requests

from tests.factories import make_agent, make_project, make_spend, make_user
from tests.workers.conftest import make_team
from tests.workers.helpers import (agent_replies, db_rows, flask_cli, runtime, start_runtime,  # noqa: F401
                                   wait_until_listening)

pytestmark = pytest.mark.live

SONNET = "anthropic/claude-3.5-sonnet"


def test_a_turns_worker_log_lines_carry_the_request_id_of_the_post_that_caused_it(runtime, llm, app):
    from mcc.models.turn import Turn

    team = make_team(app, ("Senior Architect", "architect", SONNET))
    request_id = f"post-{uuid.uuid4().hex}"
    sent = requests.post(
        f"{runtime.base}/api/v1/projects/{team['project']}/conversations/{team['conversation']}/messages",
        json={"content": "Plan the login page"}, timeout=15,
        headers={"Authorization": f"Bearer {runtime.token}", "X-Request-ID": request_id})
    assert sent.status_code == 201, sent.text
    runtime.wait_for(lambda: agent_replies(runtime, team))
    turn = db_rows(app, Turn, conversation_id=uuid.UUID(team["conversation"]))[0]
    lines = runtime.wait_for(lambda: [line for line in runtime.logs().splitlines() if str(turn.id) in line
                                      and "answered" in line])
    # The line the turn engine writes when the turn ends names the request, its job and the turn.
    assert f"[{request_id} job=" in lines[0] and f"turn={turn.id}]" in lines[0], lines
    turn_lines = [line for line in runtime.logs().splitlines() if f"turn={turn.id}" in line]
    assert len(turn_lines) >= 2 and all(request_id in line for line in turn_lines), turn_lines


def test_periodic_jobs_run_on_their_schedule_once_per_slot_with_two_workers(start_runtime, app, runtime_env):
    """Token purge and rollup reconciliation every 2 s: each slot runs once although two workers schedule."""
    from mcc.extensions import db
    from mcc.models.auth import RefreshToken
    from mcc.models.budget import CostDaily
    from mcc.models.types import utcnow

    with app.app_context():
        user = make_user("viewer", username="expiring")
        expired = str(uuid.uuid4())
        db.session.add(RefreshToken(jti=expired, user_id=user.id, family_id=uuid.uuid4(),
                                    expires_at=utcnow() - timedelta(minutes=1)))
        project = make_project()
        agent = make_agent(project)
        make_spend(project, agent, cost_usd="1.25")  # in the ledger, missing from the rollup
        db.session.commit()
        project_id = project.id

    rt = start_runtime(workers=2, MCC_TOKEN_PURGE_INTERVAL="2", MCC_ROLLUP_RECONCILE_INTERVAL="2",
                       MCC_GITHUB_SYNC_INTERVAL="0")
    rt.wait_for(lambda: not db_rows(app, RefreshToken, jti=expired), timeout=30)
    rollup = rt.wait_for(lambda: db_rows(app, CostDaily, project_id=project_id), timeout=30)
    assert sum(row.cost_usd for row in rollup) == Decimal("1.25")

    listed = flask_cli(rt.env, "jobs", "--scheduled", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["purge-expired-tokens"]["interval_seconds"] == 2
    assert rows["github-sync-all"]["schedule"].startswith("off")

    def purge_lines():
        return [line for line in rt.logs().splitlines() if "purged" in line]

    def slots_of(lines):
        return [re.search(r"job=mcc-periodic-purge-expired-tokens-(\d+)", line).group(1) for line in lines]

    # A few more slots (as many seconds as the loaded machine's scheduler takes to run them).
    rt.wait_for(lambda: len(set(slots_of(purge_lines()))) >= 3, timeout=30)
    purges = purge_lines()
    slots = slots_of(purges)
    assert len(slots) == len(set(slots)), purges  # no slot ran twice
    assert sum(row.cost_usd for row in db_rows(app, CostDaily, project_id=project_id)) == Decimal("1.25")


def test_the_purge_job_is_listed_with_its_schedule(test_env):
    listed = flask_cli(test_env, "jobs", "--scheduled")
    assert listed.returncode == 0, listed.stderr
    purge = next(line for line in listed.stdout.splitlines() if "purge" in line)
    assert "every 86400 s" in purge


def test_readiness_reports_migrations_and_workers(start_runtime, app):
    rt = start_runtime(workers=0)
    ready = requests.get(f"{rt.base}/readyz", timeout=5)
    assert ready.status_code == 200  # the web role is ready without workers
    body = ready.json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["informational"]["migrations"] == "ok"
    assert body["informational"]["workers"].startswith("no live worker")
    worker = rt.start_worker()
    rt.workers.append(worker)
    wait_until_listening(rt, [worker])
    assert requests.get(f"{rt.base}/readyz", timeout=5).json()["informational"]["workers"] == "ok"
