"""cohort default time zone

Revision ID: operators01_cohort_timezone
Revises: staff01_subscriber_greeting
Create Date: 2026-11-29 22:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'operators01_cohort_timezone'
down_revision = 'staff01_subscriber_greeting'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cohorts') as batch_op:
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cohorts') as batch_op:
        batch_op.drop_column('timezone')
