"""links bound to their row: enrollment keys, ids never handed out twice

Revision ID: links01_bound_links
Revises: send01_partial_due_index
Create Date: 2026-12-07 15:30:00

Every enrollment gets a random ``link_key`` that its links and reply addresses carry, so a
link made for an earlier row with the same id opens nothing. Rows that exist now are marked
``legacy_links``: the links already in their inboxes carry no key and keep working for them
(see links.py and docs/security.md). On SQLite, enrollments and deliveries become
AUTOINCREMENT tables, so a deleted highest id is never handed out again; PostgreSQL's
sequences never did.
"""

from alembic import op
import sqlalchemy as sa

from dripcourse.models import new_link_key, random_link_key


revision = 'links01_bound_links'
down_revision = 'send01_partial_due_index'
branch_labels = None
depends_on = None

enrollments = sa.table(
    'enrollments',
    sa.column('id', sa.Integer()),
    sa.column('link_key', sa.String()),
)
DUE = sa.text('next_send_at IS NOT NULL')


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == 'sqlite'
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('link_key', sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column('legacy_links', sa.Boolean(), server_default='0', nullable=False)
        )
    for (enrollment_id,) in conn.execute(sa.select(enrollments.c.id)).all():
        conn.execute(
            enrollments.update()
            .where(enrollments.c.id == enrollment_id)
            .values(link_key=new_link_key())
        )
    conn.execute(sa.text('UPDATE enrollments SET legacy_links = :yes'), {'yes': True})
    # The table is made anew on SQLite: that is how it becomes AUTOINCREMENT too.
    with op.batch_alter_table(
        'enrollments',
        schema=None,
        recreate='always' if sqlite else 'auto',
        table_kwargs={'sqlite_autoincrement': True},
    ) as batch_op:
        batch_op.alter_column(
            'link_key',
            existing_type=sa.String(length=16),
            nullable=False,
            server_default=random_link_key(),
        )
    if sqlite:
        _partial_due_index()
        with op.batch_alter_table(
            'deliveries',
            schema=None,
            recreate='always',
            table_kwargs={'sqlite_autoincrement': True},
        ):
            pass


def _partial_due_index() -> None:
    """The partial index as send01 made it: SQLite's copy of the table may lose its WHERE."""
    op.execute('DROP INDEX IF EXISTS ix_enrollments_next_send_at')
    op.create_index(
        'ix_enrollments_next_send_at',
        'enrollments',
        ['next_send_at'],
        unique=False,
        sqlite_where=DUE,
    )


def downgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == 'sqlite'
    with op.batch_alter_table(
        'enrollments',
        schema=None,
        recreate='always' if sqlite else 'auto',
        table_kwargs={'sqlite_autoincrement': False},
    ) as batch_op:
        batch_op.drop_column('legacy_links')
        batch_op.drop_column('link_key')
    if sqlite:
        _partial_due_index()
        with op.batch_alter_table(
            'deliveries',
            schema=None,
            recreate='always',
            table_kwargs={'sqlite_autoincrement': False},
        ):
            pass
