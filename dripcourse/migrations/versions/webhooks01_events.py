"""email providers' webhooks: the events processed, and deliveries found by Message-ID

Revision ID: webhooks01_events
Revises: bounces01_delivery_problems
Create Date: 2026-12-07 18:30:00

``webhook_events`` keeps one row per provider event (or signed request) processed, so a
repeated one changes nothing and ``status`` can count them; an index on
``deliveries.message_id`` finds the lesson a provider names by its Message-ID.
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'webhooks01_events'
down_revision = 'bounces01_delivery_problems'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=True),
    sa.Column('day', sa.Integer(), nullable=True),
    sa.Column('received_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    op.create_index('ix_webhook_events_received_at', 'webhook_events', ['received_at'])
    op.create_index('ix_deliveries_message_id', 'deliveries', ['message_id'])


def downgrade() -> None:
    op.drop_index('ix_deliveries_message_id', table_name='deliveries')
    op.drop_index('ix_webhook_events_received_at', table_name='webhook_events')
    op.drop_table('webhook_events')
