from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.schemas.common import PageQuerySchema, PageSchema, StrictSchema, Text, UtcDateTime

# GitHub: owner 1-39 alphanumerics or single hyphens; repository name letters, digits, . _ -
# but never "." or ".." (``acme/..`` would make every request go to ``/repos/``).
GITHUB_REPO = validate.Regexp(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}\Z",
                              error="Must look like owner/repo.")


class ProjectStatsSchema(ma.Schema):
    open_issues = ma.fields.Integer(required=True)
    active_conversations = ma.fields.Integer(required=True)
    today_cost = ma.fields.Float(required=True, metadata={
        "description": "USD spent on LLM calls since midnight (MCC_TIMEZONE), from the cost ledger: "
                       "calls of failed turns count too"})


class ProjectSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    github_repo = ma.fields.String(required=True, metadata={"example": "octo-org/octo-repo"})
    github_app_id = ma.fields.String(required=True, allow_none=True)
    github_installation_id = ma.fields.String(required=True, allow_none=True)
    is_active = ma.fields.Boolean(required=True)
    created_at = UtcDateTime(required=True)
    updated_at = UtcDateTime(required=True)
    stats = ma.fields.Nested(ProjectStatsSchema, required=True)


class ProjectCreateSchema(StrictSchema):
    name = Text(required=True, min_length=1, max_length=200)
    description = Text(max_length=10_000, allow_none=True)
    github_repo = Text(required=True, max_length=140, validate=[GITHUB_REPO])
    github_app_id = Text(max_length=64, allow_none=True, validate=[validate.Regexp(r"^[0-9]*\Z")])
    github_installation_id = Text(max_length=64, allow_none=True, validate=[validate.Regexp(r"^[0-9]*\Z")])
    is_active = ma.fields.Boolean()


class ProjectUpdateSchema(ProjectCreateSchema):
    name = Text(min_length=1, max_length=200)
    github_repo = Text(max_length=140, validate=[GITHUB_REPO])


class ProjectQueryArgsSchema(PageQuerySchema):
    is_active = ma.fields.Boolean()


class ProjectPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(ProjectSchema), required=True)
