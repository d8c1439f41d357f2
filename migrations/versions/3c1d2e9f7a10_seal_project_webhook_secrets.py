"""seal project webhook secrets

Revision ID: 3c1d2e9f7a10
Revises: 15440a5d70f4
Create Date: 2026-11-28 17:50:00.000000

Project webhook secrets were stored in plain text: seal the ones already stored (mcc.secretbox,
keyed by MCC_SECRET_KEY). Data only: a sealed secret of up to 100 characters fits the column
(String(255)); a longer one, which the API no longer accepts, stays as it is and keeps working
(unsealed values are read as they are) until it is set again.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3c1d2e9f7a10'
down_revision = '15440a5d70f4'
branch_labels = None
depends_on = None

COLUMN_LENGTH = 255


def _rows(bind, condition: str):
    return bind.execute(sa.text(f"SELECT id, github_webhook_secret FROM projects WHERE {condition}")).all()


def _rewrite(transform, condition: str):
    from flask import has_app_context

    if not has_app_context():  # no MCC_SECRET_KEY at hand: plain values keep working
        return
    bind = op.get_bind()
    for project_id, secret in _rows(bind, condition):
        value = transform(secret)
        if len(value) <= COLUMN_LENGTH:
            bind.execute(sa.text("UPDATE projects SET github_webhook_secret = :s WHERE id = :i"),
                         {"s": value, "i": project_id})


def upgrade():
    from mcc.secretbox import seal

    _rewrite(seal, "github_webhook_secret IS NOT NULL AND github_webhook_secret NOT LIKE 'v1:%'")


def downgrade():
    from mcc.secretbox import unseal

    _rewrite(unseal, "github_webhook_secret LIKE 'v1:%'")
