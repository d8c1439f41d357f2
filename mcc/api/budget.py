"""/budget: limits, spend summary, spend by project/agent, timeline."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.errors import ValidationFailed
from mcc.extensions import db
from mcc.schemas.budget import (MAX_TIMELINE_DAYS, BudgetLimitCreateSchema, BudgetLimitPageSchema,
                                BudgetLimitSchema, BudgetLimitUpdateSchema, BudgetSummarySchema, SpendPageSchema,
                                SpendQuerySchema, TaskSpendPageSchema, TaskSpendQuerySchema, TimelineQuerySchema,
                                TimelineSchema)
from mcc.schemas.common import PageQuerySchema, page_of
from mcc.schemas.common import ErrorSchema
from mcc.security import STEP_UP_PARAMETER, check_step_up, requires_role, requires_step_up
from mcc.services import budget as service
from mcc.services import reports

URL_PREFIX = "/budget"
blp = Blueprint("budget", __name__, description="Budget limits and spend reports")


@blp.route("/limits")
class Limits(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, BudgetLimitPageSchema)
    def get(self, args):
        """List budget limits"""
        items, total = service.list_limits(args["page"], args["limit"])
        return page_of(items, total, args["page"], args["limit"])

    @requires_role("admin")
    @blp.arguments(BudgetLimitCreateSchema)
    @blp.response(201, BudgetLimitSchema)
    def post(self, body):
        """Create a budget limit (admin)

        `scope_id` is required for project, agent, task and issue scopes and must exist (an issue
        is MCC's id of the GitHub issue, covering all its tasks); null for global. A task's or
        issue's block limit, once reached, fails the task(s) with a notification.
        Periods are calendar periods in MCC_TIMEZONE (weeks start on Monday). `block` refuses
        any LLM call whose worst case would pass the limit, before it is made.
        """
        limit = service.create_limit(body)
        db.session.commit()
        return limit


@blp.route("/limits/<uuid:limit_id>")
class LimitById(MethodView):
    @blp.response(200, BudgetLimitSchema)
    def get(self, limit_id):
        """Get a budget limit"""
        return service.get_limit(limit_id)

    @requires_role("admin")
    @blp.arguments(BudgetLimitUpdateSchema)
    @blp.doc(parameters=[STEP_UP_PARAMETER])
    @blp.response(200, BudgetLimitSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="FORBIDDEN or TWO_FACTOR_REQUIRED (raising needs a "
                      "fresh code in X-MCC-TOTP)")
    def patch(self, body, limit_id):
        """Update a budget limit (admin; raising it: step-up); a raised limit applies to the next call

        Raising `amount_usd` needs a fresh TOTP code in `X-MCC-TOTP` from a user with 2FA on (and
        from everyone when `MCC_REQUIRE_2FA_FOR` lists `limits`); lowering it does not.
        """
        if "amount_usd" in body and body["amount_usd"] > service.get_limit(limit_id).amount_usd:
            check_step_up("limits")
        limit = service.update_limit(limit_id, body)
        db.session.commit()
        return limit

    @requires_role("admin")
    @requires_step_up("limits")
    @blp.doc(parameters=[STEP_UP_PARAMETER])
    @blp.response(204)
    @blp.alt_response(403, schema=ErrorSchema, description="FORBIDDEN or TWO_FACTOR_REQUIRED")
    def delete(self, limit_id):
        """Delete a budget limit (admin, step-up: a fresh TOTP code in `X-MCC-TOTP`)"""
        service.delete_limit(limit_id)
        db.session.commit()


@blp.route("/summary")
class Summary(MethodView):
    @blp.response(200, BudgetSummarySchema)
    def get(self):
        """Spend today, this week and this month against the global limits, and current alerts

        Each period's `limit` is the lowest global limit of that period; without one it is `null`,
        and so is `percentage` (no global limit means no cap, not a cap of 0). Project and agent
        limits appear in `alerts` once their spend reaches the alert threshold.
        """
        return reports.summary()


def _date_range(args: dict, max_days: int | None = None):
    start, end = reports.default_range()
    start, end = args.get("start_date", start), args.get("end_date", end)
    if end < start:
        raise ValidationFailed("end_date is before start_date.", {"end_date": ["Before start_date."]})
    # Checked after the defaults are filled in: `?end_date=4400-01-01` alone spans 2,400 years.
    if max_days is not None and (end - start).days > max_days:
        raise ValidationFailed("At most ten years per timeline.",
                               {"start_date": ["At most ten years per timeline."]})
    return start, end


def _spend(entity: str, args: dict) -> dict:
    start, end = _date_range(args)
    items, total = reports.spend_by(entity, start, end, args["page"], args["limit"])
    return {**page_of(items, total, args["page"], args["limit"]), "start_date": start, "end_date": end}


@blp.route("/by-project")
class ByProject(MethodView):
    @blp.arguments(SpendQuerySchema, location="query")
    @blp.response(200, SpendPageSchema)
    def get(self, args):
        """Spend, tokens, calls and messages per project (default: this month)"""
        return _spend("project", args)


@blp.route("/by-agent")
class ByAgent(MethodView):
    @blp.arguments(SpendQuerySchema, location="query")
    @blp.response(200, SpendPageSchema)
    def get(self, args):
        """Spend, tokens, calls and messages per agent (default: this month)"""
        return _spend("agent", args)


@blp.route("/by-task")
class ByTask(MethodView):
    @blp.arguments(TaskSpendQuerySchema, location="query")
    @blp.response(200, TaskSpendPageSchema)
    def get(self, args):
        """Spend, tokens and LLM calls per task, most spent first (default: this month)"""
        start, end = _date_range(args)
        items, total = reports.spend_by_task(start, end, args["page"], args["limit"], args.get("project_id"))
        return {**page_of(items, total, args["page"], args["limit"]), "start_date": start, "end_date": end}


@blp.route("/timeline")
class Timeline(MethodView):
    @blp.arguments(TimelineQuerySchema, location="query")
    @blp.response(200, TimelineSchema)
    def get(self, args):
        """Spend per day, week or month; one point per period, zero periods included"""
        start, end = _date_range(args, MAX_TIMELINE_DAYS)
        return {"start_date": start, "end_date": end, "granularity": args["granularity"],
                "points": reports.timeline(start, end, args["granularity"])}
