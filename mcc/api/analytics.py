"""/analytics: how agents perform."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.schemas.budget import AgentAnalyticsPageSchema
from mcc.schemas.common import PageQuerySchema, page_of
from mcc.services import reports

URL_PREFIX = "/analytics"
blp = Blueprint("analytics", __name__, description="Agent performance metrics")


@blp.route("/agents")
class AgentAnalytics(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, AgentAnalyticsPageSchema)
    def get(self, args):
        """Per agent: messages, cost, cost per message, tasks completed, success rate, cost per task

        `success_rate` is completed / finished (completed + failed) tasks, null when none finished.
        """
        items, total = reports.agent_metrics(args["page"], args["limit"])
        page = page_of(items, total, args["page"], args["limit"])
        return {"agents": page.pop("items"), **page}
