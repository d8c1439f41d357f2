"""Webhook deliveries: signature first, then store (deduplicated by X-GitHub-Delivery), then an RQ
job processes the stored delivery through ``handlers.HANDLERS``.

Signatures are HMAC-SHA256 of the raw body (``X-Hub-Signature-256: sha256=<hex>``), compared in
constant time. ``/webhooks/github`` checks MCC_GITHUB_WEBHOOK_SECRET only; ``/webhooks/github/<project
id>`` checks that project's own (sealed) ``github_webhook_secret``, or the global secret when it has
none. So a forged body costs one HMAC, computed while the body streams in (spooled to disk past
1 MiB, never parsed), and at most MCC_GITHUB_WEBHOOK_CONCURRENCY requests per process do that at
once. A request without a well-formed signature is refused before its body is read.

A project secret only vouches for deliveries about that project's repository, and never for
installation events (they bind installations to projects: global secret only). An accepted body
seen again within REPLAY_WINDOW under another delivery id is a duplicate: the signature covers the
body only, so a captured delivery could otherwise be replayed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mcc.config import gevent_patched
from mcc.errors import NotFound, RequestTimeout, ServiceUnavailable, Unauthorized, ValidationFailed
from mcc.extensions import db
from mcc.github import records
from mcc.github.handlers import HANDLERS
from mcc.jobs import enqueue
from mcc.models.github import WebhookDelivery
from mcc.models.project import Project
from mcc.models.types import utcnow
from mcc.redis_store import get_redis
from mcc.secretbox import SealBroken, unseal
from mcc.services import outbox
from mcc.services.notifications import notify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE = re.compile(r"^sha256=[0-9a-fA-F]{64}\Z")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}\Z")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Signer:
    """Whose secret signed the body: the global one (project None) or one project's."""

    project_id: uuid.UUID | None = None
    repo: str | None = None


CHUNK_BYTES = 64 * 1024
SPOOL_BYTES = 1024 * 1024  # a body beyond this waits for its verdict on disk, not in memory
INSTALLATION_EVENTS = ("installation", "installation_repositories")
REPLAY_WINDOW = 24 * 3600


def _checked_signature(signature: str | None) -> str:
    if not signature or not _SIGNATURE.match(signature.strip()):
        raise Unauthorized(f"Missing or malformed {SIGNATURE_HEADER}: webhooks must be signed (sha256=<hex>).")
    return signature.strip().lower()


def signing_secret(project_id: uuid.UUID | None) -> tuple[str, Signer]:
    """The one secret a delivery to this URL must be signed with (and who that makes the signer).

    404 for an unknown project, 503 when no secret applies at all."""
    secret = current_app.config["MCC_GITHUB_WEBHOOK_SECRET"]
    if project_id is not None:
        project = db.session.get(Project, project_id)
        if project is None:
            raise NotFound("No such project.")
        if project.github_webhook_secret:
            try:
                return unseal(project.github_webhook_secret), Signer(project.id, project.github_repo)
            except SealBroken:
                log.error("webhook secret of project %s was sealed with another MCC_SECRET_KEY", project.id)
                raise ServiceUnavailable("The project's webhook secret cannot be read (MCC_SECRET_KEY changed): "
                                         "set it again.") from None
    if not secret:
        raise ServiceUnavailable("No webhook secret is configured (MCC_GITHUB_WEBHOOK_SECRET"
                                 + (" or the project's own" if project_id else "")
                                 + "): MCC refuses unsigned webhooks.")
    return secret, Signer()


def read_signed(stream, signature: str | None, project_id: uuid.UUID | None = None) -> tuple[bytes, Signer]:
    """The body of ``stream`` once its signature checks out: one HMAC, computed in one pass.

    401 (before reading anything) without a well-formed signature, 401 after reading when it does
    not match; 408 when the body takes longer than MCC_GITHUB_WEBHOOK_READ_SECONDS to arrive. The
    body is only returned, never parsed, here."""
    signature = _checked_signature(signature)
    secret, signer = signing_secret(project_id)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool, _read_deadline() as late:
        while chunk := stream.read(CHUNK_BYTES):
            late()
            mac.update(chunk)
            spool.write(chunk)
        if not hmac.compare_digest(("sha256=" + mac.hexdigest()).encode(), signature.encode()):
            raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body: wrong secret or altered payload.")
        spool.seek(0)
        return spool.read(), signer


