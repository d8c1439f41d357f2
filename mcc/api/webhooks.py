"""/webhooks/github: GitHub's deliveries (public, authenticated by their signature)."""
from __future__ import annotations

from flask import current_app, request
from flask.views import MethodView
from flask_limiter import ExemptionScope
from flask_smorest import Blueprint

from mcc.api import PUBLIC
from mcc.extensions import db, limiter
from mcc.github import cli as github_cli
from mcc.github import webhooks as service
from mcc.schemas.common import ErrorSchema
from mcc.schemas.github import WebhookAckSchema

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


@blp.route("/github")
class GitHubWebhook(MethodView):
    @blp.doc(security=PUBLIC, requestBody={
        "required": True, "description": "A GitHub webhook payload (JSON, or form-encoded `payload=`).",
        "content": {"application/json": {"schema": {"type": "object"}}}})
    @blp.response(202, WebhookAckSchema, description="accepted (stored, processed on a worker) or ignored "
                                                     "(unknown event, repository bound to no project)")
    @blp.alt_response(200, schema=WebhookAckSchema, description="ping answered, or a redelivery: nothing changes")
    @blp.alt_response(401, schema=ErrorSchema, description="missing or wrong X-Hub-Signature-256; nothing stored")
    @blp.alt_response(422, schema=ErrorSchema,
                      description="missing X-GitHub-Event / X-GitHub-Delivery, or a body that is not JSON")
    @blp.alt_response(503, schema=ErrorSchema,
                      description="no webhook secret configured: MCC refuses unsigned webhooks")
    def post(self):
        """Receive a GitHub webhook delivery (public, signed)

        Checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with MCC_GITHUB_WEBHOOK_SECRET or
        the project's own secret) before anything else, stores the delivery once per
        `X-GitHub-Delivery`, answers at once and processes it on a worker. Rate limit:
        MCC_GITHUB_WEBHOOK_RATE_LIMIT per sender IP.
        """
        request.max_content_length = current_app.config["MCC_GITHUB_WEBHOOK_MAX_BYTES"]
        body = request.get_data(cache=True)
        signer = service.verify_signature(body, request.headers.get(service.SIGNATURE_HEADER))
        payload = service.parse_payload(body, request.content_type)
        receipt = service.record_delivery(request.headers.get("X-GitHub-Delivery", ""),
                                          request.headers.get("X-GitHub-Event", ""), payload, signer)
        db.session.commit()
        if receipt.enqueue:
            service.enqueue_processing(receipt.delivery)
        delivery = receipt.delivery
        return {"status": receipt.status, "delivery_id": delivery.delivery_id, "event": delivery.event,
                "reason": delivery.error if receipt.status == "ignored" else None}, receipt.http_status
