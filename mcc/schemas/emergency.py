from __future__ import annotations

import marshmallow as ma

from mcc.schemas.common import StrictSchema, Text


class PauseAllSchema(StrictSchema):
    reason = Text(max_length=500, allow_none=True, load_default=None)


class PauseAllResultSchema(ma.Schema):
    paused_agents = ma.fields.Integer(required=True)
    active_conversations = ma.fields.Integer(required=True)
    message = ma.fields.String(required=True)
    calls_in_flight = ma.fields.Integer(required=True, metadata={
        "description": "LLM calls streaming at the gateway when the pause took effect"})
    cancelled = ma.fields.Integer(required=True, metadata={
        "description": "of those, the calls this pause told to stop (their streams close within a second; "
                       "a call already being stopped for another reason is not counted twice)"})


class ResumeAllResultSchema(ma.Schema):
    message = ma.fields.String(required=True)
    resumed_by = ma.fields.String(required=True)
    resumed_conversations = ma.fields.Integer(required=True)


class EmergencyStatusSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "paused or running"})
    triggered_by = ma.fields.String(allow_none=True)
    actor = ma.fields.String(allow_none=True)
    reason = ma.fields.String(allow_none=True)
    timestamp = ma.fields.String(allow_none=True)
