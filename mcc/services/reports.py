"""Budget and analytics reports. They read the daily rollup, not the ledger, so a year of heavy
use (a million ledger rows) costs a scan of a few thousand rollup rows at most."""
from __future__ import annotations

import bisect
import math
import uuid
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import case, func, select

from mcc.extensions import db
from mcc.models.agent import Agent
from mcc.models.budget import BudgetLimit, CostDaily
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.models.turn import LedgerEntry
from mcc.services import budget
from mcc.services.periods import GRANULARITY, Period, current_period, local_date, periods_between


def _money(value) -> float:
    return float(round(Decimal(value or 0), 6))


def _spend_by_scope() -> tuple[dict[str, Period], dict]:
    """Spend in the current day, week and month per scope, from one pass over the rollup.

    Returns the periods and {("global", None) | ("project", id) | ("agent", id): {kind: Decimal}}.
    One grouped query (at most a month and a week of rollup rows) instead of one per limit.
    """
    periods = {kind: current_period(kind) for kind in ("day", "week", "month")}
    first, last = min(p.start for p in periods.values()), max(p.end for p in periods.values())
    in_period = [func.coalesce(func.sum(CostDaily.cost_usd).filter(CostDaily.day >= p.start, CostDaily.day < p.end),
                               0).label(kind) for kind, p in periods.items()]
    rows = db.session.execute(select(CostDaily.project_id, CostDaily.agent_id, *in_period)
                              .where(CostDaily.day >= first, CostDaily.day < last)
                              .group_by(CostDaily.project_id, CostDaily.agent_id)).all()
    totals: dict = {("global", None): dict.fromkeys(periods, Decimal(0))}
    for row in rows:
        for scope in (("global", None), ("project", row.project_id), ("agent", row.agent_id)):
            if scope[1] is None and scope[0] != "global":
                continue
            spent = totals.setdefault(scope, dict.fromkeys(periods, Decimal(0)))
            for kind in periods:
                spent[kind] += Decimal(getattr(row, kind))
    return periods, totals


def summary() -> dict:
    """Today/week/month spent against the matching global limit, and limits over their threshold."""
    limits = db.session.scalars(select(BudgetLimit).order_by(BudgetLimit.created_at, BudgetLimit.id)).all()
    periods, totals = _spend_by_scope()
    result = {}
    for name, kind, period_name in (("today", "day", "daily"), ("week", "week", "weekly"),
                                    ("month", "month", "monthly")):
        spent = totals[("global", None)][kind]
        amounts = [Decimal(l.amount_usd) for l in limits if l.scope_type == "global" and l.period == period_name]
        limit = min(amounts) if amounts else None
        result[name] = {"spent": _money(spent), "limit": _money(limit) if limit is not None else None,
                        "percentage": round(float(spent / limit), 4) if limit else None}
    result["alerts"] = current_alerts(limits, totals)
    return result


def current_alerts(limits: list[BudgetLimit] | None = None, totals: dict | None = None) -> list[dict]:
    if limits is None:
        limits = db.session.scalars(select(BudgetLimit).order_by(BudgetLimit.created_at, BudgetLimit.id)).all()
    if totals is None:
        totals = _spend_by_scope()[1]
    over = []
    for limit in limits:
        if limit.scope_type in ("task", "issue"):  # not in the rollup: its tasks' ledger rows
            spent = budget.spent_from_rollup(limit, budget.limit_period(limit))
        else:
            spent = totals.get((limit.scope_type, limit.scope_id), {}).get(GRANULARITY[limit.period], Decimal(0))
        amount = Decimal(limit.amount_usd)
        if float(spent / amount) >= limit.alert_threshold:
            over.append((limit, spent, amount))
    # Load the scopes' names in two queries; scope_label/scope_object then find them in the session
    # (held here: the session's identity map only keeps weak references).
    scopes = []
    for model, scope_type in ((Project, "project"), (Agent, "agent")):
        ids = {limit.scope_id for limit, _, _ in over if limit.scope_type == scope_type}
        if ids:
            scopes += db.session.scalars(select(model).where(model.id.in_(ids))).all()
    alerts = []
    for limit, spent, amount in over:
        ratio = float(spent / amount)
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
        func.count().over().label("total"),  # the number of groups, from the same pass
    ).where(column.is_not(None)).group_by(column), start, end).subquery()
    rows = db.session.execute(select(model, totals).join(totals, totals.c.entity_id == model.id)
                              .order_by(totals.c.spent.desc(), model.id).offset((page - 1) * limit).limit(limit)).all()
    if rows:
        total = rows[0].total
    else:  # a page past the end: count the groups on their own
        total = db.session.scalar(select(func.count()).select_from(totals))
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


def spend_by_task(start: date, end: date, page: int, limit: int,
                  project_id: uuid.UUID | None = None) -> tuple[list[dict], int]:
    """Spend, tokens and LLM calls per task over start..end (local dates, inclusive), from the
    ledger (the rollup has no task column) through its task + time index; most spent first."""
    since, until = Period("day", start, end + timedelta(days=1)).bounds_utc()
    query = select(
        LedgerEntry.task_id.label("task_id"), func.sum(LedgerEntry.cost_usd).label("spent"),
        func.sum(LedgerEntry.tokens_in).label("tokens_in"), func.sum(LedgerEntry.tokens_out).label("tokens_out"),
        func.count().label("calls"), func.count().over().label("total"),
    ).where(LedgerEntry.task_id.is_not(None), LedgerEntry.created_at >= since, LedgerEntry.created_at < until)
    if project_id is not None:
        query = query.where(LedgerEntry.project_id == project_id)
    totals = query.group_by(LedgerEntry.task_id).subquery()
    rows = db.session.execute(select(Task, totals).join(totals, totals.c.task_id == Task.id)
                              .order_by(totals.c.spent.desc(), Task.id).offset((page - 1) * limit).limit(limit)).all()
    total = rows[0].total if rows else db.session.scalar(select(func.count()).select_from(totals))
    items = [{"id": str(row[0].id), "name": row[0].title, "project_id": str(row[0].project_id),
              "issue_id": str(row[0].issue_id) if row[0].issue_id else None, "status": row[0].status,
              "spent": _money(row.spent), "tokens_in": int(row.tokens_in), "tokens_out": int(row.tokens_out),
              "calls": int(row.calls)} for row in rows]
    return items, total


def spent_on_tasks(task_ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """All-time spend of each task (the task shape's ``spent``), in one grouped query."""
    if not task_ids:
        return {}
    rows = db.session.execute(select(LedgerEntry.task_id, func.sum(LedgerEntry.cost_usd))
                              .where(LedgerEntry.task_id.in_(task_ids)).group_by(LedgerEntry.task_id))
    return {task_id: _money(spent) for task_id, spent in rows}


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
    # A task is credited to the agent that did its work: its coder (the agent that took it in
    # pending/in_progress), else whoever holds it. Not assigned_agent_id alone: the pipeline clears
    # that on completion and moves it to the tester and the reviewer on the way.
    worker = func.coalesce(Task.coder_agent_id, Task.assigned_agent_id)
    tasks = {row[0]: row[1:] for row in db.session.execute(
        select(worker, func.sum(case((Task.status == "completed", 1), else_=0)),
               func.sum(case((Task.status == "failed", 1), else_=0)))
        .where(worker.in_(ids)).group_by(worker))}
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
