"""Operator commands: ``flask --app wsgi github sync-all`` (cron: the safety net for missed webhooks)
and ``flask --app wsgi github replay DELIVERY_ID``."""
from __future__ import annotations

import click
from sqlalchemy import select

from mcc.extensions import db


def register(group: click.Group) -> None:
    @group.command("sync-all")
    @click.option("--now", is_flag=True, help="Run every sync in this process instead of enqueueing it.")
    def sync_all(now):
        """Full sync of every active project; requeue deliveries stuck unprocessed."""
        from mcc.github.auth import is_configured
        from mcc.models.project import Project
        from mcc.services import github_sync

        if now:
            for project in db.session.scalars(select(Project).where(Project.is_active.is_(True))).all():
                if is_configured(project):
                    result = github_sync.sync_repository(project.id)
                    click.echo(f"{project.github_repo}: {result.get('status')} {result.get('error') or ''}".rstrip())
            return
        result = github_sync.sync_all()
        db.session.commit()
        click.echo(f"queued {result['syncs_queued']} syncs; requeued {result['deliveries_requeued']} deliveries")

    @group.command("replay")
    @click.argument("delivery_id")
    def replay(delivery_id):
        """Process a stored delivery again (its X-GitHub-Delivery id), whatever its status."""
        from mcc.github.webhooks import process_delivery
        from mcc.models.github import WebhookDelivery

        delivery = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id))
        if delivery is None:
            raise click.ClickException(f"no stored delivery {delivery_id}")
        delivery.status = "received"
        status = process_delivery(delivery.id)
        db.session.commit()
        click.echo(f"{delivery_id}: {status} {delivery.error or ''}".rstrip())
