"""The send path's statements for every message, compiled once and run on the driver's cursor.

A lesson's last look and its record are three small statements per message. Run through
SQLAlchemy, each execution built the statement's cache key, processed its parameters, wrapped
the driver's cursor in a result and checked the transaction: about twice the driver's own work
and a fifth of our CPU per message (benchmarks/RESULTS.md). Here each statement is compiled
once per dialect; an execution passes its values through the very bind processors SQLAlchemy
would use (UTC datetimes made naive, enums as their values) and hands the SQL to the cursor of
the connection's current transaction. A driver error comes back as SQLAlchemy's own exception
(so ``db.is_outage`` knows an outage), its parameters hidden as the engine hides them; the
engine's cursor-execute listeners are still told of each statement (without a context).

Only for drivers taking named parameters (psycopg); any other runs the statement through
SQLAlchemy as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable


class Prepared:
    """One Core statement, compiled for one dialect, with its values' processors."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=dialect)
        # An IN list is written into the SQL at each execution: not for this.
        self.direct = dialect.paramstyle in ("pyformat", "named") and not any(
            bind.expanding for bind in compiled.bind_names
        )
        if not self.direct:
            return
        self.sql = str(compiled)
        self.fixed: dict[str, Any] = {}
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:  # a value written into the statement, not one of ours
                self.fixed[name] = bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        self.error = dialect.loaded_dbapi.Error

    def values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter of the statement, processed as SQLAlchemy would."""
        values = {**self.fixed, **given}
        for name, processor in self.processors.items():
            values[name] = processor(values[name])
        return values

    def run(self, conn: Connection, given: Mapping[str, Any]) -> Any:
        """Execute in ``conn``'s transaction; the driver's cursor (rowcount, fetchone)."""
        return run_together(conn, [(self, given)])[0]


def run_together(
    conn: Connection, steps: Sequence[tuple[Prepared, Mapping[str, Any]]]
) -> list[Any]:
    """Execute ``steps`` in order in ``conn``'s transaction; a cursor (or result) for each.

    With psycopg they go to the server in one round trip (its pipeline mode): the server
    still runs them one after the other, each statement with a snapshot taken when it
    starts, so a statement after a lock sees what was committed before the lock was granted.
    """
    if not all(step.direct for step, _ in steps):
        return [conn.execute(step.statement, dict(given)) for step, given in steps]
    driver = conn.connection.driver_connection
    pipeline = getattr(driver, "pipeline", None) if len(steps) > 1 else None
    events = conn.dispatch
    cursors: list[Any] = []
    sent: list[tuple[str, dict[str, Any]]] = []
    sql, values = "", {}
    try:
        with pipeline() if pipeline is not None else contextlib.nullcontext():
            for step, given in steps:
                sql, values = step.sql, step.values(given)
                cursor = conn.connection.cursor()
                for listener in events.before_cursor_execute:  # listeners see every statement
                    listener(conn, cursor, sql, values, None, False)
                cursor.execute(sql, values)
                cursors.append(cursor)
                sent.append((sql, values))
    except steps[0][0].error as exc:
        # A connection the server ended is thrown away, as SQLAlchemy does: closing it
        # would try a rollback on it.
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            values,
            exc,
            steps[0][0].error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc
    for (sql, values), cursor in zip(sent, cursors, strict=True):
        for listener in events.after_cursor_execute:
            listener(conn, cursor, sql, values, None, False)
    return cursors
