"""Budgets that hold: limits, reservations before a call, settlement after it, alerts and actions.

Every LLM call reserves its worst-case cost against each ``block`` limit covering it (global,
its project, its agent, and for a pipeline turn its task and the task's GitHub issue) in the same atomic Redis step that checks the emergency flag
(``gate.acquire_llm_call``); a reservation that would pass a block limit refuses the
call. After the call the real cost is written to the ledger and its daily rollup, the
reservation is released and the spend added to every covering limit's counter; ``warn`` and
``pause`` act on that settled spend. Counters live in Redis per limit and period and are rebuilt
from the rollup when missing (restart, flush), so enforcement survives losing Redis.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from flask import current_app
from sqlalchemy import func, or_, select

from mcc.errors import NotFound, ValidationFailed
from mcc.extensions import db
from mcc.llm.gateway import LLMResult, estimate_tokens
from mcc.llm.prices import Price, find_price
from mcc.models.agent import Agent
from mcc.models.budget import BudgetAlert, BudgetLimit, CostDaily
from mcc.models.conversation import Conversation, conversation_agents
from mcc.models.github import Issue
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.models.turn import LedgerEntry
from mcc.services import audit, emergency
from mcc.runtime import cancellation, gate
from mcc.runtime.tools import specs_for
from mcc.services import tasks as task_service
from mcc.services.notifications import notify
from mcc.services.periods import GRANULARITY, Period, current_period, local_date
from mcc.services.rollup import add_to_rollup

log = logging.getLogger(__name__)

MICRO = Decimal(1_000_000)


def to_micro(amount: Decimal) -> int:
    return int((Decimal(amount) * MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micro(amount: int) -> Decimal:
    return (Decimal(amount) / MICRO).quantize(Decimal("0.000001"))


class BudgetBlocked(Exception):
    def __init__(self, limit: BudgetLimit, spent: Decimal, needed: Decimal):
        self.limit, self.spent, self.needed = limit, spent, needed
        super().__init__(f"budget limit {limit.name!r} ({scope_label(limit)}, {limit.period} "
                         f"${limit.amount_usd:.2f}) would be exceeded: ${spent:.4f} spent or reserved, "
                         f"this call may cost up to ${needed:.4f}")


# --- limits (CRUD) ------------------------------------------------------------------------------

SCOPE_MODELS = {"project": Project, "agent": Agent, "task": Task, "issue": Issue}


def _scope_entity(limit: BudgetLimit):
    return db.session.get(SCOPE_MODELS[limit.scope_type], limit.scope_id)


def _name_of(entity) -> str | None:
    if entity is None:
        return None
    return getattr(entity, "name", None) or getattr(entity, "title", None)


def _check_scope(scope_type: str, scope_id: uuid.UUID | None) -> None:
    if scope_type == "global":
        if scope_id is not None:
            raise ValidationFailed("A global limit has no scope_id.", {"scope_id": ["Must be null for global."]})
        return
    if scope_id is None:
        raise ValidationFailed(f"A {scope_type} limit needs scope_id.", {"scope_id": ["Required."]})
    if db.session.get(SCOPE_MODELS[scope_type], scope_id) is None:
        raise ValidationFailed(f"No {scope_type} with that id.", {"scope_id": [f"Unknown {scope_type}."]})


def get_limit(limit_id: uuid.UUID) -> BudgetLimit:
    limit = db.session.get(BudgetLimit, limit_id)
    if limit is None:
        raise NotFound("Budget limit not found.", {"id": str(limit_id)})
    return limit


def list_limits(page: int, limit: int) -> tuple[list[BudgetLimit], int]:
    total = db.session.scalar(select(func.count()).select_from(BudgetLimit))
    items = db.session.scalars(select(BudgetLimit).order_by(BudgetLimit.created_at, BudgetLimit.id)
                               .offset((page - 1) * limit).limit(limit)).all()
    return list(items), total


def create_limit(data: dict) -> BudgetLimit:
    _check_scope(data["scope_type"], data.get("scope_id"))
    limit = BudgetLimit(**data)
    db.session.add(limit)
    db.session.flush()
    audit.record("budget_limit.created", "budget_limit", limit.id, data)
    return limit


def update_limit(limit_id: uuid.UUID, data: dict) -> BudgetLimit:
    limit = get_limit(limit_id)
    scope_type = data.get("scope_type", limit.scope_type)
    scope_id = data["scope_id"] if "scope_id" in data else limit.scope_id
    if scope_type == "global" and "scope_type" in data and "scope_id" not in data:
        scope_id = None
    _check_scope(scope_type, scope_id)
    audit.record("budget_limit.updated", "budget_limit", limit.id,
                 {"changes": audit.changes(limit, {**data, "scope_id": scope_id})})
    for key, value in data.items():
        setattr(limit, key, value)
    limit.scope_id = scope_id
    db.session.flush()
    return limit


def delete_limit(limit_id: uuid.UUID) -> None:
    limit = get_limit(limit_id)
    audit.record("budget_limit.deleted", "budget_limit", limit.id,
                 {"scope_type": limit.scope_type, "scope_id": limit.scope_id, "period": limit.period,
                  "amount_usd": limit.amount_usd})
    db.session.delete(limit)
    db.session.flush()


# --- scope and spend ------------------------------------------------------------------------------

def scope_label(limit: BudgetLimit) -> str:
    if limit.scope_type == "global":
        return "Global"
    name = _name_of(_scope_entity(limit)) or str(limit.scope_id)
    return f"{limit.scope_type.capitalize()} '{name}'"


def scope_object(limit: BudgetLimit) -> dict:
    if limit.scope_type == "global":
        return {"type": "global", "id": None, "name": "Global"}
    return {"type": limit.scope_type, "id": str(limit.scope_id), "name": _name_of(_scope_entity(limit))}


def covering_limits(project_id: uuid.UUID, agent_id: uuid.UUID, task_id: uuid.UUID | None = None) -> list[BudgetLimit]:
    """Global, the project's, the agent's; for a task's call also the task's and its issue's."""
    scopes = [BudgetLimit.scope_type == "global",
              (BudgetLimit.scope_type == "project") & (BudgetLimit.scope_id == project_id),
              (BudgetLimit.scope_type == "agent") & (BudgetLimit.scope_id == agent_id)]
    if task_id is not None:
        scopes.append((BudgetLimit.scope_type == "task") & (BudgetLimit.scope_id == task_id))
        issue_id = db.session.scalar(select(Task.issue_id).where(Task.id == task_id))
        if issue_id is not None:
            scopes.append((BudgetLimit.scope_type == "issue") & (BudgetLimit.scope_id == issue_id))
    return list(db.session.scalars(select(BudgetLimit).where(or_(*scopes))))


