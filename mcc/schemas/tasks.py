from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.task import PRIORITIES, TASK_STATUSES
from mcc.schemas.agents import AgentSummarySchema
from mcc.schemas.common import PageQuerySchema, PageSchema, StrictSchema, Text, UtcDateTime


class TaskIssueSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    number = ma.fields.Integer(required=True)
    title = ma.fields.String(required=True)


class TaskPullRequestSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    number = ma.fields.Integer(required=True)
    status = ma.fields.String(required=True, attribute="state")
    html_url = ma.fields.String(allow_none=True)


class TaskSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    project_id = ma.fields.UUID(required=True)
    title = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    priority = ma.fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    assigned_to = ma.fields.Nested(AgentSummarySchema, required=True, allow_none=True)
    issue = ma.fields.Nested(TaskIssueSchema, required=True, allow_none=True)
    pr = ma.fields.Nested(TaskPullRequestSchema, required=True, allow_none=True)
    definition_of_done = ma.fields.String(required=True, allow_none=True)
    progress = ma.fields.Integer(required=True)
    attempts = ma.fields.Integer(required=True)
    conversation_id = ma.fields.UUID(required=True, allow_none=True)
    spent = ma.fields.Float(required=True, metadata={"description": "USD its LLM calls cost so far"})
    created_at = UtcDateTime(required=True)
    updated_at = UtcDateTime(required=True)


class TransitionSchema(ma.Schema):
    from_status = ma.fields.String(required=True, allow_none=True)
    to_status = ma.fields.String(required=True)
    actor_type = ma.fields.String(required=True)
    actor_name = ma.fields.String(required=True, allow_none=True)
    reason = ma.fields.String(required=True, allow_none=True)
    created_at = UtcDateTime(required=True)


class TaskDetailSchema(TaskSchema):
    history = ma.fields.List(ma.fields.Nested(TransitionSchema), required=True)


class TaskCreateSchema(StrictSchema):
    title = Text(required=True, min_length=1, max_length=300)
    description = Text(max_length=20_000, allow_none=True)
    priority = ma.fields.String(load_default="medium", validate=validate.OneOf(PRIORITIES))
    issue_id = ma.fields.UUID(load_default=None, allow_none=True)
    assigned_to_agent_id = ma.fields.UUID(load_default=None, allow_none=True)
    definition_of_done = Text(max_length=5_000, allow_none=True)


class TaskAssignSchema(StrictSchema):
    agent_id = ma.fields.UUID(required=True)


class TaskCompleteSchema(StrictSchema):
    reason = Text(max_length=2_000, allow_none=True, load_default=None)


class TaskQueryArgsSchema(PageQuerySchema):
    status = ma.fields.String(validate=validate.OneOf(TASK_STATUSES))
    assigned_to = ma.fields.UUID()
    issue_id = ma.fields.UUID()


class TaskPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(TaskSchema), required=True)


class IssueStartSchema(ma.Schema):
    conversation_id = ma.fields.UUID(required=True)
    conversation = ma.fields.Dict(required=True)
