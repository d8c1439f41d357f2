from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.turn import TURN_STATUSES
from mcc.schemas.common import PageQuerySchema, PageSchema, UtcDateTime


class TurnQuerySchema(PageQuerySchema):
    status = ma.fields.String(validate=validate.OneOf(TURN_STATUSES))
    project_id = ma.fields.UUID()
    agent_id = ma.fields.UUID()
    conversation_id = ma.fields.UUID()


class TurnSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(TURN_STATUSES))
    attempts = ma.fields.Integer(required=True, metadata={"description": "runs started so far"})
    project_id = ma.fields.UUID(required=True)
    agent_id = ma.fields.UUID(required=True)
    conversation_id = ma.fields.UUID(required=True)
    task_id = ma.fields.UUID(required=True, allow_none=True)
    created_at = UtcDateTime(required=True)
    started_at = UtcDateTime(required=True, allow_none=True)
    finished_at = UtcDateTime(required=True, allow_none=True)
    heartbeat_age_s = ma.fields.Float(required=True, allow_none=True, metadata={
        "description": "seconds since a running turn's worker last beat; null unless running and alive"})
    error = ma.fields.String(required=True, allow_none=True)
    cost_usd = ma.fields.Float(required=True, metadata={"description": "sum of the turn's LLM calls"})


class TurnPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(TurnSchema), required=True)


class ToolCallSchema(ma.Schema):
    name = ma.fields.String(required=True, allow_none=True)
    arguments = ma.fields.Raw(required=True, allow_none=True)
    call_id = ma.fields.String(required=True, allow_none=True)
    result = ma.fields.Raw(required=True, allow_none=True)


class LedgerRowSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    attempt = ma.fields.Integer(required=True)
    call_index = ma.fields.Integer(required=True)
    model = ma.fields.String(required=True)
    tokens_in = ma.fields.Integer(required=True)
    tokens_out = ma.fields.Integer(required=True)
    cost_usd = ma.fields.Float(required=True)
    price_known = ma.fields.Boolean(required=True)
    cost_source = ma.fields.String(required=True)
    simulated = ma.fields.Boolean(required=True)
    created_at = UtcDateTime(required=True)


class TurnDetailSchema(TurnSchema):
    reply_to_message_id = ma.fields.UUID(required=True, allow_none=True)
    reply_message_id = ma.fields.UUID(required=True, allow_none=True)
    chain_id = ma.fields.UUID(required=True)
    depth = ma.fields.Integer(required=True)
    tool_calls = ma.fields.List(ma.fields.Nested(ToolCallSchema), required=True)
    ledger = ma.fields.List(ma.fields.Nested(LedgerRowSchema), required=True)
