"""The daily cost rollup, kept in step with the ledger (same transaction)."""
from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mcc.extensions import db
from mcc.models.budget import CostDaily
from mcc.models.turn import LedgerEntry
from mcc.services.periods import Period, local_date

log = logging.getLogger(__name__)


def add_to_rollup(day: date, project_id: uuid.UUID | None, agent_id: uuid.UUID | None, cost: Decimal,
                  tokens_in: int, tokens_out: int, calls: int = 0, messages: int = 0) -> None:
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(CostDaily).values(day=day, project_id=project_id, agent_id=agent_id, cost_usd=cost,
                                         tokens_in=tokens_in, tokens_out=tokens_out, calls=calls, messages=messages)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=["day", "project_id", "agent_id"],
        set_={"cost_usd": CostDaily.cost_usd + statement.excluded.cost_usd,
              "tokens_in": CostDaily.tokens_in + statement.excluded.tokens_in,
              "tokens_out": CostDaily.tokens_out + statement.excluded.tokens_out,
              "calls": CostDaily.calls + statement.excluded.calls,
              "messages": CostDaily.messages + statement.excluded.messages}))


def reconcile(days: int = 2) -> int:
    """Make the rollup's cost, tokens and calls of the last ``days`` local days equal the ledger's.

    Both are written in one transaction, so they differ only after a bug or a hand edit; the
    difference is added as a correction. Read in one snapshot (REPEATABLE READ on PostgreSQL) so a
    call recorded meanwhile is seen in both or in neither. Returns the number of keys corrected.
    """
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    first = local_date() - timedelta(days=days - 1)
    since, _ = Period("day", first, first + timedelta(days=1)).bounds_utc()
    ledger: dict[tuple, list] = defaultdict(lambda: [Decimal(0), 0, 0, 0])
    for created_at, project_id, agent_id, cost, tokens_in, tokens_out in db.session.execute(
            select(LedgerEntry.created_at, LedgerEntry.project_id, LedgerEntry.agent_id, LedgerEntry.cost_usd,
                   LedgerEntry.tokens_in, LedgerEntry.tokens_out).where(LedgerEntry.created_at >= since)):
        totals = ledger[(local_date(created_at), project_id, agent_id)]
        totals[0] += cost
        totals[1] += tokens_in
        totals[2] += tokens_out
        totals[3] += 1
    rollup = {(day, project_id, agent_id): [cost, tokens_in, tokens_out, calls]
              for day, project_id, agent_id, cost, tokens_in, tokens_out, calls in db.session.execute(
                  select(CostDaily.day, CostDaily.project_id, CostDaily.agent_id, func.sum(CostDaily.cost_usd),
                         func.sum(CostDaily.tokens_in), func.sum(CostDaily.tokens_out), func.sum(CostDaily.calls))
                  .where(CostDaily.day >= first)
                  .group_by(CostDaily.day, CostDaily.project_id, CostDaily.agent_id))}
    corrected = 0
    for key in set(ledger) | set(rollup):
        want, have = ledger.get(key, [Decimal(0), 0, 0, 0]), rollup.get(key, [Decimal(0), 0, 0, 0])
        delta = [w - (h or 0) for w, h in zip(want, have)]
        if any(delta):
            add_to_rollup(key[0], key[1], key[2], delta[0], delta[1], delta[2], calls=delta[3])
            corrected += 1
    db.session.commit()
    if corrected:
        log.warning("the cost rollup differed from the ledger for %s day/project/agent keys: corrected",
                    corrected)
    return corrected