@contextmanager
def _read_deadline():
    """A body trickling in would hold its webhook slot for as long as the sender likes (a handful
    of such connections would turn GitHub's real deliveries away with 503, and GitHub does not
    redeliver by itself). Under gevent (the Procfile's web process) a read blocked past the
    deadline is interrupted; elsewhere the deadline is checked between chunks. Yields a check to
    call after each chunk."""
    seconds = max(0.1, float(current_app.config["MCC_GITHUB_WEBHOOK_READ_SECONDS"]))
    too_slow = RequestTimeout(f"The webhook body did not arrive within {seconds:g} s "
                              "(MCC_GITHUB_WEBHOOK_READ_SECONDS).")
    deadline = time.monotonic() + seconds

    def late() -> None:
        if time.monotonic() > deadline:
            raise too_slow

    if gevent_patched():
        import gevent

        with gevent.Timeout(seconds, too_slow):
            yield late
    else:
        yield late


# --- at most MCC_GITHUB_WEBHOOK_CONCURRENCY webhook requests per process read and verify at once ---
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _semaphore(size: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        if size not in _slots:
            _slots[size] = threading.BoundedSemaphore(size)
        return _slots[size]


@contextmanager
def webhook_slot():
    """Wait up to MCC_GITHUB_WEBHOOK_WAIT seconds for a free slot, else 503 (GitHub shows it; redeliver)."""
    config = current_app.config
    semaphore = _semaphore(max(1, int(config["MCC_GITHUB_WEBHOOK_CONCURRENCY"])))
    if not semaphore.acquire(timeout=float(config.get("MCC_GITHUB_WEBHOOK_WAIT") or 5.0)):
        raise ServiceUnavailable("Too many webhook deliveries at once; try again shortly.")
    try:
        yield
    finally:
        semaphore.release()


# --- replays: the same accepted body under a new delivery id --------------------------------------
_seen_local: dict[str, tuple[str, float]] = {}
_seen_lock = threading.Lock()
SEEN_PREFIX = "mcc:github:webhook-body:"


def first_sighting(body: bytes, delivery_id: str) -> str | None:
    """Remember ``body`` for REPLAY_WINDOW; None the first time, else the delivery id that brought it."""
    key = SEEN_PREFIX + hashlib.sha256(body).hexdigest()
    redis = get_redis()
    if redis is not None:
        if redis.set(key, delivery_id, nx=True, ex=REPLAY_WINDOW):
            return None
        earlier = redis.get(key)
        return earlier.decode() if earlier else "an earlier delivery"
    now = time.monotonic()
    with _seen_lock:  # embedded mode: one process
        for stale in [k for k, (_, until) in _seen_local.items() if until <= now]:
            del _seen_local[stale]
        if key in _seen_local:
            return _seen_local[key][0]
        _seen_local[key] = (delivery_id, now + REPLAY_WINDOW)
        return None


def forget_sighting(body: bytes) -> None:
    """The body was not stored after all (the request failed later): a redelivery must be accepted."""
    key = SEEN_PREFIX + hashlib.sha256(body).hexdigest()
    redis = get_redis()
    if redis is not None:
        redis.delete(key)
    else:
        with _seen_lock:
            _seen_local.pop(key, None)


def parse_payload(body: bytes, content_type: str | None) -> dict:
    """GitHub posts JSON, or a form with the JSON in ``payload`` (content type x-www-form-urlencoded)."""
    try:
        if (content_type or "").startswith("application/x-www-form-urlencoded"):
            body = parse_qs(body.decode("utf-8"), strict_parsing=True).get("payload", [""])[0].encode()
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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


def record_delivery(delivery_id: str, event: str, payload: dict, signer: Signer, body: bytes | None = None) -> Receipt:
    """Store a verified delivery once. A redelivery changes nothing, unless the first one failed or
    was never processed: then it is processed again (that is what an operator redelivers for).
    ``body`` (the signed bytes) seen within REPLAY_WINDOW under another delivery id is a duplicate."""
    if not delivery_id or not _DELIVERY_ID.match(delivery_id):
        raise ValidationFailed("X-GitHub-Delivery is missing or malformed.", {"X-GitHub-Delivery": ["Required."]})
    if not event or len(event) > 60:
        raise ValidationFailed("X-GitHub-Event is missing or malformed.", {"X-GitHub-Event": ["Required."]})
    existing = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id))
    if existing is not None:
        return _redelivered(existing)
    repo = (payload.get("repository") or {}).get("full_name")
    if signer.project_id is not None and event in INSTALLATION_EVENTS:
        raise Unauthorized("Installation events must be signed with MCC_GITHUB_WEBHOOK_SECRET: a project's own "
                           "secret cannot bind or unbind installations.")
    if signer.project_id is not None and (repo or "").lower() != (signer.repo or "").lower():
        raise Unauthorized("This delivery is signed with a project's own secret but is about another repository.")
    earlier = first_sighting(body, delivery_id) if body is not None else None
    if earlier is not None:
        log.warning("webhook delivery %s repeats the body of delivery %s: answered as a duplicate",
                    delivery_id, earlier)
        return Receipt(WebhookDelivery(delivery_id=delivery_id, event=event), "duplicate", False)
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
