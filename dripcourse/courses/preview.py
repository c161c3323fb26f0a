"""A lesson as someone would receive it, for staff: a sample reader, a real subscriber, a test send.

Nothing here records a delivery or touches an enrollment. A test send goes to a staff address
from the allow-list only, so it cannot become a way to mail anyone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.courses.greeting import greeting_for
from dripcourse.courses.render import Personal, Renderer, build_message, check_address, message_id
from dripcourse.errors import InputError, NotFound
from dripcourse.links import Links
from dripcourse.models import Cohort, Enrollment, Subscriber

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


SAMPLE_EMAIL = "reader@example.org"
SAMPLE_NAME = "Dr. Sample Reader"
SAMPLE_TIMEZONE = "America/New_York"
TEST_PREFIX = "[TEST] "


@dataclass(frozen=True)
class Reader:
    """Whom a preview is for. ``enrollment_id`` 0 is nobody: its links lead to a 'not found'."""

    email: str
    name: str
    greeting: str = ""  # set by hand; "" derives it from the name
    timezone: str = SAMPLE_TIMEZONE
    enrollment_id: int = 0


def sample_reader(name: str = SAMPLE_NAME) -> Reader:
    return Reader(email=SAMPLE_EMAIL, name=name)


def find_reader(session: Session, email: str, course_slug: str | None = None) -> Reader:
    """A real subscriber, with their enrollment in ``course_slug`` (latest) if they have one."""
    try:
        address = check_address(email)
    except ValueError as exc:
        raise InputError(f"--as: {exc}") from None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        raise NotFound(f"--as: no subscriber with the address {address}")
    query = select(Enrollment.id).where(Enrollment.subscriber_id == subscriber.id)
    if course_slug is not None:
        query = query.join(Cohort).where(Cohort.course_slug == course_slug)
    enrollment_id = session.scalar(query.order_by(Enrollment.id.desc()).limit(1))
    return Reader(
        email=subscriber.email,
        name=subscriber.name,
        greeting=subscriber.greeting,
        timezone=subscriber.timezone,
        enrollment_id=enrollment_id or 0,
    )


def lesson_message(
    renderer: Renderer,
    course: Course,
    day: int,
    links: Links,
    reader: Reader,
    *,
    now: dt.datetime,
    msg_id: str | None = None,
) -> Message:
    """Lesson ``day`` of ``course`` built exactly as ``reader`` would get it."""
    rendered = renderer.lesson(course, day)
    who = Personal(
        email=reader.email,
        name=reader.name,
        greeting=greeting_for(reader.name, reader.greeting, course.greeting_fallback),
        **links.for_lesson(reader.enrollment_id, day),
    )
    msg_id = msg_id or message_id("preview.invalid", None, "")
    return build_message(rendered, who, now=now, msg_id=msg_id)


def allowed_staff_address(to: str, staff_emails: tuple[str, ...]) -> str:
    """``to`` normalised, if it is on the staff allow-list; InputError otherwise."""
    try:
        address = check_address(to)
    except ValueError as exc:
        raise InputError(f"--to: {exc}") from None
    allowed = {check_address(a) for a in staff_emails}
    if not allowed:
        raise InputError("--to: no staff addresses are set; add yours to the setting staff_emails")
    if address not in allowed:
        raise InputError(
            f"--to: {address} is not in the staff allow-list (setting staff_emails); "
            "send-test mails staff only"
        )
    return address


def trial_message(
    rt: Runtime, slug: str, day: int, to: str, reader: Reader, *, now: dt.datetime
) -> Message:
    """The lesson as ``reader`` would get it, addressed to ``to`` with "[TEST]" in the subject.

    Its links are a sample reader's even when ``reader`` is a real subscriber: a test message
    is read by staff and may be forwarded, and must not open anyone's private journal.
    """
    address = allowed_staff_address(to, rt.settings.staff_addresses)
    sample_links = Reader(reader.email, reader.name, reader.greeting, reader.timezone, 0)
    course = rt.catalog.course(slug)
    msg_id = message_id(rt.settings.message_id_domain, None, "")
    msg = lesson_message(
        rt.catalog.renderer, course, day, rt.sample_links, sample_links, now=now, msg_id=msg_id
    )
    subject = TEST_PREFIX + str(msg["Subject"])  # str() of a Header is its unencoded text
    del msg["Subject"], msg["To"]
    msg["To"] = address
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    return msg


def send_test(
    rt: Runtime, slug: str, day: int, to: str, as_email: str | None, *, now: dt.datetime
) -> Message:
    """Send one lesson to a staff address through the configured transport; record nothing."""
    reader = sample_reader()
    if as_email is not None:
        with rt.sessions() as session:
            reader = find_reader(session, as_email)
    msg = trial_message(rt, slug, day, to, reader, now=now)
    rt.transport.send(msg)
    return msg
