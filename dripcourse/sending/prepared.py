"""The send path's statements for every message, compiled once and run on the driver's cursor.

A lesson's last look and its record are three small statements per message. Run through
SQLAlchemy, each execution built the statement's cache key, processed its parameters, wrapped
the driver's cursor in a result and checked the transaction: about twice the driver's own work
and a fifth of our CPU per message (benchmarks/RESULTS.md). Here each statement is compiled
once per dialect; an execution passes its values through the very bind processors SQLAlchemy
would use (UTC datetimes made naive, enums as their values) and hands the SQL to the driver.
A driver error comes back as SQLAlchemy's own exception (so ``db.is_outage`` knows an
outage), its parameters hidden as the engine hides them; the engine's cursor-execute
listeners are still told of each statement (without a context). Anywhere else (SQLite, or a
connection not in autocommit) ``run_together`` runs the statements through SQLAlchemy.

On PostgreSQL a statement given a name is prepared on the server, once per connection
(``PREPARE``), and ``run_script`` sends a transaction's steps as one string of ``EXECUTE``s
(psycopg's client-side cursor quotes the values), with its ``BEGIN`` or ``COMMIT`` when asked:
one round trip where the extended protocol takes one per statement and psycopg one more for
its own ``BEGIN``. The connection must be in autocommit mode, so that psycopg sends no
``BEGIN`` of its own; the transaction is the script's, and ending it with the connection's
commit or rollback still works (psycopg ends whatever transaction the server has open). Such
a connection must keep its session: behind a pool handing out a server connection per
transaction (pgbouncer's transaction mode) named statements are lost.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy import Connection, String
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_PARAMETER = re.compile(r"%\((\w+)\)s")
# A script's transaction reads committed, whatever the server's default: each statement sees
# what was committed before it began, so the record, though in the look's transaction, sees a
# zone changed during the send (repeatable read would show it the look's snapshot).
BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_PREPARED = "dripcourse.prepared"  # in a connection's info: name -> statement its server holds


class Prepared:
    """One Core statement, compiled for one dialect, with its values' processors; ``name``
    prepares it on PostgreSQL servers for ``run_script``."""

    def __init__(self, statement: Executable, dialect: Dialect, name: str = "") -> None:
        self.statement = statement
        self.name = ""
        compiled = statement.compile(dialect=dialect)
        # An IN list is written into the SQL at each execution: not for this.
        direct = dialect.paramstyle in ("pyformat", "named") and not any(
            bind.expanding for bind in compiled.bind_names
        )
        if not direct:
            return
        self.sql = str(compiled)
        # The values written into the statement (a status it sets, a NULL), processed once; and
        # the processors of ours, run per execution.
        self.fixed: dict[str, Any] = {}
        self.processors: dict[str, Callable[[Any], Any]] = {}
        literals: dict[str, str] = {}
        text_literal = String().literal_processor(dialect)
        for bind, key in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                if processor is not None:
                    self.processors[key] = processor
                continue
            value = bind.effective_value
            self.fixed[key] = fixed = value if processor is None else processor(value)
            # Written into the PREPARE only where the literal surely reads as the parameter
            # would: NULL for a value that is NULL once processed, and a processed string or
            # integer (a status) as SQLAlchemy writes a string or a number. Anything else (a
            # JSON null, an interval, bytes) stays a parameter.
            if fixed is None:
                literals[key] = "NULL"
            elif type(fixed) is str and text_literal is not None:
                literals[key] = text_literal(fixed)
            elif type(fixed) is int:
                literals[key] = str(fixed)
        self.error = dialect.loaded_dbapi.Error
        if name and dialect.name == "postgresql" and dialect.paramstyle == "pyformat":
            self.name = name
            # Known here, not asked of the cursor per row set (psycopg builds its description).
            self.returns_rows = bool(getattr(statement, "is_select", False)) or bool(
                compiled.effective_returning
            )
            # Each of our parameters once, in order of first use: $1, $2 ... in the PREPARE. A
            # value written into the statement is written into the PREPARE as SQLAlchemy writes
            # a literal: not sent with every execution, and known to the plan.
            used = dict.fromkeys(_PARAMETER.findall(self.sql))
            self.order = [key for key in used if key not in literals]
            numbered = _PARAMETER.sub(
                lambda m: literals.get(m[1]) or f"${self.order.index(m[1]) + 1}", self.sql
            )
            # Sent with no values, so psycopg leaves a doubled % doubled: undo it here.
            self.prepare = f"PREPARE {name} AS {numbered.replace('%%', '%')}"
            # Each value of an execution, in order: a constant SQLAlchemy would not write as a
            # literal (processed already), or one of ours and its processor.
            self.binders: list[tuple[str, Callable[[Any], Any] | None, bool]] = [
                (key, self.processors.get(key), key in self.fixed) for key in self.order
            ]

    def values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter of the statement, processed as SQLAlchemy would."""
        values = {**self.fixed, **given}
        for name, processor in self.processors.items():
            values[name] = processor(given[name])
        return values

    def ordered(self, given: Mapping[str, Any]) -> list[Any]:
        """The values of an execution of the prepared statement, processed, in its order."""
        return [
            self.fixed[key] if fixed else given[key] if p is None else p(given[key])
            for key, p, fixed in self.binders
        ]

    def run(self, conn: Connection, given: Mapping[str, Any]) -> Any:
        """Execute in ``conn``'s transaction; the driver's cursor (rowcount, fetchone)."""
        return run_together(conn, [(self, given)])[0]


