"""`send-test` mails one lesson to a staff address, marked [TEST], and to nobody else."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from dripcourse import db
from dripcourse.cli import cli
from dripcourse.models import Delivery, Enrollment
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import EMAILS, make_settings, utc
from tests.smtp_sink import SMTPSink
from tests.workers import settings_env

STAFF = "editor@example.org, Reviewer@Example.org"


@pytest.fixture
def smtp_settings(tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink) -> Settings:
    return make_settings(
        tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, staff_emails=STAFF
    )


def send(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, ["send-test", *args], env=settings_env(settings))


def test_a_test_send_reaches_the_staff_address_marked_test(
    smtp_settings: Settings, smtp_sink: SMTPSink
) -> None:
    result = send(smtp_settings, "white-coat", "4", "--to", "reviewer@example.org")
    assert result.exit_code == 0, result.output
    (received,) = smtp_sink.handler.messages()
    assert received.rcpt_tos == ["reviewer@example.org"]
    msg = received.message
    assert msg["Subject"] == "[TEST] Day 4: You were never meant to do this alone"
    assert msg["To"] == "reviewer@example.org"
    assert "Good morning, Dr. Reader." in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_a_test_send_as_a_subscriber_uses_their_greeting_but_touches_nothing(
    smtp_settings: Settings, smtp_sink: SMTPSink
) -> None:
    rt = Runtime(smtp_settings)
    now = utc(2026, 11, 20, 12)
    course = rt.catalog.course("white-coat")
    with db.transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, "now", now)
        signup = check_signup("amara@example.org", "Dr. Amara Okafor", "UTC")
        enrollment.enroll(session, cohort, course, signup, now)
    with rt.sessions() as session:
        before = session.execute(select(Enrollment.day, Enrollment.next_send_at)).all()

    result = send(
        smtp_settings, "white-coat", "2", "--to", "editor@example.org", "--as", "amara@example.org"
    )
    assert result.exit_code == 0, result.output
    (received,) = smtp_sink.handler.messages()
    assert received.rcpt_tos == ["editor@example.org"]
    text = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Good morning, Dr. Okafor." in text
    with rt.sessions() as session:
        assert session.execute(select(Enrollment.day, Enrollment.next_send_at)).all() == before
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    rt.close()


@pytest.mark.parametrize(
    ("to", "staff", "message"),
    [
        ("amara@example.org", STAFF, "amara@example.org is not in the staff allow-list"),
        ("editor@example.org.evil.net", STAFF, "is not in the staff allow-list"),
        ("editor@example.org", "", "no staff addresses are set"),
        ("not an address", STAFF, "--to: 'not an address' is not an email address"),
    ],
)
def test_an_address_off_the_allow_list_is_refused_and_nothing_is_sent(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink, to: str, staff: str, message: str
) -> None:
    settings = make_settings(
        tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, staff_emails=staff
    )
    result = send(settings, "white-coat", "1", "--to", to)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert smtp_sink.handler.messages() == []


def test_staff_emails_takes_a_toml_list(tmp_path: Path) -> None:
    from dripcourse.settings import load_settings

    config = tmp_path / "settings.toml"
    config.write_text('[staff]\nstaff_emails = ["a@example.org", "b@example.org"]\n')
    settings = load_settings(config, environ={})
    assert settings.staff_addresses == ("a@example.org", "b@example.org")


def test_without_staff_addresses_the_error_says_where_to_set_them(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(
        f'database_url = "{sqlite_url}"\nmail_url = "{smtp_sink.url}"\n'
        f'var_dir = "{tmp_path / "var"}"\nemails_dir = "{EMAILS}"\n'
    )
    result = CliRunner().invoke(
        cli,
        ["send-test", "white-coat", "1", "--to", "editor@example.org"],
        env={"DRIPCOURSE_CONFIG": str(config)},
    )
    assert result.exit_code == 1
    assert (
        'add yours as staff_emails = ["editor@example.org"] under [staff] in '
        f"{config}, or set DRIPCOURSE_STAFF_EMAILS=editor@example.org"
    ) in " ".join(result.output.split())
    assert smtp_sink.handler.messages() == []
