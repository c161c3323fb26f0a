"""the cohort circle: shared reflections, notes, reports, and the circle per cohort

Revision ID: circle01_circle
Revises: report01_checkins
Create Date: 2026-12-07 18:00:00

Shared text and notes are sealed under the reflections key like reflections themselves.
Cohorts get ``circle`` (on unless the operator turns it off; the course must allow it too).
Going down drops what was shared: the reflections themselves stay.
"""

from alembic import op
import sqlalchemy as sa

import dripcourse.models  # noqa: F401  (custom column types)


revision = 'circle01_circle'
down_revision = 'report01_checkins'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('circle_members',
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('updated_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('enrollment_id')
    )
    op.create_table('circle_posts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reflection_id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('cohort_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('sealed_body', sa.Text(), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('hidden_reason', sa.Text(), nullable=True),
    sa.Column('created_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.Column('updated_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['cohort_id'], ['cohorts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reflection_id'], ['reflections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reflection_id')
    )
    with op.batch_alter_table('circle_posts', schema=None) as batch_op:
        batch_op.create_index('ix_circle_posts_cohort_day', ['cohort_id', 'day'], unique=False)

    op.create_table('circle_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('sealed_body', sa.Text(), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('hidden_reason', sa.Text(), nullable=True),
    sa.Column('created_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['post_id'], ['circle_posts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('circle_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_circle_notes_enrollment_id'), ['enrollment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_circle_notes_post_id'), ['post_id'], unique=False)

    op.create_table('circle_reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=True),
    sa.Column('note_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('created_at', dripcourse.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['note_id'], ['circle_notes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['post_id'], ['circle_posts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('circle_reports', schema=None) as batch_op:
        batch_op.create_index('ix_circle_reports_reporter', ['enrollment_id', 'created_at'], unique=False)

    with op.batch_alter_table('cohorts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('circle', sa.Boolean(), server_default='1', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('cohorts', schema=None) as batch_op:
        batch_op.drop_column('circle')

    with op.batch_alter_table('circle_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_circle_reports_reporter')

    op.drop_table('circle_reports')
    with op.batch_alter_table('circle_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_circle_notes_post_id'))
        batch_op.drop_index(batch_op.f('ix_circle_notes_enrollment_id'))

    op.drop_table('circle_notes')
    with op.batch_alter_table('circle_posts', schema=None) as batch_op:
        batch_op.drop_index('ix_circle_posts_cohort_day')

    op.drop_table('circle_posts')
    op.drop_table('circle_members')
