"""`dripcourse retry-failed`: failed enrollments back on schedule, inside the local window."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import select

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from tests.conftest import make_settings, utc
from tests.smtp_sink import SMTPSink

NOW = utc(2026, 11, 25, 12)
PEOPLE = {
    "full@example.org": "Asia/Tokyo",  # mailbox full: fails for a day
    "gone@example.org": "Europe/Madrid",  # hard bounce
    "fine@example.org": "Europe/Madrid",
}


def claim(rt: Runtime, now: dt.datetime) -> list[int]:
    ids: list[int] = []
    delivery.tick(rt, now, ids.extend)
    return ids


def states(rt: Runtime) -> dict[str, tuple[EnrollmentStatus, DeliveryStatus]]:
    with transaction(rt.sessions) as session:
        return {
            email: (e, d)
            for email, e, d in session.execute(
                select(Subscriber.email, Enrollment.status, Delivery.status)
                .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
                .join(Delivery, Delivery.enrollment_id == Enrollment.id)
            )
        }


def test_failed_enrollments_come_back_at_their_next_local_morning_and_bounced_ones_do_not(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    settings = make_settings(
        tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, retry_hours=1.0
    )
    rt = Runtime(settings)
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        day_before = utc(2026, 11, 24, 12)
        cohort = enrollment.create_cohort(session, "spring", course, "2026-11-25", day_before)
        for address, zone in PEOPLE.items():
            signup = check_signup(address, "", zone)
            enrollment.enroll(session, cohort, course, signup, day_before)
    smtp_sink.handler.reject["full@example.org"] = "452 4.2.2 Mailbox full"
    smtp_sink.handler.reject["gone@example.org"] = "550 5.1.1 No such user"
    # Tokyo's 07:00 on the 25th is 22:00 UTC on the 24th; Madrid's is 06:00 UTC. The mailbox is
    # still full an hour later, when the retry budget of one hour is spent.
    for now in (utc(2026, 11, 24, 22), utc(2026, 11, 24, 23), utc(2026, 11, 25, 6)):
        for i in claim(rt, now):
            sending.send_delivery(rt, i, now)
    assert states(rt) == {
        "full@example.org": (EnrollmentStatus.FAILED, DeliveryStatus.FAILED),
        "gone@example.org": (EnrollmentStatus.BOUNCED, DeliveryStatus.FAILED),
        "fine@example.org": (EnrollmentStatus.ACTIVE, DeliveryStatus.SENT),
    }
    smtp_sink.handler.reject.clear()

    # 13:00 UTC is 22:00 in Tokyo: the window has closed there, so the lesson waits for 07:00.
    env = {
        "DRIPCOURSE_DATABASE_URL": sqlite_url,
        "DRIPCOURSE_MAIL_URL": smtp_sink.url,
        "DRIPCOURSE_SECRET_KEY": "k" * 40,
        "DRIPCOURSE_VAR_DIR": str(tmp_path / "var"),
    }
    with freeze_time(NOW + dt.timedelta(hours=1)):
        result = CliRunner().invoke(cli, ["retry-failed", "--cohort", "spring"], env=env)
    assert result.exit_code == 0, result.output
    assert "full@example.org (spring): day 1 at 2026-11-25 22:00 UTC" in result.output
    assert "gone@example.org" not in result.output
    assert "1 failed enrollment(s) back on schedule" in result.output

    assert claim(rt, utc(2026, 11, 25, 21, 59)) == []
    tokyo_7am = utc(2026, 11, 25, 22)
    again = claim(rt, tokyo_7am)
    assert [sending.send_delivery(rt, i, tokyo_7am) for i in again] == [Outcome.SENT]
    assert states(rt)["full@example.org"] == (EnrollmentStatus.ACTIVE, DeliveryStatus.SENT)
    assert smtp_sink.handler.counts()["full@example.org"] == 1
    assert smtp_sink.handler.counts().get("gone@example.org", 0) == 0
    rt.close()


def test_retry_failed_names_an_unknown_cohort(tmp_path: Path, sqlite_url: str) -> None:
    env = {"DRIPCOURSE_DATABASE_URL": sqlite_url, "DRIPCOURSE_SECRET_KEY": "k" * 40}
    result = CliRunner().invoke(cli, ["retry-failed", "--cohort", "nope"], env=env)
    assert result.exit_code == 1
    assert "no cohort named 'nope'" in result.output
