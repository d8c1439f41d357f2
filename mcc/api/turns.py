"""/turns: agent runs as an operator sees them; retry a failed one, cancel a waiting or running one."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.schemas.common import page_of
from mcc.schemas.turns import TurnDetailSchema, TurnPageSchema, TurnQuerySchema
from mcc.security import requires_role
from mcc.services import runs as service

URL_PREFIX = "/turns"
blp = Blueprint("turns", __name__, description="Agent turns (runs): inspect, retry, cancel")


@blp.route("")
class Turns(MethodView):
    @blp.arguments(TurnQuerySchema, location="query")
    @blp.response(200, TurnPageSchema)
    def get(self, args):
        """List agent turns, newest first (`status`, `project_id`, `agent_id`, `conversation_id`, `limit`, `page`)"""
        items, total = service.list_turns(args["page"], args["limit"], args.get("status"), args.get("project_id"),
                                          args.get("agent_id"), args.get("conversation_id"))
        return page_of(items, total, args["page"], args["limit"])


@blp.route("/<uuid:turn_id>")
class TurnItem(MethodView):
    @blp.response(200, TurnDetailSchema)
    def get(self, turn_id):
        """One turn with its tool calls and the cost-ledger rows of its LLM calls"""
        return service.turn_detail(turn_id)


@blp.route("/<uuid:turn_id>/retry")
class TurnRetry(MethodView):
    @requires_role("operator")
    @blp.response(202, TurnDetailSchema)
    def post(self, turn_id):
        """Run a failed or cancelled turn again as a new attempt (operator); 409 for any other turn

        The turn goes back to `queued` and continues from where it stopped (tool calls already run
        are not run again). A pipeline stage turn is refused (the pipeline handed its task to a person).
        """
        return service.retry(turn_id)


@blp.route("/<uuid:turn_id>/cancel")
class TurnCancel(MethodView):
    @requires_role("operator")
    @blp.response(200, TurnDetailSchema)
    def post(self, turn_id):
        """Cancel a turn (operator): a queued or held one at once; a running one within a second

        A running turn's LLM call in flight is closed (what it streamed is on record) and the turn
        ends `cancelled` with a system message; the answer shows it still `running`. 409 for a
        finished turn.
        """
        return service.cancel(turn_id)
