from __future__ import annotations

from datetime import timezone

import marshmallow as ma

from mcc.schemas.common import PageQuerySchema, PageSchema, Text, UtcDateTime


class AuditQuerySchema(PageQuerySchema):
    actor = Text(max_length=100)
    action = Text(max_length=64)
    target_type = Text(max_length=32)
    target_id = Text(max_length=64)
    since = ma.fields.AwareDateTime(default_timezone=timezone.utc,
                                    metadata={"description": "from (inclusive), ISO 8601; UTC unless it says"})
    until = ma.fields.AwareDateTime(default_timezone=timezone.utc,
                                    metadata={"description": "to (exclusive), ISO 8601; UTC unless it says"})


class AuditEventSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    actor = ma.fields.String(required=True, metadata={"description": "username, cli:<os user>, or system"})
    action = ma.fields.String(required=True, metadata={"example": "emergency.pause"})
    target_type = ma.fields.String(required=True, allow_none=True)
    target_id = ma.fields.String(required=True, allow_none=True)
    details = ma.fields.Dict(required=True, allow_none=True)
    ip = ma.fields.String(required=True, allow_none=True)
    request_id = ma.fields.String(required=True, allow_none=True)
    created_at = UtcDateTime(required=True)


class AuditPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(AuditEventSchema), required=True)


class EmergencyEventSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    action = ma.fields.String(required=True, metadata={"description": "pause or resume"})
    triggered_by = ma.fields.String(required=True, metadata={"description": "user or system (budget)"})
    actor = ma.fields.String(required=True)
    reason = ma.fields.String(required=True, allow_none=True)
    created_at = UtcDateTime(required=True)


class EmergencyEventPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(EmergencyEventSchema), required=True)
