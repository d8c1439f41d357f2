"""Budget limits, the alerts raised against them, and the daily cost rollup reports read."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (CheckConstraint, Date, Float, ForeignKey, Index, Integer, Numeric, String,
                        UniqueConstraint, Uuid)
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, updated_at_column, uuid_pk

SCOPE_TYPES = ("global", "project", "agent", "task", "issue")
PERIODS = ("daily", "weekly", "monthly")
ACTIONS = ("warn", "pause", "block")


class BudgetLimit(db.Model):
    __tablename__ = "budget_limits"
    __table_args__ = (
        CheckConstraint("scope_type IN ('global', 'project', 'agent', 'task', 'issue')", name="scope_type"),
        CheckConstraint("period IN ('daily', 'weekly', 'monthly')", name="period"),
        CheckConstraint("action_on_exceed IN ('warn', 'pause', 'block')", name="action"),
        CheckConstraint("amount_usd > 0", name="amount_positive"),
        CheckConstraint("alert_threshold >= 0 AND alert_threshold <= 1", name="threshold_range"),
        Index("ix_budget_limits_scope", "scope_type", "scope_id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    scope_type: Mapped[str] = mapped_column(String(10), nullable=False)
    # A project, agent, task or issue id (no foreign key: one column serves them all; deleting a
    # project deletes the limits of its scopes in the service).
    scope_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    amount_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), nullable=False)
    period: Mapped[str] = mapped_column(String(10), nullable=False)
    alert_threshold: Mapped[float] = mapped_column(Float, nullable=False, default=0.8)
    action_on_exceed: Mapped[str] = mapped_column(String(10), nullable=False, default="warn")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class BudgetAlert(db.Model):
    """One row per limit, period and level: an alert is raised once per period."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("limit_id", "period_key", "level", name="uq_budget_alerts_once"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    limit_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("budget_limits.id", ondelete="CASCADE"), nullable=False)
    period_key: Mapped[str] = mapped_column(String(20), nullable=False)
    level: Mapped[str] = mapped_column(String(10), nullable=False)
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class CostDaily(db.Model):
    """The ledger summed per local day (MCC_TIMEZONE), project and agent: what reports read."""

    __tablename__ = "cost_daily"
    __table_args__ = (
        UniqueConstraint("day", "project_id", "agent_id", name="uq_cost_daily_key"),
        Index("ix_cost_daily_project_day", "project_id", "day"),
        Index("ix_cost_daily_agent_day", "agent_id", "day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    # SET NULL, not CASCADE: money spent stays spent when its project or agent is deleted, so the
    # global figures (reports, and the budget counters rebuilt from this table) do not drop.
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="SET NULL"))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("agents.id", ondelete="SET NULL"))
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(16, 6), nullable=False, default=Decimal("0"))
    tokens_in: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    calls: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    messages: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
