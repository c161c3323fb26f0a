"""subscriber greeting: how lessons address a person ("" = derived from the name)

Revision ID: staff01_subscriber_greeting
Revises: a7c1e0f2b9d4
Create Date: 2026-11-29 22:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'staff01_subscriber_greeting'
down_revision = 'a7c1e0f2b9d4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(
            sa.Column('greeting', sa.String(length=200), nullable=False, server_default='')
        )


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('greeting')
