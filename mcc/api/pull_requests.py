"""/projects/{project_id}/pull-requests: pull requests, and approve (merge) or reject (request changes)."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.schemas.common import ErrorSchema, page_of
from mcc.schemas.github import (PullRequestDetailSchema, PullRequestPageSchema, PullRequestQueryArgsSchema,
                                PullRequestSchema, RejectSchema)
from mcc.security import STEP_UP_PARAMETER, requires_role, requires_step_up
from mcc.services import outbox
from mcc.services import pull_requests as service

URL_PREFIX = "/projects/<uuid:project_id>/pull-requests"
blp = Blueprint("pull_requests", __name__, description="Pull requests of a project, approved or rejected here")


@blp.route("")
class PullRequests(MethodView):
    @blp.arguments(PullRequestQueryArgsSchema, location="query")
    @blp.response(200, PullRequestPageSchema)
    def get(self, args, project_id):
        """List the project's pull requests, newest first

        `state` open (default) | closed (closed without merging) | merged | all. `task` and `issue`
        are the linked MCC task and the issue the pull request closes, when known.
        """
        items, total = service.list_pull_requests(project_id, args["state"], args["page"], args["limit"])
        return page_of(items, total, args["page"], args["limit"])


@blp.route("/<uuid:pull_request_id>")
class PullRequestById(MethodView):
    @blp.response(200, PullRequestDetailSchema)
    def get(self, project_id, pull_request_id):
        """Get a pull request with its review history (GitHub reviews and MCC verdicts)"""
        return service.get_pull_request(project_id, pull_request_id)


@blp.route("/<uuid:pull_request_id>/approve")
class ApprovePullRequest(MethodView):
    @requires_role("operator")
    @requires_step_up("merge")
    @blp.doc(parameters=[STEP_UP_PARAMETER])
    @blp.response(200, PullRequestSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="FORBIDDEN or TWO_FACTOR_REQUIRED (no fresh code in "
                      "X-MCC-TOTP)")
    @blp.alt_response(409, schema=ErrorSchema,
                      description="CHECKS_NOT_PASSED (details list `failing` and `pending` checks), STALE_HEAD "
                                  "(the head moved), NOT_MERGEABLE, CONFLICT (not open), GITHUB_NOT_CONFIGURED")
    @blp.alt_response(502, schema=ErrorSchema, description="GITHUB_API_ERROR: GitHub failed; nothing changed")
    def post(self, project_id, pull_request_id):
        """Approve: merge the pull request on GitHub when all its checks passed (operator, step-up)

        Users with 2FA on send a fresh TOTP code in `X-MCC-TOTP` (`MCC_REQUIRE_2FA_FOR=merge`
        makes 2FA mandatory); nothing is read from GitHub before that check.

        Reads the head commit's combined status and check runs from GitHub. When every one passed
        (or there are none and the project allows merging without checks) it merges with the
        project's merge method, pinned to the head commit MCC knows: if the head moved, 409
        STALE_HEAD. Otherwise 409 CHECKS_NOT_PASSED and nothing is merged.
        """
        pr = service.approve(project_id, pull_request_id, current_user)
        db.session.commit()
        outbox.flush()  # the task pipeline's events, after the commit
        return pr


@blp.route("/<uuid:pull_request_id>/reject")
class RejectPullRequest(MethodView):
    @requires_role("operator")
    @blp.arguments(RejectSchema)
    @blp.response(200, PullRequestSchema)
    @blp.alt_response(502, schema=ErrorSchema, description="GITHUB_API_ERROR: GitHub failed; nothing changed")
    def post(self, body, project_id, pull_request_id):
        """Reject: request changes on GitHub with feedback (operator)

        Posts a review requesting changes, or a comment where GitHub allows no such review (e.g. on
        the App's own pull request). The feedback is kept in the review history for the task's coder.
        """
        pr = service.reject(project_id, pull_request_id, current_user, body["feedback"])
        db.session.commit()
        outbox.flush()
        return pr
