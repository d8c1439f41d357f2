"""/webhooks/github: GitHub's deliveries (public, authenticated by their signature)."""
from __future__ import annotations

from flask import current_app, request
from flask.views import MethodView
from flask_limiter import ExemptionScope
from flask_smorest import Blueprint

from mcc.extensions import db, limiter
from mcc.github import cli as github_cli
from mcc.github import webhooks as service
from mcc.schemas.common import ErrorSchema
from mcc.schemas.github import WebhookAckSchema
from mcc.security import PUBLIC

URL_PREFIX = "/webhooks"
# cli_group: the operator commands (`flask github sync-all`, `flask github replay`) ride on this blueprint.
blp = Blueprint("webhooks", __name__, description="Incoming GitHub webhooks", cli_group="github")
github_cli.register(blp.cli)


def _webhook_limit() -> str:
    return current_app.config["MCC_GITHUB_WEBHOOK_RATE_LIMIT"]


# GitHub delivers in bursts from a few addresses: not under the per-IP API limit (MCC_RATE_LIMIT),
# under its own. Both are set on the blueprint: a route exemption would also drop the route's limit.
limiter.limit(_webhook_limit)(blp)
limiter.exempt(blp, flags=ExemptionScope.APPLICATION)


def _receive(project_id=None):
    request.max_content_length = current_app.config["MCC_GITHUB_WEBHOOK_MAX_BYTES"]
    with service.webhook_slot():
        body, signer = service.read_signed(request.stream, request.headers.get(service.SIGNATURE_HEADER), project_id)
    payload = service.parse_payload(body, request.content_type)
    receipt = service.record_delivery(request.headers.get("X-GitHub-Delivery", ""),
                                      request.headers.get("X-GitHub-Event", ""), payload, signer, body)
    try:
        db.session.commit()
    except Exception:
        service.forget_sighting(body)  # not stored: GitHub's redelivery must not be taken for a replay
        raise
    if receipt.enqueue:
        service.enqueue_processing(receipt.delivery)
    delivery = receipt.delivery
    return {"status": receipt.status, "delivery_id": delivery.delivery_id, "event": delivery.event,
            "reason": delivery.error if receipt.status == "ignored" else None}, receipt.http_status


_ERRORS = (
    (401, "missing or wrong X-Hub-Signature-256, or a project secret signing another repository's or an "
          "installation event; nothing stored"),
    (408, "the body took longer than MCC_GITHUB_WEBHOOK_READ_SECONDS to arrive; nothing stored"),
    (413, "body over MCC_GITHUB_WEBHOOK_MAX_BYTES"),
    (422, "missing X-GitHub-Event / X-GitHub-Delivery, or a body that is not JSON"),
    (503, "no webhook secret configured (MCC refuses unsigned webhooks), or MCC_GITHUB_WEBHOOK_CONCURRENCY "
          "deliveries already in progress"),
)


def _documented(view):
    view = blp.doc(security=PUBLIC, requestBody={
        "required": True, "description": "A GitHub webhook payload (JSON, or form-encoded `payload=`).",
        "content": {"application/json": {"schema": {"type": "object"}}}})(view)
    view = blp.response(202, WebhookAckSchema, description="accepted (stored, processed on a worker) or ignored "
                                                           "(unknown event, repository bound to no project)")(view)
    view = blp.alt_response(200, schema=WebhookAckSchema,
                            description="ping answered, or a redelivery / a body accepted within 24 h: "
                                        "nothing changes")(view)
    for status, description in _ERRORS:
        view = blp.alt_response(status, schema=ErrorSchema, description=description)(view)
    return view


@blp.route("/github")
class GitHubWebhook(MethodView):
    @_documented
    def post(self):
        """Receive a GitHub webhook delivery (public, signed with the global secret)

        Checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with MCC_GITHUB_WEBHOOK_SECRET,
        computed while the body is read) before anything else, stores the delivery once per
        `X-GitHub-Delivery` (and a body once per 24 h), answers at once and processes it on a worker.
        Rate limit: MCC_GITHUB_WEBHOOK_RATE_LIMIT per sender IP. A project with its own webhook
        secret receives its deliveries at `/webhooks/github/{project_id}`.
        """
        return _receive()


@blp.route("/github/<uuid:project_id>")
class ProjectGitHubWebhook(MethodView):
    @_documented
    @blp.alt_response(404, schema=ErrorSchema, description="no such project")
    def post(self, project_id):
        """Receive a GitHub webhook delivery for one project (public, signed)

        Like `/webhooks/github`, but signed with the project's own webhook secret (or, when it has
        none, MCC_GITHUB_WEBHOOK_SECRET): only that one secret is tried. A project secret vouches
        only for deliveries about the project's repository, and never for installation events.
        """
        return _receive(project_id)