def task_ids_of(limit: BudgetLimit):
    """The tasks a task or issue limit covers (a query, for IN)."""
    if limit.scope_type == "task":
        return select(Task.id).where(Task.id == limit.scope_id)
    return select(Task.id).where(Task.issue_id == limit.scope_id)


def limit_period(limit: BudgetLimit, moment=None) -> Period:
    return current_period(GRANULARITY[limit.period], moment)


def counter_key(limit: BudgetLimit, period: Period) -> str:
    return f"mcc:budget:{limit.id}:{period.key}"


def spent_from_rollup(limit: BudgetLimit, period: Period) -> Decimal:
    """What the limit's scope spent in the period: the daily rollup, or for a task or issue (the
    rollup has no task column) the ledger rows of its tasks, through their task + time index."""
    if limit.scope_type in ("task", "issue"):
        start, end = period.bounds_utc()
        return Decimal(db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)).where(
            LedgerEntry.task_id.in_(task_ids_of(limit)), LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end)))
    query = select(func.coalesce(func.sum(CostDaily.cost_usd), 0)).where(
        CostDaily.day >= period.start, CostDaily.day < period.end)
    if limit.scope_type == "project":
        query = query.where(CostDaily.project_id == limit.scope_id)
    elif limit.scope_type == "agent":
        query = query.where(CostDaily.agent_id == limit.scope_id)
    return Decimal(db.session.scalar(query))


# --- worst case -----------------------------------------------------------------------------------

def _price_for(model: str) -> tuple[Price, bool]:
    price = find_price(current_app.config["MCC_LLM_PRICE_TABLE"], model)
    if price is not None:
        return price, True
    return current_app.config["MCC_BUDGET_UNKNOWN_PRICE"], False  # fail closed, never zero


def prompt_token_bound(text: str) -> int:
    """Tokens a prompt text may be billed as: 3 ASCII characters a token (generous for prose and
    code), and half a token per UTF-8 byte of anything else (CJK: 1.5 a character, Cyrillic: 1).
    Counting every character at 3 a token under-reserves non-Latin text about threefold."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return ascii_chars // 3 + (other_bytes + 1) // 2


def worst_case_cost(model: str, messages: list[dict], max_tokens: int, tools: list[dict] | None = None) -> Decimal:
    """Prompt estimate (generous, plus framing; the tool definitions sent along are billed as
    prompt too) + max_tokens of output."""
    price, _ = _price_for(model)
    prompt_tokens = sum(prompt_token_bound(str(m.get("content") or ""))
                        + prompt_token_bound(str(m.get("tool_calls") or "")) for m in messages)
    if tools:
        prompt_tokens += prompt_token_bound(json.dumps(tools))
    prompt_tokens += 8 * len(messages) + 64
    return (price.input_per_million * prompt_tokens + price.output_per_million * max_tokens) / MICRO


def _tool_specs(agent_id: uuid.UUID) -> list[dict]:
    """The tool definitions the turn engine sends with this agent's calls (tools.specs_for)."""
    agent = db.session.get(Agent, agent_id)
    return specs_for(agent) if agent is not None else []


