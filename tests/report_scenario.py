"""A cohort whose every number is known, for the report's tests. No tests here.

Cohort "spring" (the sample course: 7 lessons, window 07:00-21:00 local), 20 people, seen at
NOW (2025-03-20 12:00 UTC):

- p01-p12 completed all 7 lessons (p11 and p12 live in Tokyo, the rest in London);
- p13, p14 unsubscribed after lesson 2, p15 after lesson 5;
- p16 bounced: lesson 1 arrived, lesson 2 failed;
- p17-p20 are active after lesson 3; p17 and p18 are paused until after NOW.

Lessons arrive at 07:00 local, except: lesson 2 of p01-p05 at 09:15 after a retry; lesson 5
of p08 and p09 at 08:30; lesson 4 of p06-p10 was claimed at 20:50 the evening before and held
by the window until 07:00 (p06's last hold was a relay pause).

Reflections: lesson 1 by ten people (seven on the web, three by email), lesson 2 by six on
the web, lesson 3 by four on the web. Shared to the circle: lesson 1 by p01-p06, but a
moderator hid p06's (five counted), lesson 2 by p01-p03 (three: hidden).

Bounces and complaints applied (``delivery_problems``):

- a content or policy block (5.7.1, about us) by mail for p01-p06 two days before NOW, and
  one more for p01 on 2025-03-05, before the warning's seven days;
- a full mailbox reported by the provider "ses" for p07-p11, twice for p07 (2025-03-10);
- a delay notice by mail for p09;
- complaints: an abuse report by "ses" for p13, an opt-out by mail for p14, an auth-failure
  by mail for p15 the day before NOW (about us: a warning);
- a user unknown by mail for someone since forgotten (no enrollment: overall only).

Cohort "pilot": three people who completed the course.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from dripcourse.db import transaction
from dripcourse.models import (
    CirclePost,
    Cohort,
    Delivery,
    DeliveryProblem,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Reflection,
    Subscriber,
)
from dripcourse.runtime import Runtime
from tests.conftest import utc

NOW = utc(2025, 3, 20, 12)
START = dt.date(2025, 3, 3)
LONDON, TOKYO = "Europe/London", "Asia/Tokyo"


def local(zone: str, day: int, hour: int, minute: int = 0, *, date_shift: int = 0) -> dt.datetime:
    """Lesson ``day``'s local date (START + day - 1) at hour:minute in ``zone``, as UTC."""
    date = START + dt.timedelta(days=day - 1 + date_shift)
    moment = dt.datetime.combine(date, dt.time(hour, minute), tzinfo=ZoneInfo(zone))
    return moment.astimezone(dt.UTC)


def build(rt: Runtime) -> dict[str, int]:
    """Write both cohorts; returns each person's enrollment id by name (p01 ...)."""
    ids: dict[str, int] = {}
    with transaction(rt.sessions) as session:
        spring = Cohort(
            name="spring", course_slug="white-coat", start_date=START, created_at=utc(2025, 3, 1)
        )
        pilot = Cohort(
            name="pilot", course_slug="white-coat", start_date=START, created_at=utc(2025, 2, 1)
        )
        session.add_all([spring, pilot])
        session.flush()
        for n in range(1, 21):
            name = f"p{n:02d}"
            zone = TOKYO if n in (11, 12) else LONDON
            if n <= 12:
                status, day = EnrollmentStatus.COMPLETED, 7
            elif n <= 15:
                status, day = EnrollmentStatus.UNSUBSCRIBED, 2 if n < 15 else 5
            elif n == 16:
                status, day = EnrollmentStatus.BOUNCED, 1
            else:
                status, day = EnrollmentStatus.ACTIVE, 3
            paused = NOW + dt.timedelta(days=2) if n in (17, 18) else None
            ids[name] = _person(session, spring, name, zone, status, day, paused)
            for lesson in range(1, day + 1):
                session.add(_delivery(ids[name], n, lesson, zone))
            if n == 16:
                session.add(_failed(ids[name], 2, local(zone, 2, 7)))
        for n in range(1, 4):
            name = f"pilot{n}"
            ids[name] = _person(session, pilot, name, LONDON, EnrollmentStatus.COMPLETED, 7)
            for lesson in range(1, 8):
                session.add(_delivery(ids[name], 100 + n, lesson, LONDON))
        for n in range(1, 11):
            source = "email" if n > 7 else "web"
            reflection = _reflection(ids[f"p{n:02d}"], 1, source)
            session.add(reflection)
            if n <= 6:
                session.flush()
                session.add(_share(reflection, spring.id, hidden=n == 6))
        for n in range(1, 7):
            reflection = _reflection(ids[f"p{n:02d}"], 2, "web")
            session.add(reflection)
            if n <= 3:
                session.flush()
                session.add(_share(reflection, spring.id))
        for n in (1, 2, 3, 17):
            session.add(_reflection(ids[f"p{n:02d}"], 3, "web"))
        _problems(session, ids)
    return ids


