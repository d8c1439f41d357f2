from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.budget import ACTIONS, PERIODS, SCOPE_TYPES
from mcc.schemas.common import PageQuerySchema, PageSchema, QuerySchema, StrictSchema, Text, UtcDateTime

# The column is NUMERIC(14, 6): below 10^8 dollars, micro-dollar precision (places=6 rounds to it).
MAX_AMOUNT = 100_000_000
AMOUNT = validate.Range(min=0, min_inclusive=False, max=MAX_AMOUNT, max_inclusive=False)
# apispec would publish a Decimal field's bounds as strings ("0.000000") and drop exclusiveness.
AMOUNT_DOC = {"minimum": 0, "exclusiveMinimum": True, "maximum": MAX_AMOUNT, "exclusiveMaximum": True,
              "example": 50.0}
# Longest timeline span: one point per day over ten years is still a small response.
MAX_TIMELINE_DAYS = 3660


class BudgetLimitSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    scope_type = ma.fields.String(required=True, validate=validate.OneOf(SCOPE_TYPES))
    scope_id = ma.fields.UUID(required=True, allow_none=True)
    amount_usd = ma.fields.Float(required=True)
    period = ma.fields.String(required=True, validate=validate.OneOf(PERIODS))
    alert_threshold = ma.fields.Float(required=True)
    action_on_exceed = ma.fields.String(required=True, validate=validate.OneOf(ACTIONS))
    created_at = UtcDateTime(required=True)
    updated_at = UtcDateTime(required=True)


class BudgetLimitCreateSchema(StrictSchema):
    name = Text(required=True, min_length=1, max_length=200)
    scope_type = ma.fields.String(required=True, validate=validate.OneOf(SCOPE_TYPES))
    scope_id = ma.fields.UUID(load_default=None, allow_none=True)
    amount_usd = ma.fields.Decimal(required=True, places=6, validate=AMOUNT, allow_nan=False, metadata=AMOUNT_DOC)
    period = ma.fields.String(required=True, validate=validate.OneOf(PERIODS))
    alert_threshold = ma.fields.Float(load_default=0.8, validate=validate.Range(min=0, max=1), allow_nan=False)
    action_on_exceed = ma.fields.String(load_default="warn", validate=validate.OneOf(ACTIONS))


class BudgetLimitUpdateSchema(StrictSchema):
    name = Text(min_length=1, max_length=200)
    scope_type = ma.fields.String(validate=validate.OneOf(SCOPE_TYPES))
    scope_id = ma.fields.UUID(allow_none=True)
    amount_usd = ma.fields.Decimal(places=6, validate=AMOUNT, allow_nan=False, metadata=AMOUNT_DOC)
    period = ma.fields.String(validate=validate.OneOf(PERIODS))
    alert_threshold = ma.fields.Float(validate=validate.Range(min=0, max=1), allow_nan=False)
    action_on_exceed = ma.fields.String(validate=validate.OneOf(ACTIONS))


class BudgetLimitPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(BudgetLimitSchema), required=True)


class SpentSchema(ma.Schema):
    spent = ma.fields.Float(required=True, metadata={"description": "USD spent in the period (all projects)"})
    limit = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "The lowest global limit of this period (daily, weekly, monthly) in USD; "
                       "null when no global limit of this period exists (the default on a new install): "
                       "spending is then unlimited, not limited to 0"})
    percentage = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "spent / limit as a fraction (0.25 = 25 %, may pass 1.0); null when limit is null"})


class ScopeSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"description": "global, project, agent, task or issue"})
    id = ma.fields.String(required=True, allow_none=True, metadata={"description": "null for the global scope"})
    name = ma.fields.String(required=True, allow_none=True)


class AlertSchema(ma.Schema):
    type = ma.fields.String(required=True, validate=validate.OneOf(["warning", "critical"]))
    message = ma.fields.String(required=True)
    limit_id = ma.fields.String(required=True)
    scope = ma.fields.Nested(ScopeSchema, required=True)
    current = ma.fields.Float(required=True)
    limit = ma.fields.Float(required=True)
    percentage = ma.fields.Float(required=True)


