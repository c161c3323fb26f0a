"""delivery problems: each bounce and complaint applied, by reason family

Revision ID: bounces01_delivery_problems
Revises: polish01_journal_link_sent
Create Date: 2026-12-07 18:10:00

What the soft rule counts (mailbox full or expired, over days) and what the deliverability
warning reads (blocks that are about us). It holds reason families and status codes only:
never an address or a report's text.
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'bounces01_delivery_problems'
down_revision = 'polish01_journal_link_sent'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('delivery_problems',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=True),
    sa.Column('day', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('effect', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_delivery_problems_at', 'delivery_problems', ['at'])
    op.create_index(
        'ix_delivery_problems_enrollment_id', 'delivery_problems', ['enrollment_id']
    )


def downgrade() -> None:
    op.drop_index('ix_delivery_problems_enrollment_id', table_name='delivery_problems')
    op.drop_index('ix_delivery_problems_at', table_name='delivery_problems')
    op.drop_table('delivery_problems')