def _problems(session, ids: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    def add(who, kind, reason, effect, source, at, status=""):  # type: ignore[no-untyped-def]
        session.add(
            DeliveryProblem(
                enrollment_id=ids[who] if who else None,
                day=1,
                kind=kind,
                reason=reason,
                effect=effect,
                status=status,
                source=source,
                at=at,
            )
        )

    block = ("bounce", "content or policy block", "warn", "mail")
    for n in range(1, 7):
        add(f"p{n:02d}", *block, NOW - dt.timedelta(days=2), "5.7.1")
    add("p01", *block, utc(2025, 3, 5), "5.7.1")
    for n in (7, 7, 8, 9, 10, 11):
        add(f"p{n:02d}", "bounce", "mailbox full", "soft", "ses", utc(2025, 3, 10), "5.2.2")
    add("p09", "bounce", "other", "delay", "mail", utc(2025, 3, 11), "4.4.1")
    add("p13", "complaint", "abuse", "complained", "ses", utc(2025, 3, 5))
    add("p14", "complaint", "opt-out", "unsubscribe", "mail", utc(2025, 3, 7))
    add("p15", "complaint", "auth-failure", "warn", "mail", NOW - dt.timedelta(days=1))
    add(None, "bounce", "user unknown", "suppress", "mail", utc(2025, 3, 6), "5.1.1")


def _share(reflection: Reflection, cohort_id: int, *, hidden: bool = False) -> CirclePost:
    return CirclePost(
        reflection_id=reflection.id,
        enrollment_id=reflection.enrollment_id,
        cohort_id=cohort_id,
        day=reflection.day,
        sealed_body="shared, not read by the report",
        hidden_reason="names a patient" if hidden else None,
        created_at=utc(2025, 3, 10),
        updated_at=utc(2025, 3, 10),
    )


def _person(session, cohort, name, zone, status, day, paused=None) -> int:  # type: ignore[no-untyped-def]
    subscriber = Subscriber(
        email=f"{name}@example.org", name=name.title(), timezone=zone, created_at=utc(2025, 2, 1)
    )
    session.add(subscriber)
    session.flush()
    enrollment = Enrollment(
        subscriber_id=subscriber.id,
        cohort_id=cohort.id,
        status=status,
        day=day,
        paused_until=paused,
        created_at=utc(2025, 2, 1),
        updated_at=utc(2025, 2, 1),
    )
    session.add(enrollment)
    session.flush()
    return enrollment.id


def _delivery(enrollment_id: int, n: int, day: int, zone: str) -> Delivery:
    claimed = sent = local(zone, day, 7)
    attempts, error = 1, None
    if day == 2 and n <= 5:
        sent, attempts, error = local(zone, day, 9, 15), 2, "451 4.3.0 try again later"
    if day == 5 and n in (8, 9):
        claimed = sent = local(zone, day, 8, 30)
    if day == 4 and 6 <= n <= 10:
        claimed = local(zone, day, 20, 50, date_shift=-1)
        if n == 6:
            error = "sending paused: 535 5.7.8 authentication failed"
    return Delivery(
        enrollment_id=enrollment_id,
        day=day,
        status=DeliveryStatus.SENT,
        attempts=attempts,
        last_error=error,
        created_at=claimed,
        updated_at=sent,
        sent_at=sent,
    )


def _failed(enrollment_id: int, day: int, at: dt.datetime) -> Delivery:
    return Delivery(
        enrollment_id=enrollment_id,
        day=day,
        status=DeliveryStatus.FAILED,
        attempts=1,
        last_error="550 5.1.1 no such user",
        created_at=at,
        updated_at=at,
    )


def _reflection(enrollment_id: int, day: int, source: str) -> Reflection:
    return Reflection(
        enrollment_id=enrollment_id,
        day=day,
        prompt="a question",
        sealed_body="not read by the report",
        source=source,
        created_at=utc(2025, 3, 10),
        updated_at=utc(2025, 3, 10),
    )


CHECKINS = """
[[checkin]]
question = "How rested do you feel this week?"
low = "not at all"
high = "fully"
"""


def sample_page(tmp: Path) -> str:
    """The report page of this scenario, with check-in answers, for the screenshot in docs/."""
    import shutil

    from dripcourse import db
    from dripcourse.models import CheckinAnswer
    from dripcourse.people import report, report_html
    from tests.conftest import EMAILS, make_settings

    emails = tmp / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_text(toml.read_text() + CHECKINS)
    settings = make_settings(tmp, emails_dir=str(emails))
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    engine.dispose()
    rt = Runtime(settings)
    try:
        ids = build(rt)
        course = rt.catalog.course("white-coat")
        (question,) = course.checkins
        start = [2] * 3 + [3] * 6 + [4] * 6 + [5] * 5
        end = [2] * 1 + [3] * 2 + [4] * 5 + [5] * 4
        with transaction(rt.sessions) as session:
            for day, given in ((1, start), (7, end)):
                for n, answer in enumerate(given, start=1):
                    session.add(
                        CheckinAnswer(
                            enrollment_id=ids[f"p{n:02d}"],
                            day=day,
                            question=1,
                            wording=question.question,
                            answer=answer,
                            created_at=NOW,
                            updated_at=NOW,
                        )
                    )
        with transaction(rt.sessions) as session:
            data = report.build(session, NOW, lambda slug: course, cohorts=["spring"])
        return report_html.page(data)
    finally:
        rt.close()
