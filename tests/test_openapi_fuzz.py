"""The API keeps its own OpenAPI document: schemathesis fuzzes every operation of a real server.

Every operation served at /api/v1/openapi.json gets generated requests, valid and invalid, sent
to a real gunicorn process (the Procfile's web line) as an admin. The run fails on any 5xx, or on
a status code, content type, header or body that the document does not describe.

schemathesis runs as its CLI: its pytest integration (``schemathesis.pytest.from_fixture``, needed
for a schema served by a process a fixture starts) does not work with pytest 9. This module is
also the CLI's hooks module (SCHEMATHESIS_HOOKS), see ``before_call``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import schemathesis

from tests.factories import (PASSWORD, auth_headers, make_agent, make_conversation, make_issue, make_message,
                             make_project, make_user)
from tests.live import ROOT, start_web

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
ADMIN_ID_VAR = "MCC_FUZZ_ADMIN_ID"
# The run's size (62 operations): the coverage phase, which this does not bound, ~2,600 cases;
# fuzzing at 15 examples, ~800 more. About 90 s of CPU in all (server + schemathesis, two workers).
MAX_EXAMPLES = 15
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
# Thousands of requests from one IP, many with wrong passwords or 2FA codes: lift the per-IP
# limits and lockouts so the fuzzer sees the API's answers rather than 429s.
UNTHROTTLED = {
    "MCC_RATE_LIMIT": "1000000 per minute",
    "MCC_LOGIN_RATE_LIMIT": "1000000 per minute",
    "MCC_LOGIN_LOCKOUT": "1000000 per minute",
    "MCC_LOGIN_IP_LOCKOUT": "1000000 per minute",
    "MCC_2FA_LOCKOUT": "1000000 per minute",
    "MCC_LOG_LEVEL": "WARNING",
}


@schemathesis.hook
def before_call(context, case, kwargs):
    """In the schemathesis process: never change the account the run is authenticated as.

    The fuzzer reuses ids it has seen in responses (``/auth/me``, ``/users``). A PATCH of its own
    user to another role or to disabled voids its tokens (by design), and every later request
    would be a 401. Such a request is sent for a user that does not exist instead.
    """
    admin_id = os.environ.get(ADMIN_ID_VAR)
    if not admin_id or case.method.upper() != "PATCH" or case.operation.path != "/api/v1/users/{user_id}":
        return
    try:
        target = uuid.UUID(str((case.path_parameters or {}).get("user_id")))
    except ValueError:
        return
    if target == uuid.UUID(admin_id):
        case.path_parameters["user_id"] = str(uuid.UUID(int=0))


@pytest.mark.live
def test_every_operation_answers_as_documented(test_env, committed_db, app, tmp_path):
    """Generated requests, valid or not, get a documented answer and never a server error."""
    with app.app_context():
        admin = make_user("admin", username="fuzz-admin")
        admin_id = str(admin.id)
        # Something to find: the fuzzer reuses ids from list responses, so operations on
        # conversations, messages and issues get past 404.
        project = make_project()
        agent = make_agent(project, type="orchestrator")
        conversation = make_conversation(project, agents=[agent])
        make_message(conversation, content="hello", user=admin)
        make_issue(project)
    web, base = start_web(test_env, tmp_path / "web.log", UNTHROTTLED)
    try:
        login = requests.post(f"{base}/api/v1/auth/login",
                              json={"username": "fuzz-admin", "password": PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        command = [
            SCHEMATHESIS, "run", f"{base}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", ",".join(CHECKS),
            # Logout revokes the access token it is sent with: fuzzing it would log the run out
            # and turn every later request into a 401. tests/api/test_auth.py covers it.
            "--exclude-path", "/api/v1/auth/logout",
            # Stateful sequences are left out: they cost more than the whole budget.
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--workers", "2",
            "--request-timeout", "30",
            "--no-color",
        ]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": __name__, ADMIN_ID_VAR: admin_id,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        started = time.monotonic()
        # cwd: a directory without a schemathesis.toml, so no stray configuration applies.
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - started
    finally:
        web.stop()
    output = run.stdout + run.stderr
    print(output, f"\nschemathesis took {elapsed:.1f} s")
    assert run.returncode == 0, output
    log = (tmp_path / "web.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


# --- what the fuzzer found, pinned ----------------------------------------------------------------


def test_timeline_span_is_bounded_when_start_date_defaults(client):
    """`?end_date=4400-11-28` alone once built ~870,000 daily points (70 MB); it is a 422 now."""
    headers = auth_headers(client, make_user("viewer"))
    response = client.get("/api/v1/budget/timeline?end_date=4400-11-28", headers=headers)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["details"] == {"start_date": ["At most ten years per timeline."]}


def test_budget_amount_bounds_are_numbers_the_database_can_hold(client):
    """The document gave `"maximum": "1000000000.000000"` (a string), above NUMERIC(14, 6)."""
    spec = client.get("/api/v1/openapi.json").get_json()
    for name in ("BudgetLimitCreate", "BudgetLimitUpdate"):
        amount = spec["components"]["schemas"][name]["properties"]["amount_usd"]
        assert (amount["minimum"], amount["exclusiveMinimum"]) == (0, True)
        assert (amount["maximum"], amount["exclusiveMaximum"]) == (100_000_000, True)
    headers = auth_headers(client, make_user("admin"))
    body = {"name": "big", "scope_type": "global", "period": "daily"}
    too_big = client.post("/api/v1/budget/limits", json={**body, "amount_usd": 100_000_000}, headers=headers)
    assert too_big.status_code == 422, too_big.get_json()
    largest = client.post("/api/v1/budget/limits", json={**body, "amount_usd": 99_999_999.99}, headers=headers)
    assert largest.status_code == 201, largest.get_json()
