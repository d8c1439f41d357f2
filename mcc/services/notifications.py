"""Notifications: what people should know about (budget alerts, pauses, failures)."""
from __future__ import annotations

import logging
import uuid

from mcc.extensions import db
from mcc.models.control import Notification

log = logging.getLogger(__name__)


def notify(severity: str, kind: str, title: str, message: str, data: dict | None = None,
           project_id: uuid.UUID | None = None) -> Notification:
    """Record a notification in the caller's transaction."""
    notification = Notification(severity=severity, kind=kind, title=title[:300], message=message, data=data,
                                project_id=project_id)
    db.session.add(notification)
    db.session.flush()
    log.info("notification %s/%s: %s", severity, kind, title)
    return notification