class BudgetSummarySchema(ma.Schema):
    today = ma.fields.Nested(SpentSchema, required=True)
    week = ma.fields.Nested(SpentSchema, required=True)
    month = ma.fields.Nested(SpentSchema, required=True)
    alerts = ma.fields.List(ma.fields.Nested(AlertSchema), required=True)


def _dates_in_order(data, **_kwargs):
    if data.get("start_date") and data.get("end_date") and data["end_date"] < data["start_date"]:
        raise ma.ValidationError("end_date is before start_date.", "end_date")


class DateRangeQuerySchema(QuerySchema):
    start_date = ma.fields.Date(metadata={"description": "YYYY-MM-DD (default: first day of this month)"})
    end_date = ma.fields.Date(metadata={"description": "YYYY-MM-DD, inclusive (default: today)"})

    @ma.validates_schema
    def _order(self, data, **kwargs):
        _dates_in_order(data)


class SpendQuerySchema(PageQuerySchema):
    start_date = ma.fields.Date()
    end_date = ma.fields.Date()

    @ma.validates_schema
    def _order(self, data, **kwargs):
        _dates_in_order(data)


class TimelineQuerySchema(DateRangeQuerySchema):
    granularity = ma.fields.String(load_default="day", validate=validate.OneOf(["day", "week", "month"]))

    @ma.validates_schema
    def _bounded(self, data, **kwargs):
        if (data.get("start_date") and data.get("end_date")
                and (data["end_date"] - data["start_date"]).days > MAX_TIMELINE_DAYS):
            raise ma.ValidationError("At most ten years per timeline.", "start_date")


class SpendItemSchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    type = ma.fields.String()
    project_id = ma.fields.String()
    spent = ma.fields.Float(required=True)
    tokens_in = ma.fields.Integer(required=True)
    tokens_out = ma.fields.Integer(required=True)
    calls = ma.fields.Integer(required=True, metadata={"description": "LLM calls"})
    messages = ma.fields.Integer(required=True, metadata={"description": "agent messages"})


class TaskSpendQuerySchema(SpendQuerySchema):
    project_id = ma.fields.UUID(metadata={"description": "only this project's tasks"})


class TaskSpendItemSchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True, metadata={"description": "the task's title"})
    project_id = ma.fields.String(required=True)
    issue_id = ma.fields.String(required=True, allow_none=True)
    status = ma.fields.String(required=True)
    spent = ma.fields.Float(required=True)
    tokens_in = ma.fields.Integer(required=True)
    tokens_out = ma.fields.Integer(required=True)
    calls = ma.fields.Integer(required=True, metadata={"description": "LLM calls"})


class TaskSpendPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(TaskSpendItemSchema), required=True)
    start_date = ma.fields.Date(required=True)
    end_date = ma.fields.Date(required=True)


class SpendPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(SpendItemSchema), required=True)
    start_date = ma.fields.Date(required=True)
    end_date = ma.fields.Date(required=True)


class TimelinePointSchema(ma.Schema):
    period_start = ma.fields.String(required=True)
    spent = ma.fields.Float(required=True)
    tokens_in = ma.fields.Integer(required=True)
    tokens_out = ma.fields.Integer(required=True)
    calls = ma.fields.Integer(required=True)


class TimelineSchema(ma.Schema):
    start_date = ma.fields.Date(required=True)
    end_date = ma.fields.Date(required=True)
    granularity = ma.fields.String(required=True)
    points = ma.fields.List(ma.fields.Nested(TimelinePointSchema), required=True)


class AgentMetricsSchema(ma.Schema):
    total_messages = ma.fields.Integer(required=True)
    total_cost = ma.fields.Float(required=True)
    avg_cost_per_message = ma.fields.Float(required=True, allow_none=True)
    tasks_completed = ma.fields.Integer(required=True)
    success_rate = ma.fields.Float(required=True, allow_none=True)
    cost_per_completed_task = ma.fields.Float(required=True, allow_none=True)


class AgentAnalyticsSchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    project_id = ma.fields.String(required=True)
    metrics = ma.fields.Nested(AgentMetricsSchema, required=True)


class AgentAnalyticsPageSchema(PageSchema):
    agents = ma.fields.List(ma.fields.Nested(AgentAnalyticsSchema), required=True)
