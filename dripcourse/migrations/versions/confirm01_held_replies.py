"""replies from another address held, sealed, until the subscriber confirms them

Revision ID: confirm01_held_replies
Revises: circle01_circle
Create Date: 2026-12-07 18:10:00

A reply to a lesson's reply address from an address other than the subscriber's is no longer
dropped: its text is kept sealed in ``held_replies`` for seven days, and the subscriber is
asked once, at their own address, whether to save it to their journal (docs/inbound.md).
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'confirm01_held_replies'
down_revision = 'circle01_circle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'held_replies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('enrollment_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('sender_digest', sa.String(length=64), nullable=False),
        sa.Column('sealed_sender', sa.Text(), nullable=True),
        sa.Column('sealed_body', sa.Text(), nullable=True),
        sa.Column('prompt', sa.Text(), nullable=False),
        sa.Column('received_at', dripcourse.models.UTCDateTime(), nullable=False),
        sa.Column('expires_at', dripcourse.models.UTCDateTime(), nullable=False),
        sa.Column(
            'notice_state',
            sa.Enum('due', 'sending', 'sent', 'failed', name='notice_state',
                    native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column('notice_next_at', dripcourse.models.UTCDateTime(), nullable=True),
        sa.Column('notice_attempts', sa.Integer(), nullable=False),
        sa.Column('notice_sent_at', dripcourse.models.UTCDateTime(), nullable=True),
        sa.Column('notice_error', sa.Text(), nullable=True),
        sa.Column('resolution', sa.String(length=16), nullable=True),
        sa.Column('resolved_at', dripcourse.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint(
            'enrollment_id', 'day', 'sender_digest', name='uq_held_reply_enrollment_day_sender'
        ),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_held_replies_notice', 'held_replies', ['notice_state', 'notice_next_at'])
    op.create_index('ix_held_replies_expires_at', 'held_replies', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_held_replies_expires_at', table_name='held_replies')
    op.drop_index('ix_held_replies_notice', table_name='held_replies')
    op.drop_table('held_replies')