def run_together(
    conn: Connection, steps: Sequence[tuple[Prepared, Mapping[str, Any]]]
) -> list[Any]:
    """Execute ``steps`` in order through SQLAlchemy, in ``conn``'s transaction: where no
    script can go (SQLite, a connection not in autocommit); a result for each."""
    return [conn.execute(step.statement, dict(given)) for step, given in steps]


class Done:
    """What one statement of a script gave: its row count and its rows."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rowcount: int, rows: list[Any]) -> None:
        self.rowcount, self.rows = rowcount, rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None


def scripted(conn: Connection, steps: Sequence[Prepared]) -> bool:
    """Whether ``steps`` can go as one script on ``conn`` (PostgreSQL, autocommit, named)."""
    return (
        conn.dialect.name == "postgresql"
        and all(step.name for step in steps)
        and bool(
            conn.connection.driver_connection.autocommit  # type: ignore[union-attr]
        )
    )


def run_script(
    conn: Connection,
    steps: Sequence[tuple[Prepared, Mapping[str, Any]] | str],
    *,
    begin: bool = False,
    commit: bool = False,
) -> list[Done]:
    """Execute ``steps`` in one round trip (after ``BEGIN`` and before ``COMMIT`` if asked);
    a ``Done`` for each statement. A step given as a string ("COMMIT", ``BEGIN``) is sent as it
    is, and gives no ``Done``. Only where ``scripted`` says so.

    The server runs them one after the other, each with a snapshot of its own (read
    committed), so a step after a lock sees what was committed before the lock was granted.
    A step that fails stops the rest; the transaction is then aborted and must be rolled back.
    """
    cursor = _client_cursor(conn)
    statements = [step for step in steps if not isinstance(step, str)]
    _prepare(conn, cursor, [step for step, _ in statements])
    items: list[tuple[Prepared, Mapping[str, Any]] | str] = [
        *([BEGIN] if begin else []),
        *steps,
        *(["COMMIT"] if commit else []),
    ]
    values: list[Any] = []
    for item in items:
        if not isinstance(item, str):
            values.extend(item[0].ordered(item[1]))
    events = conn.dispatch
    told: list[tuple[str, dict[str, Any]]] = []
    if events.before_cursor_execute or events.after_cursor_execute:
        # Listeners see each statement as its own SQL, with all its parameters.
        told = [
            (item[0].sql, item[0].values(item[1])) for item in items if not isinstance(item, str)
        ]
    for sql, mine in told:
        for listener in events.before_cursor_execute:
            listener(conn, cursor, sql, mine, None, False)
    script = _script(tuple(item if isinstance(item, str) else item[0] for item in items))
    done: list[Done] = []
    try:
        cursor.execute(script, values)
        for item in items:
            if not isinstance(item, str):
                rows = cursor.fetchall() if item[0].returns_rows else []
                done.append(Done(cursor.rowcount, rows))
            cursor.nextset()
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise_as_sqlalchemy(conn, exc, script, values)
    for sql, mine in told:
        for listener in events.after_cursor_execute:
            listener(conn, cursor, sql, mine, None, False)
    return done


@functools.lru_cache(maxsize=32)
def _script(shape: tuple[Prepared | str, ...]) -> str:
    """The SQL of a script of this shape, its values in order (psycopg quotes them in)."""
    return "; ".join(
        item
        if isinstance(item, str)
        else f"EXECUTE {item.name}({', '.join(['%s'] * len(item.order))})"
        for item in shape
    )


def _client_cursor(conn: Connection) -> Any:
    """The connection's client-side cursor (values quoted into the SQL by psycopg), kept."""
    info = conn.connection.info
    cursor = info.get("dripcourse.script_cursor")
    if cursor is None:
        import psycopg  # the only driver scripts run on; imported where PostgreSQL is used

        cursor = info["dripcourse.script_cursor"] = psycopg.ClientCursor(
            conn.connection.driver_connection
        )
    return cursor


