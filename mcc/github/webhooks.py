"""Webhook deliveries: signature first, then store (deduplicated by X-GitHub-Delivery), then an RQ
job processes the stored delivery through ``handlers.HANDLERS``.

Signatures are HMAC-SHA256 of the raw body (``X-Hub-Signature-256: sha256=<hex>``), compared in
constant time, with MCC_GITHUB_WEBHOOK_SECRET or a project's own ``github_webhook_secret``. A
request without a well-formed signature is refused before its body is parsed or the database is
touched; a project secret only vouches for deliveries about that project's repository.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mcc.errors import ServiceUnavailable, Unauthorized, ValidationFailed
from mcc.extensions import db
from mcc.github import records
from mcc.github.handlers import HANDLERS
from mcc.jobs import enqueue
from mcc.models.github import WebhookDelivery
from mcc.models.project import Project
from mcc.models.types import utcnow
from mcc.services import outbox
from mcc.services.notifications import notify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"^sha256=[0-9a-fA-F]{64}\Z")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}\Z")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _matches(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body).encode(), signature.lower().encode())


@dataclass
class Signer:
    """Whose secret signed the body: the global one (project None) or one project's."""

    project_id: uuid.UUID | None = None
    repo: str | None = None


def verify_signature(body: bytes, signature: str | None) -> Signer:
    """401 without a valid signature, 503 when no secret is configured at all."""
    if not signature or not _SIGNATURE.match(signature.strip()):
        raise Unauthorized(f"Missing or malformed {SIGNATURE_HEADER}: webhooks must be signed (sha256=<hex>).")
    signature = signature.strip()
    secret = current_app.config["MCC_GITHUB_WEBHOOK_SECRET"]
    if secret and _matches(secret, body, signature):
        return Signer()
    own = db.session.execute(select(Project.id, Project.github_repo, Project.github_webhook_secret)
                             .where(Project.github_webhook_secret.is_not(None))).all()
    for project_id, repo, project_secret in own:
        if _matches(project_secret, body, signature):
            return Signer(project_id, repo)
    if not secret and not own:
        raise ServiceUnavailable("No webhook secret is configured (MCC_GITHUB_WEBHOOK_SECRET): "
                                 "MCC refuses unsigned webhooks.")
    raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body: wrong secret or altered payload.")


def parse_payload(body: bytes, content_type: str | None) -> dict:
    """GitHub posts JSON, or a form with the JSON in ``payload`` (content type x-www-form-urlencoded)."""
    try:
        if (content_type or "").startswith("application/x-www-form-urlencoded"):
            body = parse_qs(body.decode("utf-8"), strict_parsing=True).get("payload", [""])[0].encode()
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("The webhook body is not a JSON payload.", {"body": [str(exc)[:200]]}) from exc
    if not isinstance(payload, dict):
        raise ValidationFailed("The webhook payload must be a JSON object.", {"body": ["Not an object."]})
    return payload


@dataclass
class Receipt:
    delivery: WebhookDelivery
    status: str  # pong | accepted | ignored | duplicate | retried
    enqueue: bool

    @property
    def http_status(self) -> int:
        return 200 if self.status in ("pong", "duplicate") else 202