@dataclass
class Reservation:
    limits: list[BudgetLimit] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    amount_micro: int = 0


def plan_reservation(project_id: uuid.UUID, agent_id: uuid.UUID, model: str, messages: list[dict],
                     max_tokens: int, task_id: uuid.UUID | None = None
                     ) -> tuple[Reservation, list[tuple[str, int, int, BudgetLimit, Period]]]:
    """The block limits this call must fit in, with their counter keys and amounts."""
    amount = to_micro(worst_case_cost(model, messages, max_tokens, _tool_specs(agent_id)))
    checks = []
    reservation = Reservation(amount_micro=amount)
    for limit in covering_limits(project_id, agent_id, task_id):
        if limit.action_on_exceed != "block":
            continue
        period = limit_period(limit)
        key = counter_key(limit, period)
        checks.append((key, to_micro(limit.amount_usd), amount, limit, period))
        reservation.limits.append(limit)
        reservation.keys.append(key)
    return reservation, checks


def has_block_limit(project_id: uuid.UUID, agent_id: uuid.UUID) -> bool:
    return any(limit.action_on_exceed == "block" for limit in covering_limits(project_id, agent_id))


# --- settlement, alerts and actions ---------------------------------------------------------------

def record_call(entry: LedgerEntry, result: LLMResult, messages: int = 0) -> None:
    """Add a ledger row's cost to the daily rollup (same transaction as the row); ``messages``
    counts the reply stored with it, on the same day."""
    add_to_rollup(local_date(entry.created_at), entry.project_id, entry.agent_id, entry.cost_usd,
                  entry.tokens_in, entry.tokens_out, calls=1, messages=messages)


def settle(reservation: Reservation | None, entry: LedgerEntry) -> list[dict]:
    """After the ledger row is committed: release the reservation, count the spend, raise alerts.

    Returns the ``budget_alert`` events to publish after the caller commits.
    """

    # Read again, not taken from the reservation: a limit changed during the call counts as it is now.
    limits = covering_limits(entry.project_id, entry.agent_id, entry.task_id)
    spend_keys = []
    for limit in limits:
        period = limit_period(limit, entry.created_at)
        spend_keys.append((counter_key(limit, period), limit, period))
    spent = gate.settle_budget(
        reservation.keys if reservation else [], reservation.amount_micro if reservation else 0,
        [key for key, _, _ in spend_keys], to_micro(entry.cost_usd),
        lambda key_index: to_micro(spent_from_rollup(spend_keys[key_index][1], spend_keys[key_index][2])))
    events = []
    for (key, limit, period), micro in zip(spend_keys, spent):
        events.extend(_alerts_for(limit, period, from_micro(micro), entry.turn_id))
    return events


def _raise_once(limit: BudgetLimit, period: Period, level: str, spent: Decimal) -> bool:
    try:
        with db.session.begin_nested():
            db.session.add(BudgetAlert(limit_id=limit.id, period_key=period.key, level=level, spent_usd=spent))
            db.session.flush()
        return True
    except Exception:  # the unique (limit, period, level) row exists: already raised this period
        return False


def _alerts_for(limit: BudgetLimit, period: Period, spent: Decimal,
                settling_turn: uuid.UUID | None = None) -> list[dict]:
    amount = Decimal(limit.amount_usd)
    ratio = float(spent / amount) if amount else 0.0
    events = []
    for level, reached in (("warning", ratio >= limit.alert_threshold), ("critical", spent >= amount)):
        if not reached or not _raise_once(limit, period, level, spent):
            continue
        label = scope_label(limit)
        message = f"{label} at {ratio:.0%} of {limit.period} limit {limit.name!r} (${spent:.2f} of ${amount:.2f})"
        notify(level, "budget_alert", f"Budget {level}: {limit.name}", message,
               {"limit_id": str(limit.id), "period": period.key, "spent": float(spent)},
               limit.scope_id if limit.scope_type == "project" else None)
        events.append({"event": "budget_alert", "data": {
            "level": level, "scope": scope_object(limit), "current": float(spent), "limit": float(amount),
            "percentage": round(ratio, 4), "message": message}})
        log.warning("budget %s: %s", level, message)
        if level == "critical":
            events.extend(_act(limit, settling_turn))
    return events


