from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.agent import AGENT_STATUSES, AGENT_TYPES
from mcc.schemas.common import PageQuerySchema, PageSchema, StrictSchema, Text, UtcDateTime


class ModelConfigSchema(StrictSchema):
    model = Text(required=True, min_length=1, max_length=200,
                 metadata={"example": "anthropic/claude-3.5-sonnet"})
    temperature = ma.fields.Float(required=True, validate=validate.Range(min=0.0, max=2.0), allow_nan=False)
    max_tokens = ma.fields.Integer(required=True, validate=validate.Range(min=100, max=128_000))


class ModelConfigUpdateSchema(ModelConfigSchema):
    model = Text(min_length=1, max_length=200)
    temperature = ma.fields.Float(validate=validate.Range(min=0.0, max=2.0), allow_nan=False)
    max_tokens = ma.fields.Integer(validate=validate.Range(min=100, max=128_000))


class AgentStatsSchema(ma.Schema):
    messages_today = ma.fields.Integer(required=True, metadata={"description": "the agent's messages since midnight "
                                                                          "(MCC_TIMEZONE)"})
    cost_today = ma.fields.Float(required=True, metadata={
        "description": "USD the agent's LLM calls cost since midnight (MCC_TIMEZONE), from the cost ledger: "
                       "calls of failed turns count too"})


class AgentSummarySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    type = ma.fields.String(required=True, validate=validate.OneOf(AGENT_TYPES))


class AgentSchema(AgentSummarySchema):
    project_id = ma.fields.UUID(required=True)
    model_config = ma.fields.Nested(ModelConfigSchema, required=True)
    system_prompt = ma.fields.String(required=True, allow_none=True)
    rules_file_path = ma.fields.String(required=True, allow_none=True)
    is_active = ma.fields.Boolean(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(AGENT_STATUSES))
    memory_reset_at = UtcDateTime(required=True, allow_none=True)
    created_at = UtcDateTime(required=True)
    stats = ma.fields.Nested(AgentStatsSchema, required=True)


def _repo_path(value: str) -> None:
    if value.startswith("/") or "\\" in value or any(part in ("..", "") for part in value.split("/")):
        raise ma.ValidationError("Must be a relative path inside the repository, like docs/AGENT_RULES.md.")


class AgentCreateSchema(StrictSchema):
    name = Text(required=True, min_length=1, max_length=100)
    type = ma.fields.String(required=True, validate=validate.OneOf(AGENT_TYPES))
    model_config = ma.fields.Nested(ModelConfigSchema, required=True)
    system_prompt = Text(max_length=100_000, allow_none=True)
    rules_file_path = Text(max_length=500, allow_none=True, validate=[_repo_path])
    is_active = ma.fields.Boolean()


class AgentUpdateSchema(AgentCreateSchema):
    name = Text(min_length=1, max_length=100)
    type = ma.fields.String(validate=validate.OneOf(AGENT_TYPES))
    model_config = ma.fields.Nested(ModelConfigUpdateSchema)


class AgentPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(AgentSchema), required=True)