def _prepare(conn: Connection, cursor: Any, steps: Sequence[Prepared]) -> None:
    """PREPARE each of ``steps`` the server does not hold for this connection.

    What it holds is asked of the server once, then kept with the connection until
    ``unsure_of_prepared`` says to ask again: psycopg deallocates every prepared statement of
    the session when it rolls back a transaction after preparing statements of its own.

    A name is trusted only with our own statement behind it: one the session holds with
    another (a pooler handing on a server connection unreset, another program) is replaced.
    Executed, such a statement would answer for the last look, and say "go" to anyone.
    """
    info = conn.connection.info
    known: dict[str, str] | None = info.get(_PREPARED)
    if known is None:
        asked = "SELECT name, statement FROM pg_prepared_statements"
        try:
            cursor.execute(asked)
            known = info[_PREPARED] = dict(cursor.fetchall())
        except steps[0].error as exc:
            _raise_as_sqlalchemy(conn, exc, asked, {})
    for step in steps:
        held = known.get(step.name)
        if held is step.prepare:  # the usual case, once checked: no string compared
            continue
        if held == step.prepare:  # as the server said: ours
            known[step.name] = step.prepare
            continue
        # Separately: the server keeps the whole query string a statement was prepared in.
        for sql in ([f"DEALLOCATE {step.name}"] if held is not None else []) + [step.prepare]:
            try:
                cursor.execute(sql)
            except step.error as exc:
                _raise_as_sqlalchemy(conn, exc, sql, {})
        known[step.name] = step.prepare


def unsure_of_prepared(conn: Connection) -> None:
    """After a rollback on ``conn`` (psycopg may have deallocated every prepared statement):
    the next script asks the server what it holds."""
    conn.connection.info.pop(_PREPARED, None)


def _raise_as_sqlalchemy(conn: Connection, exc: Exception, sql: str, values: Any) -> NoReturn:
    """A driver error raised as SQLAlchemy would raise it (so ``db.is_outage`` knows an outage).

    A connection the server ended is thrown away, as SQLAlchemy does: closing it would try a
    rollback on it.
    """
    lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
    if lost:
        conn.invalidate(exc)
    raise DBAPIError.instance(
        sql,
        values,
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=conn.dialect,
    ) from exc