def _strip_nul(value):
    """PostgreSQL JSON cannot hold \\u0000; GitHub bodies (commit messages) occasionally do."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def record_delivery(delivery_id: str, event: str, payload: dict, signer: Signer) -> Receipt:
    """Store a verified delivery once. A redelivery changes nothing, unless the first one failed or
    was never processed: then it is processed again (that is what an operator redelivers for)."""
    if not delivery_id or not _DELIVERY_ID.match(delivery_id):
        raise ValidationFailed("X-GitHub-Delivery is missing or malformed.", {"X-GitHub-Delivery": ["Required."]})
    if not event or len(event) > 60:
        raise ValidationFailed("X-GitHub-Event is missing or malformed.", {"X-GitHub-Event": ["Required."]})
    existing = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id))
    if existing is not None:
        return _redelivered(existing)
    repo = (payload.get("repository") or {}).get("full_name")
    if signer.project_id is not None and (repo or "").lower() != (signer.repo or "").lower():
        raise Unauthorized("This delivery is signed with a project's own secret but is about another repository.")
    project = records.project_for_repo(repo)
    delivery = WebhookDelivery(delivery_id=delivery_id, event=event, action=_short(payload.get("action")),
                               repo_full_name=_short(repo, 140), project_id=project.id if project else None,
                               payload=_strip_nul(payload), status="received", received_at=utcnow())
    status, enqueue_it = "accepted", True
    handler = HANDLERS.get(event)
    if event == "ping":
        delivery.status, delivery.processed_at, status, enqueue_it = "processed", utcnow(), "pong", False
    elif handler is None:
        delivery.status, delivery.error = "ignored", f"event {event!r} is not handled by MCC"
    elif handler[1] and project is None:
        delivery.status = "ignored"
        delivery.error = f"repository {repo!r} is not bound to a project" if repo else "the payload names no repository"
    if delivery.status == "ignored":
        delivery.processed_at, status, enqueue_it = utcnow(), "ignored", False
    try:
        with db.session.begin_nested():
            db.session.add(delivery)
            db.session.flush()
    except IntegrityError:  # the same delivery id, stored by a concurrent request a moment ago
        existing = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id))
        if existing is None:
            raise
        return Receipt(existing, "duplicate", False)
    return Receipt(delivery, status, enqueue_it)


def _redelivered(existing: WebhookDelivery) -> Receipt:
    if existing.status == "failed":
        existing.status, existing.error = "received", None
        return Receipt(existing, "retried", True)
    return Receipt(existing, "duplicate", False)


def _short(value, limit: int = 60):
    return value[:limit] if isinstance(value, str) else None


def enqueue_processing(delivery: WebhookDelivery) -> None:
    """After commit. If Redis is down the delivery stays ``received``; ``flask github sync-all`` requeues it."""
    try:
        enqueue("workers.github.process_delivery", str(delivery.id), queue="github",
                job_id=f"github-delivery-{delivery.id}", description=f"GitHub {delivery.event} {delivery.delivery_id}")
    except Exception:
        log.exception("could not enqueue webhook delivery %s; it stays received", delivery.delivery_id)


def process_delivery(delivery_id: uuid.UUID) -> str:
    """Apply a stored delivery; the caller commits. Returns the delivery's final status."""
    delivery = db.session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        log.warning("webhook delivery %s vanished", delivery_id)
        return "missing"
    if delivery.status in ("processed", "ignored"):
        return delivery.status
    delivery.attempts += 1
    handler, needs_project = HANDLERS.get(delivery.event, (None, False))
    project = db.session.get(Project, delivery.project_id) if delivery.project_id else None
    if project is None and delivery.repo_full_name:
        project = records.project_for_repo(delivery.repo_full_name)
        delivery.project_id = project.id if project else None
    if handler is None or (needs_project and project is None):
        delivery.status, delivery.error = "ignored", (
            f"event {delivery.event!r} is not handled by MCC" if handler is None
            else f"repository {delivery.repo_full_name!r} is not bound to a project")
    else:
        try:
            with db.session.begin_nested():
                reason = handler(delivery.payload, project)
            delivery.status, delivery.error = ("ignored", reason) if reason else ("processed", None)
        except Exception as exc:
            outbox.discard()  # nothing the failed handler queued may be announced
            log.exception("webhook delivery %s (%s) failed", delivery.delivery_id, delivery.event)
            delivery.status, delivery.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            notify("warning", "github_webhook_failed", f"GitHub {delivery.event} delivery could not be applied",
                   f"Delivery {delivery.delivery_id} ({delivery.event}/{delivery.action}) failed: {delivery.error}. "
                   "Redeliver it from GitHub or run `flask github replay` once fixed.",
                   {"delivery_id": delivery.delivery_id}, project_id=project.id if project else None)
    delivery.processed_at = utcnow()
    return delivery.status
