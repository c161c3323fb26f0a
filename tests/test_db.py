"""Database errors never carry statement parameters (a reflection's text) into messages or logs."""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError, OperationalError

from dripcourse import db
from dripcourse.models import Subscriber
from tests.conftest import utc


def test_a_failed_statement_does_not_echo_its_parameters(database_url: str) -> None:
    engine = db.make_engine(database_url)
    row = {
        "email": "dup@example.org",
        "name": "Private Words",
        "timezone": "UTC",
        "created_at": utc(2026, 1, 1),
    }
    with engine.begin() as conn:
        conn.execute(insert(Subscriber), row)
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert(Subscriber), row)
    assert "Private Words" not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
    engine.dispose()


def test_a_second_engine_in_one_process_never_hides_the_first_ones_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`dripcourse run` opens the database twice (worker and web pages). Opening and closing
    the file to set its mode dropped the process's SQLite locks, and the write-ahead log was
    then deleted under the first engine: its later writes reached no one else."""
    import subprocess
    import sys

    from sqlalchemy import text

    path = tmp_path / "db.sqlite3"
    url = f"sqlite:///{path}"
    first = db.make_engine(url)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    held = first.connect()
    held.execute(text("INSERT INTO t VALUES (1)"))
    held.commit()
    db.make_engine(url)  # as `run` does for its web pages

    def count_in_another_process() -> str:
        # Another process has locks of its own; a CLI command is such a process.
        return subprocess.run(
            [sys.executable, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
             "print(c.execute('select count(*) from t').fetchone()[0]); c.close()", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert count_in_another_process() == "1"
    held.execute(text("INSERT INTO t VALUES (2)"))
    held.commit()
    seen = count_in_another_process()
    held.close()
    first.dispose()
    assert seen == "2"


@pytest.mark.postgres
def test_many_threads_sending_at_once_never_wait_for_a_pooled_connection(
    postgres_url: str,
) -> None:
    """A thread-pool worker's sending thread holds a connection for its batch's records and
    takes a second one for a moment (a lease renewal, a careful record): with the pool's
    default 5 + 10, sixteen threads could hold all fifteen and wait for each other until the
    pool's timeout. The pool now grows with the threads that use it."""
    engine = db.make_engine(postgres_url)
    try:
        held = [engine.connect() for _ in range(24)]  # blocked at the 16th before
        for conn in held:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        for conn in held:
            conn.close()
        # What the pool keeps once they are given back stays bounded.
        assert engine.pool.checkedin() <= 10
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("query", "argument"),
    [("", {"connect_timeout": 2}), ("?connect_timeout=2", {"connect_timeout": 60})],
    ids=["the setting", "the URL's own"],
)
def test_a_postgresql_server_that_takes_the_connection_and_never_answers_fails_in_time(
    query: str, argument: dict[str, int]
) -> None:
    """A host that accepts the TCP connection and says nothing (a hung server, a proxy whose
    backend is gone) fails within the connect timeout instead of holding a `pipe` or a
    `poll` until the operating system gives up; a timeout in the URL wins."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    engine = db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/x{query}", **argument)
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="timeout"), engine.connect():
            pass
    finally:
        engine.dispose()
        silent.close()
    assert time.monotonic() - started < 10
