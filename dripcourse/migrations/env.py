"""Alembic environment: runs on a connection handed in by dripcourse.db, or on the URL.

On SQLite, Alembic changes a table by building a new one, copying the rows over, dropping the
old one and renaming the new. With foreign keys on, dropping a parent table (cohorts,
subscribers) first deletes its rows, and the cascade takes every enrollment, delivery and
reflection under them. So on SQLite the migrations run with foreign keys off, as SQLite's
own procedure for schema changes says, in one transaction that holds the schema changes as
well as the rows; before it commits, ``PRAGMA foreign_key_check`` must find every reference
whole, or the run is rolled back and refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, create_engine

from dripcourse.errors import MigrationRefused
from dripcourse.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run_on(conn)


def _run_on(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        # SQLite can change its schema inside a transaction, but Alembic assumes it cannot
        # and would commit after each revision: one transaction for the whole run instead.
        transactional_ddl=True,
    )
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    with _foreign_keys_off(connection), context.begin_transaction():
        # pysqlite begins a transaction only at the first row written; without this BEGIN the
        # CREATE and DROP before it would be committed one by one, out of a rollback's reach.
        connection.exec_driver_sql("BEGIN")
        before = context.get_context().get_current_heads()
        context.run_migrations()
        # The check reads every table: only after a run that migrated something.
        if context.get_context().get_current_heads() != before:
            _refuse_broken_references(connection)


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite's foreign keys off for the migration transaction, and as they were after it.

    SQLite ignores the pragma inside a transaction, so the connection must come without one.
    """
    if connection.in_transaction():
        raise RuntimeError(
            "SQLite migrations need a connection outside a transaction (engine.connect(), "
            "not engine.begin()): foreign keys are turned off before the migration begins; "
            "use dripcourse.db.upgrade or downgrade"
        )
    were_on = bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    still_on = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    connection.commit()  # ends SQLAlchemy's autobegun transaction; SQLite began none
    if still_on:
        raise RuntimeError("SQLite did not turn foreign keys off: a transaction is open")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if were_on else 'OFF'}")
        connection.commit()


def _refuse_broken_references(connection: Connection) -> None:
    """Raise MigrationRefused (the run is rolled back) if any row points at a missing row."""
    broken = Counter(
        (table, parent)
        for table, _rowid, parent, _fk in connection.exec_driver_sql("PRAGMA foreign_key_check")
    )
    if broken:
        found = "; ".join(
            f"{count} row(s) of {table} would point at missing {parent}"
            for (table, parent), count in sorted(broken.items())
        )
        raise MigrationRefused(
            f"migration refused and rolled back, the database is as it was: afterwards {found} "
            "(PRAGMA foreign_key_check)"
        )


run()
