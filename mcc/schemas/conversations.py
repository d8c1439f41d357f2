from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.conversation import AUTHOR_TYPES, CONVERSATION_STATUSES, CONVERSATION_TYPES
from mcc.schemas.agents import AgentSummarySchema
from mcc.schemas.common import PageQuerySchema, PageSchema, QuerySchema, StrictSchema, Text, UtcDateTime

MAX_MESSAGE_CHARS = 100_000


class MessageAuthorUserSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    username = ma.fields.String(required=True)


class MessageSchema(ma.Schema):
    """A message, as REST returns it and as the socket ``message`` event carries it."""

    id = ma.fields.UUID(required=True)
    conversation_id = ma.fields.UUID(required=True)
    author_type = ma.fields.String(required=True, validate=validate.OneOf(AUTHOR_TYPES))
    agent = ma.fields.Nested(AgentSummarySchema, required=True, allow_none=True)
    user = ma.fields.Nested(MessageAuthorUserSchema, required=True, allow_none=True)
    content = ma.fields.String(required=True)
    tokens_in = ma.fields.Integer(required=True)
    tokens_out = ma.fields.Integer(required=True)
    cost_usd = ma.fields.Float(required=True)
    created_at = UtcDateTime(required=True)
    reply_to = ma.fields.UUID(required=True, allow_none=True, attribute="reply_to_id")
    metadata = ma.fields.Dict(required=True, allow_none=True, attribute="meta")


class BlockedAgentSchema(ma.Schema):
    agent_id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    limit_id = ma.fields.String(required=True)
    reason = ma.fields.String(required=True)


class MessagePostedSchema(MessageSchema):
    """The stored message, and which of the agents it calls on a budget block will stop."""

    blocked_agents = ma.fields.List(ma.fields.Nested(BlockedAgentSchema), required=True, metadata={
        "description": "agents asked to answer whose next LLM call a block limit refuses; "
                       "the message is stored either way"})


class MessageCreateSchema(StrictSchema):
    content = Text(required=True, min_length=1, max_length=MAX_MESSAGE_CHARS)
    reply_to = ma.fields.UUID(load_default=None, allow_none=True)


class SocketMessageSchema(MessageCreateSchema):
    conversation_id = ma.fields.UUID(required=True)


class MessagePageQuerySchema(QuerySchema):
    before = ma.fields.UUID(metadata={"description": "id of the oldest message already seen"})
    limit = ma.fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))


class MessagePageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(MessageSchema), required=True,
                           metadata={"description": "newest first"})
    has_more = ma.fields.Boolean(required=True)


class ConversationSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    project_id = ma.fields.UUID(required=True)
    title = ma.fields.String(required=True)
    type = ma.fields.String(required=True, validate=validate.OneOf(CONVERSATION_TYPES))
    status = ma.fields.String(required=True, validate=validate.OneOf(CONVERSATION_STATUSES))
    issue_id = ma.fields.UUID(required=True, allow_none=True)
    agents = ma.fields.List(ma.fields.Nested(AgentSummarySchema), required=True)
    created_at = UtcDateTime(required=True)
    updated_at = UtcDateTime(required=True)


class ConversationDetailSchema(ConversationSchema):
    messages = ma.fields.List(ma.fields.Nested(MessageSchema), required=True,
                              metadata={"description": "newest first; page with `before`"})
    has_more = ma.fields.Boolean(required=True)


class ConversationCreateSchema(StrictSchema):
    title = Text(required=True, min_length=1, max_length=300)
    type = ma.fields.String(load_default="general", validate=validate.OneOf(CONVERSATION_TYPES))
    agent_ids = ma.fields.List(ma.fields.UUID(), load_default=list, validate=validate.Length(max=50))
    issue_id = ma.fields.UUID(load_default=None, allow_none=True)


class ConversationUpdateSchema(StrictSchema):
    title = Text(min_length=1, max_length=300)
    status = ma.fields.String(validate=validate.OneOf(["active", "completed"]),
                              metadata={"description": "pause and resume have their own endpoints"})


class ConversationQueryArgsSchema(PageQuerySchema):
    type = ma.fields.String(validate=validate.OneOf(CONVERSATION_TYPES))
    status = ma.fields.String(validate=validate.OneOf(CONVERSATION_STATUSES))


class ConversationPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(ConversationSchema), required=True)


class ConversationAgentSchema(StrictSchema):
    agent_id = ma.fields.UUID(required=True)
