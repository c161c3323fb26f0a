"""deliveries.queued_at (what a lost broker queue held) and worker_beats (liveness)

Revision ID: b41c0faults1
Revises: operators01_cohort_timezone
Create Date: 2026-11-29 22:40:00
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'b41c0faults1'
down_revision = 'operators01_cohort_timezone'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('queued_at', dripcourse.models.UTCDateTime(), nullable=True))
    op.create_table('worker_beats',
    sa.Column('worker', sa.String(length=255), nullable=False),
    sa.Column('last_task_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('worker')
    )


def downgrade() -> None:
    op.drop_table('worker_beats')
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('queued_at')
