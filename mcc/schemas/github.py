"""Issues, pull requests, webhook acknowledgements, sync and the per-project GitHub settings."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.project import MERGE_METHODS
from mcc.schemas.common import PageQuerySchema, PageSchema, StrictSchema, Text, UtcDateTime


class GitHubTime(UtcDateTime):
    """GitHub's timestamp of the object, else when MCC first recorded it."""

    def __init__(self, *attributes: str, **kwargs):
        super().__init__(**kwargs)
        self.attributes = attributes

    def get_value(self, obj, attr, accessor=None, default=ma.missing):
        for name in self.attributes:
            value = getattr(obj, name, None)
            if value is not None:
                return value
        return None


# --- issues --------------------------------------------------------------------------------
class IssueQueryArgsSchema(PageQuerySchema):
    state = ma.fields.String(load_default="open", validate=validate.OneOf(("open", "closed", "all")))
    label = Text(max_length=100, metadata={"description": "only issues with this label (case-insensitive)"})


class _GitHubItemSchema(ma.Schema):
    """What issues and pull requests share."""

    id = ma.fields.UUID(required=True)
    number = ma.fields.Integer(required=True)
    title = ma.fields.String(required=True)
    body = ma.fields.String(required=True, allow_none=True)
    author = ma.fields.String(required=True, allow_none=True, metadata={"description": "GitHub login"})
    html_url = ma.fields.String(required=True, allow_none=True)
    comments = ma.fields.Integer(required=True, metadata={"description": "comments on GitHub"})
    created_at = GitHubTime("github_created_at", "created_at", required=True)


class IssueSchema(_GitHubItemSchema):
    state = ma.fields.String(required=True, metadata={"example": "open"})
    labels = ma.fields.List(ma.fields.String(), required=True, metadata={"example": ["bug"]})
    assignees = ma.fields.List(ma.fields.String(), required=True)
    updated_at = GitHubTime("github_updated_at", "github_created_at", "created_at", required=True)
    tasks_count = ma.fields.Integer(required=True, metadata={"description": "MCC tasks planned from this issue"})


class IssuePageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(IssueSchema), required=True)


# --- pull requests -------------------------------------------------------------------------
class PullRequestQueryArgsSchema(PageQuerySchema):
    state = ma.fields.String(load_default="open", validate=validate.OneOf(("open", "closed", "merged", "all")),
                             metadata={"description": "`closed`: closed without merging"})


class LinkedTaskSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    title = ma.fields.String(required=True)
    status = ma.fields.String(required=True)


class LinkedIssueSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    number = ma.fields.Integer(required=True)
    title = ma.fields.String(required=True)


class PullRequestSchema(_GitHubItemSchema):
    state = ma.fields.String(required=True, metadata={"description": "open | closed | merged"})
    draft = ma.fields.Boolean(required=True)
    head_ref = ma.fields.String(required=True, allow_none=True, metadata={"description": "head branch"})
    base_ref = ma.fields.String(required=True, allow_none=True, metadata={"description": "base branch"})
    head_sha = ma.fields.String(required=True, allow_none=True)
    checks_state = ma.fields.String(required=True, metadata={"description": "pending | success | failure | none"})
    review_state = ma.fields.String(required=True,
                                    metadata={"description": "none | commented | approved | changes_requested"})
    task = ma.fields.Nested(LinkedTaskSchema, required=True, allow_none=True)
    issue = ma.fields.Nested(LinkedIssueSchema, required=True, allow_none=True)
    merged_at = UtcDateTime(required=True, allow_none=True)
    updated_at = GitHubTime("github_updated_at", "updated_at", required=True)


class PullRequestReviewSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    verdict = ma.fields.String(required=True, metadata={"description": "approved | changes_requested | commented | "
                                                                      "dismissed"})
    body = ma.fields.String(required=True, allow_none=True)
    source = ma.fields.String(required=True, metadata={"description": "github | mcc"})
    delivered_as = ma.fields.String(required=True, attribute="github_kind",
                                    metadata={"description": "review | comment | merge"})
    author = ma.fields.String(required=True, allow_none=True)
    user_id = ma.fields.UUID(required=True, allow_none=True)
    commit_sha = ma.fields.String(required=True, allow_none=True)
    submitted_at = GitHubTime("submitted_at", "created_at", required=True)


class PullRequestDetailSchema(PullRequestSchema):
    reviews = ma.fields.List(ma.fields.Nested(PullRequestReviewSchema), required=True)


class PullRequestPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(PullRequestSchema), required=True)


class RejectSchema(StrictSchema):
    feedback = Text(required=True, min_length=1, max_length=60_000,
                    metadata={"description": "what must change; posted on GitHub and kept for the coder"})


# --- webhooks, sync, settings ----------------------------------------------------------------
class WebhookAckSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "pong | accepted | ignored | duplicate | "
                                                                      "retried"})
    delivery_id = ma.fields.String(required=True)
    event = ma.fields.String(required=True)
    reason = ma.fields.String(allow_none=True)


class SyncQueuedSchema(ma.Schema):
    project_id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, metadata={"description": "queued | already_queued"})


class SyncStateSchema(ma.Schema):
    last_status = ma.fields.String(required=True, allow_none=True, metadata={"description": "running | ok | failed"})
    last_error = ma.fields.String(required=True, allow_none=True)
    last_started_at = UtcDateTime(required=True, allow_none=True)
    last_finished_at = UtcDateTime(required=True, allow_none=True)


class GitHubSettingsSchema(ma.Schema):
    auth = ma.fields.String(required=True, allow_none=True,
                            metadata={"description": "app | token | null (GitHub not configured)"})
    merge_method = ma.fields.String(required=True, attribute="github_merge_method")
    allow_merge_without_checks = ma.fields.Boolean(required=True)
    webhook_secret_set = ma.fields.Boolean(required=True, metadata={"description": "the secret is never shown"})
    sync = ma.fields.Nested(SyncStateSchema, required=True, allow_none=True)


class GitHubSettingsUpdateSchema(StrictSchema):
    merge_method = ma.fields.String(validate=validate.OneOf(MERGE_METHODS), data_key="merge_method",
                                    attribute="github_merge_method")
    allow_merge_without_checks = ma.fields.Boolean()
    webhook_secret = Text(min_length=16, max_length=100, allow_none=True, attribute="github_webhook_secret",
                          metadata={"description": "this project's own webhook secret; null removes it"})