def running_scope(limit: BudgetLimit) -> dict:
    """The ``cancellation.stop_running`` filter of the work a limit covers."""
    if limit.scope_type == "global":
        return {}
    if limit.scope_type in ("task", "issue"):
        return {"task_ids": task_ids_of(limit)}
    return {f"{limit.scope_type}_id": limit.scope_id}


def _act(limit: BudgetLimit, settling_turn: uuid.UUID | None = None) -> list[dict]:
    """What a limit does when reached: warn (nothing more), pause the scope, or block: the gate
    refuses new calls, and the calls in flight under it are closed (the settling call's turn is
    refused at its next call instead)."""
    if limit.action_on_exceed == "block":
        reason = f"budget limit {limit.name!r} ({scope_label(limit)}) was reached"
        cancellation.stop_running(reason, except_turn=settling_turn, **running_scope(limit))
        fail_tasks(limit, reason)
        return []
    if limit.action_on_exceed != "pause":
        return []
    if limit.scope_type == "global":
        if emergency.state_from_database():
            return []
        result = emergency.pause_all("budget", None, "Budget limit exceeded", triggered_by="system")
        return [{"event": "emergency_pause", "data": {k: result["state"][k]
                                                      for k in ("triggered_by", "reason", "timestamp")}}]
    query = select(Conversation).where(Conversation.status == "active")
    if limit.scope_type == "project":
        query = query.where(Conversation.project_id == limit.scope_id)
    elif limit.scope_type in ("task", "issue"):
        query = query.where(Conversation.id.in_(select(Task.conversation_id).where(Task.id.in_(task_ids_of(limit)))))
    else:
        query = query.join(conversation_agents, conversation_agents.c.conversation_id == Conversation.id).where(
            conversation_agents.c.agent_id == limit.scope_id)
    events = []
    for conversation in db.session.scalars(query):
        conversation.status = "paused"
        events.append({"event": "conversation_status", "room": f"conversation:{conversation.id}",
                       "data": {"conversation_id": str(conversation.id), "status": "paused",
                                "reason": f"budget limit {limit.name!r} reached"}})
    db.session.flush()
    for event in events:  # a paused conversation's call in flight is closed, as when a person pauses it
        cancellation.stop_running(f"budget limit {limit.name!r} was reached and paused the conversation",
                                  except_turn=settling_turn, kind=cancellation.PAUSE,
                                  conversation_id=uuid.UUID(event["data"]["conversation_id"]))
    log.warning("budget limit %s reached: paused %s conversation(s)", limit.name, len(events))
    return events


def fail_tasks(limit: BudgetLimit, reason: str) -> int:
    """A task (or issue) whose block limit is reached fails, with a notification: its work stops
    here, the project's other tasks go on. (Chosen over waiting for a person: a blocked task
    cannot move until the limit changes, and `failed` says so plainly.) The caller commits."""
    if limit.scope_type not in ("task", "issue"):
        return 0
    failed = 0
    for task in db.session.scalars(select(Task).where(Task.id.in_(task_ids_of(limit)),
                                                      Task.status.in_(task_service.OPEN_STATUSES))
                                   .with_for_update()):
        task_service.transition(task, "failed", actor_type="system", actor_name="budget", reason=reason)
        notify("warning", "task_failed", f"Task failed: {task.title}", f"{reason}; the task stopped.",
               {"task_id": str(task.id), "limit_id": str(limit.id)}, task.project_id)
        failed += 1
    return failed


def blocked_agents(agent_ids: list[uuid.UUID], project_id: uuid.UUID) -> list[dict]:
    """Agents whose next call a block limit would refuse now (for 'stored, but blocked' answers)."""
    blocked = []
    # get(): the responders were just loaded with their conversation, so no query for them.
    for agent in filter(None, (db.session.get(Agent, agent_id) for agent_id in dict.fromkeys(agent_ids))):
        minimal = worst_case_cost(agent.model, [], agent.max_tokens, _tool_specs(agent.id))
        for limit in covering_limits(project_id, agent.id):
            if limit.action_on_exceed != "block":
                continue
            period = limit_period(limit)
            used = gate.budget_used(counter_key(limit, period),
                                    lambda: to_micro(spent_from_rollup(limit, period)))
            if from_micro(used) + minimal > Decimal(limit.amount_usd):
                blocked.append({"agent_id": str(agent.id), "name": agent.name, "limit_id": str(limit.id),
                                "reason": f"{limit.period} limit {limit.name!r} of {scope_label(limit)} reached"})
                break
    return blocked
