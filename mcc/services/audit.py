"""Writing and reading the audit trail.

``record`` adds a row to the current session: it commits (or rolls back) with the act it records.
The actor is the authenticated user of the request, else ``cli:<os user>`` for a ``flask`` command,
else ``system``; the IP and request id come from the request.
"""
from __future__ import annotations

import getpass
import uuid
from datetime import datetime

import click
from flask import has_request_context, request
from sqlalchemy import select

from mcc.extensions import db
from mcc.logging_setup import current_request_id
from mcc.models.audit import AuditEvent
from mcc.services.lookup import paginate

# Never written into details (at any depth), whatever the act: only that they were there.
SECRET_FIELDS = {"password", "password_hash", "github_webhook_secret", "webhook_secret", "totp_secret",
                 "totp_pending_secret", "github_app_private_key"}


def _request_user():
    if not has_request_context():
        return None
    from flask_jwt_extended import current_user

    try:
        return current_user._get_current_object() if current_user else None
    except Exception:  # no verified token in this request
        return None


def _default_actor() -> tuple[str, uuid.UUID | None]:
    user = _request_user()
    if user is not None:
        return user.username, user.id
    if not has_request_context() and click.get_current_context(silent=True) is not None:
        return f"cli:{getpass.getuser()}", None
    return "system", None


def _plain(value):
    if isinstance(value, (uuid.UUID, datetime)):
        return str(value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in SECRET_FIELDS else _plain(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def record(action: str, target_type: str | None = None, target_id=None, details: dict | None = None,
           actor: str | None = None, actor_id: uuid.UUID | None = None) -> AuditEvent:
    default_actor, default_id = _default_actor()
    event = AuditEvent(actor=(actor or default_actor)[:100], actor_id=actor_id or (default_id if not actor else None),
                       action=action, target_type=target_type,
                       target_id=str(target_id) if target_id is not None else None,
                       details=_plain(details) if details else None,
                       ip=(request.remote_addr if has_request_context() else None),
                       request_id=current_request_id())
    db.session.add(event)
    return event


def changes(obj, data: dict) -> dict:
    """Before applying ``data`` to ``obj``: ``{field: [old, new]}`` of what will differ."""
    return {key: [getattr(obj, key, None), value] for key, value in data.items()
            if getattr(obj, key, None) != value}


def list_events(page: int, limit: int, actor: str | None = None, action: str | None = None,
                target_type: str | None = None, target_id: str | None = None, since: datetime | None = None,
                until: datetime | None = None) -> tuple[list[AuditEvent], int]:
    query = select(AuditEvent)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    if since:
        query = query.where(AuditEvent.created_at >= since)
    if until:
        query = query.where(AuditEvent.created_at < until)
    return paginate(query, page, limit, AuditEvent.created_at.desc(), AuditEvent.id.desc())


def record_update(target_type: str, obj, data: dict) -> None:
    """Before ``data`` is applied to ``obj``: one ``<type>.updated`` row naming what changes; a changed
    webhook secret is its own act (``project.webhook_secret_changed``, without the secret)."""
    changed = changes(obj, data)
    if not changed:
        return
    record(f"{target_type}.updated", target_type, obj.id, {"changes": changed})
    if "github_webhook_secret" in changed:
        record("project.webhook_secret_changed", target_type, obj.id,
               {"set": data["github_webhook_secret"] is not None})
