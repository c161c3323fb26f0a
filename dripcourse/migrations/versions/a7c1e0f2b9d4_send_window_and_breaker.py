"""send window: cohorts started today (local), the mail circuit breaker

Revision ID: a7c1e0f2b9d4
Revises: 3efeca8caa6c
Create Date: 2026-11-29 22:30:00
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'a7c1e0f2b9d4'
down_revision = '3efeca8caa6c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cohorts') as batch:
        batch.add_column(
            sa.Column('start_today', sa.Boolean(), server_default='0', nullable=False)
        )
    op.create_table('circuit_breakers',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('opened_at', dripcourse.models.UTCDateTime(), nullable=True),
    sa.Column('retry_at', dripcourse.models.UTCDateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('updated_at', dripcourse.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.execute("INSERT INTO circuit_breakers (name, failures) VALUES ('mail', 0)")


cohorts = sa.table(
    'cohorts',
    sa.column('start_date', sa.Date()),
    sa.column('start_today', sa.Boolean()),
    sa.column('created_at', sa.DateTime()),
)
deliveries = sa.table('deliveries', sa.column('status', sa.String(16)))


def downgrade() -> None:
    # Said the older way, so that the older code can read them: a cohort started "today" (no
    # start date, no start instant) starts on the day it was created (UTC), and a delivery
    # waiting for a retry is pending until its next_attempt_at, as it was before 'waiting'.
    op.execute(
        cohorts.update()
        .where(cohorts.c.start_today, cohorts.c.start_date.is_(None))
        .values(start_date=sa.func.date(cohorts.c.created_at))
    )
    op.execute(
        deliveries.update().where(deliveries.c.status == 'waiting').values(status='pending')
    )
    op.drop_table('circuit_breakers')
    with op.batch_alter_table('cohorts') as batch:
        batch.drop_column('start_today')
