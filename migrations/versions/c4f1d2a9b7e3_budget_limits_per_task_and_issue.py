"""budget limits per task and issue

Revision ID: c4f1d2a9b7e3
Revises: 3c1d2e9f7a10
Create Date: 2026-11-28 17:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4f1d2a9b7e3'
down_revision = '3c1d2e9f7a10'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('budget_limits', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_budget_limits_scope_type'), type_='check')
        batch_op.create_check_constraint(
            op.f('ck_budget_limits_scope_type'), "scope_type IN ('global', 'project', 'agent', 'task', 'issue')")
    with op.batch_alter_table('cost_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_cost_ledger_task_created', ['task_id', 'created_at'], unique=False)


def downgrade():
    # Task and issue limits have no meaning in the previous schema: they go.
    op.execute("DELETE FROM budget_limits WHERE scope_type IN ('task', 'issue')")
    with op.batch_alter_table('cost_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_cost_ledger_task_created')
    with op.batch_alter_table('budget_limits', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_budget_limits_scope_type'), type_='check')
        batch_op.create_check_constraint(
            op.f('ck_budget_limits_scope_type'), "scope_type IN ('global', 'project', 'agent')")
