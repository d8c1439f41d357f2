from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.schemas.common import QuerySchema, UtcDateTime

SEVERITIES = ("info", "warning", "critical")


class NotificationSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    severity = ma.fields.String(required=True, validate=validate.OneOf(SEVERITIES))
    kind = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    data = ma.fields.Dict(required=True, allow_none=True)
    project_id = ma.fields.UUID(required=True, allow_none=True)
    is_read = ma.fields.Boolean(required=True)
    created_at = UtcDateTime(required=True)


class NotificationQuerySchema(QuerySchema):
    is_read = ma.fields.Boolean()
    severity = ma.fields.String(validate=validate.OneOf(SEVERITIES))
    limit = ma.fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))


class NotificationPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(NotificationSchema), required=True)
    total = ma.fields.Integer(required=True)
    page = ma.fields.Integer(required=True)
    pages = ma.fields.Integer(required=True)
    unread = ma.fields.Integer(required=True)


class ReadAllResultSchema(ma.Schema):
    marked_read = ma.fields.Integer(required=True)
