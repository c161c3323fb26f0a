"""lesson versions: the words of each lesson as sent, referenced by its deliveries

Revision ID: subscriber_02_versions
Revises: subscriber_01_sealed
Create Date: 2026-11-29 22:45:00
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'subscriber_02_versions'
down_revision = 'subscriber_01_sealed'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lesson_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('course_slug', sa.String(length=100), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('questions', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('created_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lesson_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            'fk_deliveries_lesson_version_id', 'lesson_versions', ['lesson_version_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_deliveries_lesson_version_id', type_='foreignkey')
        batch_op.drop_column('lesson_version_id')
    op.drop_table('lesson_versions')
