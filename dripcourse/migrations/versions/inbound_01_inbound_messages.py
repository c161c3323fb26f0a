"""reply by email: inbound messages processed, and where a reflection's text came from

Revision ID: inbound_01_messages
Revises: subscriber_02_versions
Create Date: 2026-11-29 23:40:00
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'inbound_01_messages'
down_revision = 'subscriber_02_versions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=True),
    sa.Column('day', sa.Integer(), nullable=True),
    sa.Column('received_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    op.create_index('ix_inbound_messages_received_at', 'inbound_messages', ['received_at'])
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('source', sa.String(length=16), server_default='web', nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.drop_column('source')
    op.drop_index('ix_inbound_messages_received_at', table_name='inbound_messages')
    op.drop_table('inbound_messages')
