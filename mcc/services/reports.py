"""Budget and analytics reports. They read the daily rollup, not the ledger, so a year of heavy
use (a million ledger rows) costs a scan of a few thousand rollup rows at most."""
from __future__ import annotations

import bisect
import math
from datetime import date
from decimal import Decimal

from sqlalchemy import case, func, select

from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.budget import BudgetLimit, CostDaily
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.services import budget
from mcc.services.periods import current_period, local_date, periods_between


def _money(value) -> float:
    return float(round(Decimal(value or 0), 6))


def _spent_between(start: date, end: date) -> Decimal:
    return Decimal(db.session.scalar(select(func.coalesce(func.sum(CostDaily.cost_usd), 0))
                                     .where(CostDaily.day >= start, CostDaily.day < end)))


def summary() -> dict:
    """Today/week/month spent against the matching global limit, and limits over their threshold."""
    global_limits = db.session.scalars(select(BudgetLimit).where(BudgetLimit.scope_type == "global")).all()
    result = {}
    for name, kind, period_name in (("today", "day", "daily"), ("week", "week", "weekly"),
                                    ("month", "month", "monthly")):
        period = current_period(kind)
        spent = _spent_between(period.start, period.end)
        amounts = [Decimal(l.amount_usd) for l in global_limits if l.period == period_name]
        limit = min(amounts) if amounts else None
        result[name] = {"spent": _money(spent), "limit": _money(limit) if limit is not None else None,
                        "percentage": round(float(spent / limit), 4) if limit else None}
    result["alerts"] = current_alerts()
    return result


def current_alerts() -> list[dict]:
    alerts = []
    for limit in db.session.scalars(select(BudgetLimit).order_by(BudgetLimit.created_at)):
        period = budget.limit_period(limit)
        spent = budget.spent_from_rollup(limit, period)
        amount = Decimal(limit.amount_usd)
        ratio = float(spent / amount)
        if ratio < limit.alert_threshold:
            continue
        level = "critical" if spent >= amount else "warning"
        alerts.append({"type": level, "limit_id": str(limit.id), "scope": budget.scope_object(limit),
                       "current": _money(spent), "limit": _money(amount), "percentage": round(ratio, 4),
                       "message": f"{budget.scope_label(limit)} at {ratio:.0%} of {limit.period} limit"})
    return alerts


def default_range() -> tuple[date, date]:
    month = current_period("month")
    return month.start, local_date()


def _range_filter(query, start: date, end: date):
    return query.where(CostDaily.day >= start, CostDaily.day <= end)


def spend_by(entity: str, start: date, end: date, page: int, limit: int) -> tuple[list[dict], int]:
    """Spend, tokens, LLM calls and agent messages per project or agent over start..end."""
    model, column = (Project, CostDaily.project_id) if entity == "project" else (Agent, CostDaily.agent_id)
    totals = _range_filter(select(
        column.label("entity_id"), func.sum(CostDaily.cost_usd).label("spent"),
        func.sum(CostDaily.tokens_in).label("tokens_in"), func.sum(CostDaily.tokens_out).label("tokens_out"),
        func.sum(CostDaily.calls).label("calls"), func.sum(CostDaily.messages).label("messages"),
    ).where(column.is_not(None)).group_by(column), start, end).subquery()
    total = db.session.scalar(select(func.count()).select_from(totals))
    columns = [model, totals]
    rows = db.session.execute(select(*columns).join(totals, totals.c.entity_id == model.id)
                              .order_by(totals.c.spent.desc(), model.id).offset((page - 1) * limit).limit(limit))
    items = []
    for row in rows:
        entity_obj = row[0]
        item = {"id": str(entity_obj.id), "name": entity_obj.name, "spent": _money(row.spent),
                "tokens_in": int(row.tokens_in), "tokens_out": int(row.tokens_out), "calls": int(row.calls),
                "messages": int(row.messages)}
        if entity == "agent":
            item.update(type=entity_obj.type, project_id=str(entity_obj.project_id))
        items.append(item)
    return items, total


def timeline(start: date, end: date, granularity: str) -> list[dict]:
    """One point per period from start to end, zero periods included."""
    rows = db.session.execute(_range_filter(select(
        CostDaily.day, func.sum(CostDaily.cost_usd), func.sum(CostDaily.tokens_in), func.sum(CostDaily.tokens_out),
        func.sum(CostDaily.calls)).group_by(CostDaily.day), start, end)).all()
    periods = periods_between(granularity, start, end)
    points = {p.start: {"period_start": p.start.isoformat(), "spent": Decimal(0), "tokens_in": 0, "tokens_out": 0,
                        "calls": 0} for p in periods}
    starts = [p.start for p in periods]
    for day, spent, tokens_in, tokens_out, calls in rows:
        point = points[starts[bisect.bisect_right(starts, day) - 1]]
        point["spent"] += Decimal(spent)
        point["tokens_in"] += int(tokens_in)
        point["tokens_out"] += int(tokens_out)
        point["calls"] += int(calls)
    return [{**point, "spent": _money(point["spent"])} for point in points.values()]


def agent_metrics(page: int, limit: int) -> tuple[list[dict], int]:
    total = db.session.scalar(select(func.count()).select_from(Agent))
    agents = db.session.scalars(select(Agent).order_by(Agent.created_at, Agent.id)
                                .offset((page - 1) * limit).limit(limit)).all()
    ids = [a.id for a in agents]
    spend = {row[0]: row[1:] for row in db.session.execute(
        select(CostDaily.agent_id, func.sum(CostDaily.cost_usd), func.sum(CostDaily.messages))
        .where(CostDaily.agent_id.in_(ids)).group_by(CostDaily.agent_id))}
    tasks = {row[0]: row[1:] for row in db.session.execute(
        select(Task.assigned_agent_id, func.sum(case((Task.status == "completed", 1), else_=0)),
               func.sum(case((Task.status == "failed", 1), else_=0)))
        .where(Task.assigned_agent_id.in_(ids)).group_by(Task.assigned_agent_id))}
    items = []
    for agent in agents:
        cost, messages = spend.get(agent.id, (0, 0))
        completed, failed = (int(x or 0) for x in tasks.get(agent.id, (0, 0)))
        cost, messages = Decimal(cost or 0), int(messages or 0)
        finished = completed + failed
        items.append({"id": str(agent.id), "name": agent.name, "type": agent.type,
                      "project_id": str(agent.project_id), "metrics": {
                          "total_messages": messages, "total_cost": _money(cost),
                          "avg_cost_per_message": _money(cost / messages) if messages else None,
                          "tasks_completed": completed,
                          "success_rate": round(completed / finished, 4) if finished else None,
                          "cost_per_completed_task": _money(cost / completed) if completed else None}})
    return items, total


def pages(total: int, limit: int) -> int:
    return math.ceil(total / limit) if total else 0
