"""The daily cost rollup, kept in step with the ledger (same transaction)."""
from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mcc.extensions import db
from mcc.models.budget import CostDaily


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
