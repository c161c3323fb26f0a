"""Shared fixtures: a migrated database per test, a Runtime, a real SMTP server, services."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dripcourse import db
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.smtp_sink import SMTPSink

ROOT = Path(__file__).resolve().parent.parent
EMAILS = ROOT / "emails"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get(
    "DRIPCOURSE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DRIPCOURSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# A fixed reflections key, so tests on PostgreSQL (where one is required) start like production.
REFLECTIONS_KEY = "x-flSXSEMrooNmn9VWj9U9CVPgN67ur1kb3gOpFZ_io="


def service_missing(what: str, why: object) -> None:
    """In CI a missing service is a failure; on a laptop without it, a skip."""
    message = f"{what} not reachable ({why})"
    if IN_CI:
        pytest.fail(message + "; CI=true requires it")
    pytest.skip(message)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'dripcourse.sqlite3'}",
        "broker_url": "memory://",
        "mail_url": f"file://{tmp_path / 'outbox'}",
        "base_url": "https://course.example.org",
        "secret_key": "test-secret-key-of-at-least-32-bytes",
        "reflections_key": REFLECTIONS_KEY,
        "emails_dir": str(EMAILS),
        "var_dir": str(tmp_path / "var"),
        "message_id_domain": "course.example.org",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head; each test gets a copy (migrations run once)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    target = tmp_path / "dripcourse.sqlite3"
    shutil.copy(migrated_sqlite, target)
    return f"sqlite:///{target}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, migrated PostgreSQL database for this test, dropped afterwards."""
    admin_url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not there"
        service_missing("PostgreSQL", exc)
    name = f"dripcourse_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """A Redis database emptied for this test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        service_missing("Redis", exc)
    return REDIS_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test on the embedded SQLite and again on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, database_url=sqlite_url)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    sink = SMTPSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def outbox(settings: Settings) -> Path:
    return Path(settings.mail_url.removeprefix("file://"))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)
