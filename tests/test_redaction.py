"""Passwords inside the URLs of the settings are never printed or logged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from dripcourse.cli import cli
from dripcourse.errors import ConfigError
from dripcourse.redact import redact_url
from dripcourse.settings import load_settings
from tests.conftest import REDIS_URL, make_settings
from tests.smtp_sink import _free_port as free_port
from tests.workers import settings_env, wait_until


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smtp://relay:s3cret@smtp.example.org:587?starttls=true", "smtp://relay:***@smtp.example.org:587?starttls=true"),
        ("smtps://relay:p%40ss@smtp.example.org", "smtps://relay:***@smtp.example.org"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:s3:cret@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("postgresql+psycopg://app:s3cret@db/dripcourse", "postgresql+psycopg://app:***@db/dripcourse"),
        ("postgresql+psycopg://app@db/x?password=s3cret&sslmode=require", "postgresql+psycopg://app@db/x?password=***&sslmode=require"),
        ("smtp://relay:s3cret@host:notaport", "smtp://relay:***@host:notaport"),
        ("smtp://relay:s3cret@[broken", "smtp://***"),
        ("sqla+sqlite:///var/broker.sqlite3", "sqla+sqlite:///var/broker.sqlite3"),
        ("file://var/outbox", "file://var/outbox"),
        ("console://", "console://"),
        # A password holding an unencoded /, ? or #: the parser ends the host early.
        ("imaps://u:Hunter2/xyz@host/INBOX", "imaps://u:***@host/INBOX"),
        ("smtp://relay:a?b#c@relay.example.org:587", "smtp://relay:***@relay.example.org:587"),
        ("redis://:p/q@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)  # fmt: skip
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("DRIPCOURSE_DATABASE_URL", "mysql://app:s3cret@db/dripcourse"),
        ("DRIPCOURSE_BROKER_URL", "amqp://app:s3cret@rabbit//"),
        ("DRIPCOURSE_MAIL_URL", "pigeon://app:s3cret@loft"),
        ("DRIPCOURSE_BASE_URL", "ftp://app:s3cret@example.org"),
        ("DRIPCOURSE_MAIL_URL", "pigeon://app:s3cret/x@loft"),
        ("DRIPCOURSE_DATABASE_URL", "mysql://app:s3cret?x@db/dripcourse"),
    ],
)
def test_a_wrong_setting_is_named_without_its_password(name: str, url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={name: url})
    assert "s3cret" not in str(raised.value)
    assert "app:***@" in str(raised.value)
    result = CliRunner().invoke(cli, ["status"], env={name: url})
    assert result.exit_code == 1
    assert "s3cret" not in result.output


@pytest.mark.slow
def test_dripcourse_run_prints_its_urls_without_passwords(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    # PostgreSQL here trusts local connections and Redis has no password: neither is checked,
    # but both are in the URLs, as in production.
    database = make_url(postgres_url).set(password="db-s3cret").render_as_string(False)
    broker = redis_url.replace("redis://", "redis://:broker-s3cret@")
    settings = make_settings(
        tmp_path,
        database_url=database,
        broker_url=broker,
        mail_url="smtp://relay:mail-s3cret@127.0.0.1:2525?starttls=true",
        web_port=free_port(),
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dripcourse")), "run", "--concurrency", "1"],
            cwd=tmp_path,
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: "web pages at" in log.read_text(errors="replace"),
            60,
            "the start-up lines",
            lambda: log.read_text(errors="replace"),
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    text = log.read_text(errors="replace")
    first = text.splitlines()[0]
    assert first.startswith("dripcourse: database postgresql+psycopg://postgres:***@")
    assert "broker redis://:***@" in first and "mail smtp://relay:***@127.0.0.1:2525" in first
    assert "s3cret" not in text
    assert REDIS_URL.rsplit("/", 1)[0].split("//")[1] in text  # the host is still shown
