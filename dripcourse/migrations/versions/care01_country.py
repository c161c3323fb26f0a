"""subscriber country: whose places to turn a reader is shown ("" = their time zone's country)

Revision ID: care01_country
Revises: links01_bound_links
Create Date: 2026-12-07 18:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'care01_country'
down_revision = 'links01_bound_links'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(
            sa.Column('country', sa.String(length=2), nullable=False, server_default='')
        )


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('country')
