"""subscriber greeting and given name, worked out when the name is written

Revision ID: greeting01_derived_from_name
Revises: confirm01_held_replies
Create Date: 2026-12-08 00:40:00

What a subscriber's name gives (the greeting without the course's fallback, and the given
name for ``{{ first_name }}``) is kept on their row when the name is written, so that sending
a lesson no longer parses the name (courses/greeting.py). Columns only, no backfill: NULL
means "not worked out yet", and the send path then parses the name as it did before, so rows
written before this revision get the same greeting. A later change to the greeting rules
needs a migration of its own setting both columns back to NULL.
"""

from alembic import op
import sqlalchemy as sa


revision = 'greeting01_derived_from_name'
down_revision = 'confirm01_held_replies'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(sa.Column('derived_greeting', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('derived_given_name', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('derived_given_name')
        batch_op.drop_column('derived_greeting')
