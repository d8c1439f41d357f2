"""Per-user read state of notifications."""
from __future__ import annotations

import uuid

from sqlalchemy import and_, exists, func, select

from mcc.errors import NotFound
from mcc.extensions import db
from mcc.models.control import Notification, notification_reads
from mcc.models.types import utcnow


def _read_by(user_id: uuid.UUID):
    return exists().where(and_(notification_reads.c.notification_id == Notification.id,
                               notification_reads.c.user_id == user_id))


def list_for(user_id: uuid.UUID, page: int, limit: int, is_read: bool | None, severity: str | None):
    read = _read_by(user_id)
    query = select(Notification, read.label("is_read"))
    if is_read is not None:
        query = query.where(read if is_read else ~read)
    if severity:
        query = query.where(Notification.severity == severity)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    unread = db.session.scalar(select(func.count()).select_from(Notification).where(~read))
    rows = db.session.execute(query.order_by(Notification.created_at.desc(), Notification.id)
                              .offset((page - 1) * limit).limit(limit)).all()
    items = []
    for notification, flag in rows:
        notification.is_read = bool(flag)
        items.append(notification)
    return items, total, unread


def mark_read(user_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    notification = db.session.get(Notification, notification_id)
    if notification is None:
        raise NotFound("Notification not found.", {"id": str(notification_id)})
    already = db.session.scalar(select(_read_by(user_id).where(Notification.id == notification_id)))
    if not already:
        db.session.execute(notification_reads.insert().values(notification_id=notification_id, user_id=user_id,
                                                              read_at=utcnow()))
    notification.is_read = True
    return notification


def mark_all_read(user_id: uuid.UUID) -> int:
    unread = db.session.scalars(select(Notification.id).where(~_read_by(user_id))).all()
    if unread:
        now = utcnow()
        db.session.execute(notification_reads.insert(), [
            {"notification_id": nid, "user_id": user_id, "read_at": now} for nid in unread])
    return len(unread)
