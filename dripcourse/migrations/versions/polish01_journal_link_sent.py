"""journal link by email: when a subscriber last asked for one

Revision ID: polish01_journal_link_sent
Revises: care01_country
Create Date: 2026-12-07 18:10:00

The pause and unsubscribe pages offer to email the reader a fresh journal link; this column
keeps when the last one went, so the button cannot be used to flood a mailbox.
"""

from alembic import op
import sqlalchemy as sa

from dripcourse.models import UTCDateTime


revision = 'polish01_journal_link_sent'
down_revision = 'care01_country'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(sa.Column('journal_link_sent_at', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('journal_link_sent_at')
