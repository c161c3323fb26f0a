"""Engine, sessions and schema migrations; and waiting out a database that is briefly away."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Integer, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dripcourse.errors import MigrationRefused, NotSetUp
from dripcourse.files import private_sqlite_file

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(
    url: str, *, lock_timeout: float = 30.0, create: bool = True, connect_timeout: int = 10
) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on.

    Statement parameters are kept out of error messages: they can hold a subscriber's
    reflection, and error messages end up in logs. ``lock_timeout`` is how long one SQLite
    statement waits for another writer's lock before it fails.

    ``connect_timeout`` (seconds; PostgreSQL) bounds the wait for a server that takes the
    connection and never answers, unless the URL sets its own: an inbound `pipe` or `poll`
    then fails as a temporary error instead of holding the mail server's delivery.

    ``create=False`` refuses a SQLite file that does not exist (NotSetUp) rather than let
    SQLite make an empty one on first connect: a command run before `dripcourse init` would
    otherwise leave a database behind that looks set up and is not.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser()
            if not create and not path.exists():
                raise NotSetUp(not_set_up(parsed.render_as_string(hide_password=True)))
            private_sqlite_file(path)
        engine = create_engine(url, connect_args={"timeout": lock_timeout}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten, not left in free pages: forget means gone from the file.
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
            cur.close()

        return engine
    # No cap on the connections in use: a thread-pool worker's sending thread holds one for its
    # batch's records and takes a second for a moment, so a cap below twice the threads could
    # leave every thread waiting for another's. The worker's concurrency bounds them (keep
    # 2 x threads x workers under the server's max_connections); ten stay open when idle.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": connect_timeout}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=-1,
        hide_parameters=True,
        connect_args=connect_args,
    )


def write_back_deletions(engine: Engine) -> None:
    """On SQLite, copy what the write-ahead log holds into the database file and empty the log.

    After a forget, the log still holds copies of the pages as they were written, the person's
    rows in them, until a checkpoint resets it. A reader holding an old snapshot can keep part
    of it; the next checkpoint (SQLite makes one every 1000 pages) finishes the job.
    PostgreSQL: deleted rows stay in the table's pages until VACUUM (autovacuum) reuses them.
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """``session.begin_nested()``, which on SQLite never commits the caller's transaction.

    pysqlite's own transaction handling begins a transaction only before a write, so a
    savepoint taken before any write opens one of its own and releasing it commits,
    behind the caller's back and past its rollback. SQLAlchemy's documented remedy is to say
    BEGIN ourselves; this says it for the caller's transaction, when none is open yet, as
    BEGIN IMMEDIATE: it waits (busy_timeout) for another writer, then holds the write lock,
    so the reads and writes after it see one state of the file. The whole engine does not
    take this on: the compare-and-set steps elsewhere read before they write and expect
    their write to see what others committed meanwhile, which a snapshot from an earlier
    BEGIN would refuse ("database is locked").
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        if raw is not None and not raw.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    with session.begin_nested():
        yield


def postgres(session: Session) -> bool:
    """Whether ``session`` talks to PostgreSQL (else SQLite)."""
    return session.get_bind().dialect.name == "postgresql"


def among(session: Session, column: Any, ids: Collection[int]) -> Any:
    """``column`` among ``ids``: on PostgreSQL one array parameter however many ids there are,
    so the statement compiles once and its SQL is the same for every batch (an IN list is
    written out at each execution, its SQL a new one for psycopg each time); elsewhere IN."""
    if postgres(session):
        return column == any_(bindparam(None, list(ids), type_=_IDS))
    return column.in_(ids)


def among_ids(column: Any, name: str, *, postgres: bool) -> Any:
    """``column`` among the ids given as parameter ``name`` at each execution, as ``among``
    writes it, for a statement built once."""
    if postgres:
        return column == any_(bindparam(name, type_=_IDS))
    return column.in_(bindparam(name, expanding=True))


# One type for every array of ids: a new ARRAY per statement made SQLAlchemy work out its cache
# key again each time (by inspecting the type's constructor), longer than the statement's own.
_IDS = ARRAY(Integer)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(
    engine: Engine, reflections_cipher: object | None = None, *, revision: str = "head"
) -> None:
    """Create or upgrade the schema to the newest migration (or to ``revision``).

    ``reflections_cipher`` (an encryption.ReflectionCipher) seals reflections stored in plain
    text by versions before sealing; without one, a database holding such rows is refused.
    """
    _migrate(engine, command.upgrade, revision, reflections_cipher)


def downgrade(engine: Engine, revision: str, reflections_cipher: object | None = None) -> None:
    """Take the schema back to ``revision``, dropping the columns and tables newer ones added.

    Only the newer version's code knows how to undo its migrations, so it runs this, after a
    backup (docs/production.md says what is kept and what goes). ``reflections_cipher`` opens
    sealed reflections again for a revision before sealing; without one, they are refused.
    """
    _migrate(engine, command.downgrade, revision, reflections_cipher)


def _migrate(
    engine: Engine,
    step: Callable[[Config, str], None],
    revision: str,
    reflections_cipher: object | None,
) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    # No transaction yet: migrations/env.py begins it, after turning SQLite's foreign keys off
    # (which cannot change inside one). One transaction for the whole run, on both databases.
    with engine.connect() as conn:
        newer = _newer_release(conn, ScriptDirectory.from_config(cfg))
        conn.rollback()
        if newer is not None:
            raise MigrationRefused(newer)
        cfg.attributes["connection"] = conn
        cfg.attributes["reflections_cipher"] = reflections_cipher
        step(cfg, revision)


def schema_problem(engine: Engine) -> str | None:
    """Why this database cannot be used yet (never set up, or set up by an older version),
    as one line telling the operator what to run; None when it is at the newest migration.

    A database out of reach raises its error (see ``is_outage``) rather than being called
    "not set up": `dripcourse init` would meet the same closed port.
    """
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        if is_outage(exc):
            raise
        current = set()  # a file that is not a database has the same remedy as none
    where = engine.url.render_as_string(hide_password=True)
    if not current:
        return not_set_up(where)
    scripts = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    if current == set(scripts.get_heads()):
        return None
    unknown = _unknown(scripts, current)
    if unknown:
        return _newer(where, unknown)
    return f"the database {where} is from an older version: run `dripcourse init` to upgrade it"


def _newer_release(conn: Connection, scripts: ScriptDirectory) -> str | None:
    """Why a migration cannot start: the database is at a revision this release does not have."""
    unknown = _unknown(scripts, set(MigrationContext.configure(conn).get_current_heads()))
    if not unknown:
        return None
    return _newer(conn.engine.url.render_as_string(hide_password=True), unknown)


def _newer(where: str, unknown: list[str]) -> str:
    return (
        f"the database {where} was upgraded by a newer version of dripcourse (revision "
        f"{', '.join(unknown)}): run that version, or go back with it as docs/production.md "
        'says ("Going back to an older release")'
    )


def _unknown(scripts: ScriptDirectory, revisions: set[str]) -> list[str]:
    """The revisions that no migration of this release has."""
    unknown = []
    for revision in sorted(revisions):
        try:
            known = scripts.get_revision(revision) is not None
        except Exception:  # noqa: BLE001 - alembic raises its own errors for an unknown revision
            known = False
        if not known:
            unknown.append(revision)
    return unknown


def refuse_newer(engine: Engine) -> None:
    """Raise MigrationRefused when a newer release upgraded this database.

    Anything else (not set up yet, out of reach) is left to the first real statement, which
    says so in its own words.
    """
    try:
        with engine.connect() as conn:
            newer = _newer_release(
                conn, ScriptDirectory.from_config(alembic_config(str(engine.url)))
            )
    except DBAPIError:
        return
    if newer is not None:
        engine.dispose()
        raise MigrationRefused(newer)


def check_schema(engine: Engine) -> None:
    """Raise NotSetUp, saying what to run, unless the database is at the newest migration.

    For a command that would otherwise start something before its first query (a web
    server, the broker's own file) and only then find out.
    """
    problem = schema_problem(engine)
    if problem is not None:
        raise NotSetUp(problem)


def not_set_up(where: str) -> str:
    """One line telling the operator to make the database ``where`` names."""
    return f"the database {where} is not set up: run `dripcourse init` first"


def unavailable(engine: Engine, exc: DBAPIError) -> str:
    """One line saying that the database is out of reach, and the driver's reason."""
    reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines() or ["?"]
    where = engine.url.render_as_string(hide_password=True)
    return f"the database {where} is unavailable: {reason[0]}"


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was out of reach or busy, not that the work was wrong.

    A refused or dropped connection, a server shutting down, a SQLite file locked by another
    writer past its busy timeout: the same transaction can simply be run again later. A
    constraint violation or a bad statement is not an outage and is never retried.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def retry_outages(work: Callable[[], T], *, what: str, patience: float | None = None) -> T:
    """Run ``work`` (one whole transaction) again for as long as the database is away.

    Waits about 0.5 s, 1 s, 2 s ... up to 10 s between tries and logs each wait with ``what``,
    so an operator sees why things were slow. Gives up, raising the last error, after
    ``patience`` seconds; ``None`` never gives up (for work that must not be lost, such as
    recording a message the mail server has already accepted).
    """

    start = time.monotonic()
    try:
        return work()  # the usual case, without building the retrying machinery
    except Exception as exc:
        if not is_outage(exc):
            raise
        first: Exception | None = exc

    def again() -> T:
        # The first try's failure, replayed as the retrying's own first try: its wait, its
        # log line and its count are those of a failure met inside it.
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return work()

    def say(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None
        log.warning(
            "%s: database unavailable (try %d, waiting %.1fs): %s",
            what,
            state.attempt_number,
            state.upcoming_sleep,
            state.outcome.exception(),
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_outage),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5),
        stop=tenacity.stop_never
        if patience is None
        else tenacity.stop_after_delay(max(0.0, patience - (time.monotonic() - start))),
        before_sleep=say,
        sleep=lambda seconds: _pause(seconds),
        reraise=True,
    )
    return retrying(again)
