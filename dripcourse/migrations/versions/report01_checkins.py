"""check-in answers: a course's 1-5 questions in its first and last lesson

Revision ID: report01_checkins
Revises: webhooks01_events
Create Date: 2026-12-07 18:05:00

One row per (enrollment, lesson, question): the answer, 1 to 5, and the question's wording as
it was asked. The report counts them; the subscriber's journal shows them; forget and the
subscriber's own delete remove them.
"""

from alembic import op
import sqlalchemy as sa

from dripcourse.models import UTCDateTime


revision = 'report01_checkins'
down_revision = 'webhooks01_events'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'checkin_answers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('enrollment_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('question', sa.Integer(), nullable=False),
        sa.Column('wording', sa.Text(), nullable=False),
        sa.Column('answer', sa.Integer(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('enrollment_id', 'day', 'question', name='uq_checkin_answer'),
    )


def downgrade() -> None:
    op.drop_table('checkin_answers')
