"""reflections sealed at rest: body becomes sealed_body, existing rows sealed

Revision ID: subscriber_01_sealed
Revises: b41c0faults1
Create Date: 2026-11-29 22:40:00

Rows written before this revision hold plain text. They are sealed here, under the first
reflections key, which `dripcourse init` and `dripcourse run` hand to the migration. A bare
`alembic upgrade` has no key: with plain rows present it stops and says so, rather than
leaving them in the clear.
"""

from alembic import context, op
import sqlalchemy as sa


revision = 'subscriber_01_sealed'
down_revision = 'b41c0faults1'
branch_labels = None
depends_on = None

reflections = sa.table(
    'reflections',
    sa.column('id', sa.Integer()),
    sa.column('body', sa.Text()),
    sa.column('sealed_body', sa.Text()),
)


def _cipher(direction: str):  # type: ignore[no-untyped-def]
    cipher = context.config.attributes.get('reflections_cipher')
    if cipher is None:
        raise RuntimeError(
            f'reflections to {direction}, but no reflections key was handed to the migration; '
            'run `dripcourse init` instead of alembic directly'
        )
    return cipher


def upgrade() -> None:
    conn = op.get_bind()
    # Asked before any change: SQLite commits each ALTER TABLE by itself.
    rows = conn.execute(sa.select(reflections.c.id, reflections.c.body)).all()
    cipher = _cipher('seal') if rows else None
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed_body', sa.Text(), nullable=True))
    if rows:
        for row in rows:
            conn.execute(
                reflections.update()
                .where(reflections.c.id == row.id)
                .values(sealed_body=cipher.seal(row.body))
            )
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.alter_column('sealed_body', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('body')


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(reflections.c.id, reflections.c.sealed_body)).all()
    cipher = _cipher('open') if rows else None
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body', sa.Text(), nullable=True))
    if rows:
        for row in rows:
            conn.execute(
                reflections.update()
                .where(reflections.c.id == row.id)
                .values(body=cipher.open(row.sealed_body))
            )
    with op.batch_alter_table('reflections', schema=None) as batch_op:
        batch_op.alter_column('body', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('sealed_body')
