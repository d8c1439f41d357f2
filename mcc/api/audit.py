"""/audit: the append-only trail of who did what (admin)."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.schemas.audit import AuditPageSchema, AuditQuerySchema
from mcc.schemas.common import page_of
from mcc.security import requires_role
from mcc.services import audit as service

URL_PREFIX = "/audit"
blp = Blueprint("audit", __name__, description="Audit trail (admin)")


@blp.route("")
class Audit(MethodView):
    @requires_role("admin")
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args):
        """List audit events, newest first (admin)

        Filters: `actor`, `action`, `target_type`, `target_id`, `since` (inclusive), `until`
        (exclusive); `limit`, `page`. Rows are never updated or deleted.
        """
        items, total = service.list_events(args["page"], args["limit"], args.get("actor"), args.get("action"),
                                           args.get("target_type"), args.get("target_id"), args.get("since"),
                                           args.get("until"))
        return page_of(items, total, args["page"], args["limit"])
