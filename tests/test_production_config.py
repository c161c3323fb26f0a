"""config/production.example.toml is a working production configuration, checked the way the
program checks it at start."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from dripcourse import tasks
from dripcourse.db import make_engine
from dripcourse.errors import ConfigError
from dripcourse.sending.transport import SMTPTransport, transport_from_url
from dripcourse.settings import Settings, load_settings
from tests.conftest import REFLECTIONS_KEY, ROOT

EXAMPLE = ROOT / "config" / "production.example.toml"
DEFAULT = ROOT / "config" / "default.toml"
SECRET = {
    "DRIPCOURSE_SECRET_KEY": "a-long-random-key-shared-by-every-machine",
    "DRIPCOURSE_REFLECTIONS_KEY": REFLECTIONS_KEY,
}


def keys(path: Path) -> dict[str, str]:
    """Each setting in a TOML file with the section it is written under."""
    data = tomllib.loads(path.read_text())
    return {
        name: section
        for section, values in data.items()
        for name in (values if isinstance(values, dict) else [section])
    }


@pytest.fixture
def production() -> Settings:
    return load_settings(EXAMPLE, environ=SECRET)


def test_example_names_the_same_settings_as_the_defaults_in_the_same_sections():
    assert keys(EXAMPLE) == keys(DEFAULT)


def test_example_loads_as_a_production_set_up(production: Settings):
    assert production.database_url.startswith("postgresql+psycopg://")
    assert production.broker_url.startswith("redis://")
    assert production.base_url.startswith("https://")
    assert production.rate_limit_per_second > 0
    assert production.secret_key == SECRET["DRIPCOURSE_SECRET_KEY"]


def test_example_mail_url_is_smtp_with_starttls_and_login(production: Settings):
    smtp = transport_from_url(production.mail_url)

    assert isinstance(smtp, SMTPTransport)
    assert (smtp.port, smtp.starttls, smtp.implicit_tls) == (587, True, False)
    assert (smtp.username, smtp.password) == ("dripcourse", "CHANGE-ME")


def test_example_database_is_postgresql_through_psycopg_3(production: Settings):
    engine = make_engine(production.database_url)

    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    engine.dispose()


def test_secrets_come_from_the_environment(production: Settings):
    overridden = load_settings(
        EXAMPLE,
        environ={**SECRET, "DRIPCOURSE_MAIL_URL": "smtps://relay:s3cret@smtp.example.org:465"},
    )

    smtp = transport_from_url(overridden.mail_url)
    assert isinstance(smtp, SMTPTransport)
    assert (smtp.port, smtp.implicit_tls, smtp.password) == (465, True, "s3cret")


def test_postgresql_without_a_shared_secret_key_refuses_to_start():
    with pytest.raises(ConfigError, match="secret_key: .*DRIPCOURSE_SECRET_KEY"):
        load_settings(EXAMPLE, environ={})


def test_a_lease_shorter_than_the_smtp_timeout_is_refused():
    with pytest.raises(ConfigError, match="send_lease_seconds: must be longer"):
        load_settings(
            EXAMPLE,
            environ={**SECRET, "DRIPCOURSE_SEND_LEASE_SECONDS": "30"},
        )


@pytest.mark.parametrize(
    ("mail_url", "lease", "timeout", "ok"),
    [
        # A slow relay answering each of a send's replies after 4 s: 10 s is not a whole send.
        ("smtp://relay:25", 10, 5, False),
        ("smtp://relay:25", 46, 5, True),  # 9 replies x 5 s
        # STARTTLS and a login add replies: 14 x 20 s.
        ("smtp://u:p@relay:587?starttls=true", 280, 20, False),
        ("smtp://u:p@relay:587?starttls=true", 300, 20, True),
        ("file://var/outbox", 31, 30, True),
    ],
)
def test_the_lease_must_cover_a_whole_send_not_one_reply(
    mail_url: str, lease: int, timeout: int, ok: bool
) -> None:
    env = {
        **SECRET,
        "DRIPCOURSE_MAIL_URL": mail_url,
        "DRIPCOURSE_SEND_LEASE_SECONDS": str(lease),
        "DRIPCOURSE_SMTP_TIMEOUT_SECONDS": str(timeout),
    }
    if ok:
        assert load_settings(EXAMPLE, environ=env).send_lease_seconds == lease
    else:
        with pytest.raises(ConfigError, match="must be longer than a whole send can take"):
            load_settings(EXAMPLE, environ=env)


@pytest.fixture
def configured_app(production: Settings) -> Iterator[Celery]:
    before = tasks.runtime().settings
    yield tasks.configure(production)
    tasks.configure(before)


def test_celery_is_configured_for_at_least_once_delivery(
    configured_app: Celery, production: Settings
):
    conf = configured_app.conf

    assert conf.broker_url == production.broker_url
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    # Acknowledged only when done; a killed worker's task goes back to the queue.
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    # Redis hands an unacknowledged task to another worker after this: never mid-send.
    assert conf.broker_transport_options["visibility_timeout"] > production.send_lease_seconds
    assert conf.beat_schedule["tick"]["schedule"] == production.tick_seconds


def test_a_worker_started_before_init_refuses_to_start_and_makes_no_database(
    tmp_path: Path,
) -> None:
    """A worker started before `dripcourse init` made an empty SQLite file, which then looked
    set up to every other command, and failed each task on missing tables."""
    from tests.conftest import make_settings
    from tests.workers import worker_refusing_to_start

    database = tmp_path / "dripcourse.sqlite3"
    var = tmp_path / "var"
    # The embedded defaults: the key kept in var/, the broker a SQLite file there.
    settings = make_settings(
        tmp_path, secret_key="", broker_url=f"sqla+sqlite:///{var / 'broker.sqlite3'}"
    )
    done = worker_refusing_to_start(settings)
    assert done.returncode != 0
    assert "is not set up: run `dripcourse init` first" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not database.exists()
    # It left var/broker.sqlite3 and var/secret_key behind.
    assert not var.exists(), sorted(p.name for p in var.iterdir())
