"""/notifications: budget alerts, pauses and failures, with read state per user."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.schemas.common import page_of
from mcc.schemas.notifications import (NotificationPageSchema, NotificationQuerySchema, NotificationSchema,
                                       ReadAllResultSchema)
from mcc.services import notification_reads as service

URL_PREFIX = "/notifications"
blp = Blueprint("notifications", __name__, description="Notifications (read state is per user)")


@blp.route("")
class Notifications(MethodView):
    @blp.arguments(NotificationQuerySchema, location="query")
    @blp.response(200, NotificationPageSchema)
    def get(self, args):
        """List notifications, newest first (`is_read`, `severity`, `limit` 1..100, `page`)"""
        items, total, unread = service.list_for(current_user.id, args["page"], args["limit"], args.get("is_read"),
                                                args.get("severity"))
        return {**page_of(items, total, args["page"], args["limit"]), "unread": unread}


@blp.route("/<uuid:notification_id>/read")
class NotificationRead(MethodView):
    @blp.response(200, NotificationSchema)
    def post(self, notification_id):
        """Mark a notification read (for you)"""
        notification = service.mark_read(current_user.id, notification_id)
        db.session.commit()
        return notification


@blp.route("/read-all")
class NotificationsReadAll(MethodView):
    @blp.response(200, ReadAllResultSchema)
    def post(self):
        """Mark every notification read (for you)"""
        count = service.mark_all_read(current_user.id)
        db.session.commit()
        return {"marked_read": count}
