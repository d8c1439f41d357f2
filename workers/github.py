"""GitHub jobs (queue ``github``): apply a stored webhook delivery, sync a repository."""
from __future__ import annotations

import uuid

from mcc.extensions import db
from mcc.github import webhooks
from mcc.models.github import WebhookDelivery
from mcc.services import github_sync, outbox
from workers.context import job


@job
def process_delivery(delivery_id: str) -> str:
    status = webhooks.process_delivery(uuid.UUID(delivery_id))
    db.session.commit()
    outbox.flush()
    delivery = db.session.get(WebhookDelivery, uuid.UUID(delivery_id))
    if delivery is not None and delivery.project_id is not None:
        github_sync.schedule_next(delivery.project_id)  # restarts a lost periodic chain
    return status


@job
def sync_repository(project_id: str) -> dict:
    return github_sync.sync_repository(uuid.UUID(project_id))


@job
def sync_all() -> dict:
    result = github_sync.sync_all()
    db.session.commit()
    return result
