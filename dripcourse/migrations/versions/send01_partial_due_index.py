"""the due-time index holds only enrollments with a lesson due

Revision ID: send01_partial_due_index
Revises: inbound_01_messages
Create Date: 2026-11-30 05:45:00

An enrollment without a due time (a lesson in flight, a course completed, an enrollment
stopped) is never looked up by it. Left in the index, those entries misled PostgreSQL: with
statistics taken before a morning's claim, the record of each sent lesson (whose guard says
"next_send_at IS NULL") walked every claimed entry instead of reading the primary key.
"""

from alembic import op
import sqlalchemy as sa


revision = 'send01_partial_due_index'
down_revision = 'inbound_01_messages'
branch_labels = None
depends_on = None

DUE = sa.text('next_send_at IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_next_send_at')
        batch_op.create_index(
            'ix_enrollments_next_send_at',
            ['next_send_at'],
            unique=False,
            postgresql_where=DUE,
            sqlite_where=DUE,
        )


def downgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_next_send_at')
        batch_op.create_index('ix_enrollments_next_send_at', ['next_send_at'], unique=False)
