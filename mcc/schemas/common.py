"""Schema pieces every resource uses: safe strings, UTC timestamps, pagination, the error body."""
from __future__ import annotations

import math
from datetime import timezone

import marshmallow as ma
from marshmallow import validate

from mcc.models.types import as_utc


class StrictSchema(ma.Schema):
    """Request bodies: an unknown field is a client bug, so it is refused, not ignored."""

    class Meta:
        unknown = ma.RAISE


class QuerySchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE


def _storable(value: str) -> None:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded: refuse both here
    # rather than fail in the database.
    if "\x00" in value:
        raise ma.ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ma.ValidationError("Must be valid Unicode text.") from exc


class Text(ma.fields.String):
    """A string with a bounded length that the database can store."""

    def __init__(self, *, max_length: int = 255, min_length: int = 0, **kwargs):
        validators = list(kwargs.pop("validate", None) or [])
        validators = [_storable, validate.Length(min=min_length, max=max_length), *validators]
        super().__init__(validate=validators, **kwargs)


class UtcDateTime(ma.fields.DateTime):
    """ISO 8601 in UTC with a ``Z`` suffix, whatever the database driver hands back."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return as_utc(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PageQuerySchema(QuerySchema):
    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    limit = ma.fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class PageSchema(ma.Schema):
    total = ma.fields.Integer(required=True)
    page = ma.fields.Integer(required=True)
    pages = ma.fields.Integer(required=True)


def page_of(items: list, total: int, page: int, limit: int) -> dict:
    return {"items": items, "total": total, "page": page, "pages": math.ceil(total / limit) if total else 0}


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"example": "RESOURCE_NOT_FOUND"})
    message = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True)
    request_id = ma.fields.String(required=True, allow_none=True)


class ErrorSchema(ma.Schema):
    """Every error MCC returns, whatever its status."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)
