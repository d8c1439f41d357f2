"""Concurrent calls against one block limit: the atomic reservation keeps spend within it."""
from __future__ import annotations

import threading
import uuid
from decimal import Decimal

from mcc.extensions import db
from mcc.models.turn import LedgerEntry
from mcc.services import budget, emergency
from mcc.runtime import gate
from mcc.services.agents import create_agent
from mcc.services.periods import current_period
from mcc.services.projects import create_project

SONNET = "anthropic/claude-3.5-sonnet"


def test_fifty_concurrent_calls_never_pass_a_block_limit(app, committed_db):
    """50 threads reserve, call and settle at once against real Redis and PostgreSQL."""
    with app.app_context():
        project = create_project({"name": "Race", "github_repo": f"octo/race-{uuid.uuid4().hex[:8]}"})
        agent = create_agent(project.id, {"name": "Racer", "type": "coder", "model_config": {
            "model": SONNET, "temperature": 0.1, "max_tokens": 1000}})
        block = budget.create_limit({"name": "tight", "scope_type": "global", "scope_id": None,
                                     "amount_usd": Decimal("0.20"), "period": "daily",
                                     "alert_threshold": 0.8, "action_on_exceed": "block"})
        db.session.commit()
        project_id, agent_id, limit_id = project.id, agent.id, block.id
    outcomes: list[str] = []
    start = threading.Barrier(50)

    def one_call():
        with app.app_context():
            reservation, checks = budget.plan_reservation(project_id, agent_id, SONNET, [], 1000)
            db.session.rollback()  # give the pooled connection back while waiting for the others
            start.wait()
            try:
                call = gate.acquire_llm_call(
                    emergency.state_from_database, [(k, l, a) for k, l, a, _, _ in checks],
                    lambda i: budget.to_micro(budget.spent_from_rollup(checks[i][3], checks[i][4])))
            except gate.BudgetRefused:
                outcomes.append("refused")
                return
            # The real cost is within the reserved worst case (no prompt, 1000 output tokens).
            entry = LedgerEntry(project_id=project_id, agent_id=agent_id, model=SONNET, tokens_in=0,
                                tokens_out=1000, cost_usd=Decimal("0.015"))
            db.session.add(entry)
            db.session.flush()
            budget.record_call(entry, None)
            db.session.commit()
            budget.settle(reservation, entry)
            db.session.commit()
            gate.release_llm_call(call)
            outcomes.append("called")

    threads = [threading.Thread(target=one_call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        from mcc.models.budget import BudgetLimit

        spent = budget.spent_from_rollup(db.session.get(BudgetLimit, limit_id), current_period("day"))
    called = outcomes.count("called")
    assert len(outcomes) == 50
    assert called >= 5, outcomes
    assert spent == called * Decimal("0.015")
    assert spent <= Decimal("0.20")
