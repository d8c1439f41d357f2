"""/emergency: stop every agent at once, and resume them."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.schemas.audit import EmergencyEventPageSchema
from mcc.schemas.common import PageQuerySchema, page_of
from mcc.schemas.emergency import EmergencyStatusSchema, PauseAllResultSchema, PauseAllSchema, ResumeAllResultSchema
from mcc.schemas.common import ErrorSchema
from mcc.security import STEP_UP_PARAMETER, requires_role, requires_step_up
from mcc.services import emergency as service
from mcc.runtime.control import announce_pause, announce_resume, resume_everything

URL_PREFIX = "/emergency"
blp = Blueprint("emergency", __name__, description="Emergency stop of every agent")


@blp.route("/pause-all")
class PauseAll(MethodView):
    @requires_role("operator")
    @blp.arguments(PauseAllSchema)
    @blp.response(200, PauseAllResultSchema)
    def post(self, body):
        """EMERGENCY: pause all agents system-wide (operator)

        From the moment this returns no new LLM call starts on any worker, and every call
        streaming at the gateway is closed within a second (`calls_in_flight`, `cancelled`): its
        partial cost is on record and its turn ends `cancelled` with a system message. Queued
        work is held, not dropped, until resume-all. Every client gets `emergency_pause`.
        """
        result = service.pause_all(current_user.username, current_user.id, body.get("reason"))
        db.session.commit()
        announce_pause(result["state"])
        return result


@blp.route("/resume-all")
class ResumeAll(MethodView):
    @requires_role("admin")
    @requires_step_up("resume")
    @blp.doc(parameters=[STEP_UP_PARAMETER])
    @blp.response(200, ResumeAllResultSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="FORBIDDEN (not an admin) or TWO_FACTOR_REQUIRED "
                      "(no fresh code in X-MCC-TOTP; `details.reason` says why)")
    def post(self):
        """Resume all agents (admin, step-up); held work continues in order. 409 when not paused.

        A user with 2FA on sends a fresh TOTP code in `X-MCC-TOTP` (a code already used, the
        login's too, is refused); with `MCC_REQUIRE_2FA_FOR` listing `resume`, 2FA is mandatory.
        """
        result = resume_everything(current_user.username, current_user.id)
        return result


@blp.route("/events")
class Events(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, EmergencyEventPageSchema)
    def get(self, args):
        """History of emergency pauses and resumes, newest first (who, when, why; `limit`, `page`)"""
        items, total = service.list_events(args["page"], args["limit"])
        return page_of(items, total, args["page"], args["limit"])


@blp.route("/status")
class Status(MethodView):
    @blp.response(200, EmergencyStatusSchema)
    def get(self):
        """Whether agents are paused, and by whom, when and why"""
        state = service.current_state()
        return {"status": "paused", **state} if state else {"status": "running"}
