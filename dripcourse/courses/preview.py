"""A lesson as someone would receive it, for staff: a sample reader, a real subscriber, a test send.

Nothing here records a delivery or touches an enrollment. A test send goes to a staff address
from the allow-list only, so it cannot become a way to mail anyone. Every preview, of a real
subscriber too, carries sample links that open nothing: staff see how a lesson reads for that
person (name, greeting, zone, day), never a key to their journal.
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
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal, Renderer
from dripcourse.errors import InputError, NotFound
from dripcourse.links import Links
from dripcourse.models import Subscriber
from dripcourse.validate import check_address

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


SAMPLE_EMAIL = "reader@example.org"
SAMPLE_NAME = "Dr. Sample Reader"
SAMPLE_TIMEZONE = "America/New_York"
TEST_PREFIX = "[TEST] "


@dataclass(frozen=True)
class Reader:
    """Whom a preview is for: how the lesson addresses them. No enrollment, so no link of
    theirs can be made from it."""

    email: str
    name: str
    greeting: str = ""  # set by hand; "" derives it from the name
    timezone: str = SAMPLE_TIMEZONE


def sample_reader(name: str = SAMPLE_NAME) -> Reader:
    return Reader(email=SAMPLE_EMAIL, name=name)


def find_reader(session: Session, email: str) -> Reader:
    """A real subscriber as a lesson addresses them."""
    try:
        address = check_address(email)
    except ValueError as exc:
        raise InputError(f"--as: {exc}") from None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        raise NotFound(f"--as: no subscriber with the address {address}")
    return Reader(
        email=subscriber.email,
        name=subscriber.name,
        greeting=subscriber.greeting,
        timezone=subscriber.timezone,
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
    """Lesson ``day`` of ``course`` as ``reader`` would get it, with sample links."""
    rendered = renderer.lesson(course, day)
    who = Personal(
        email=reader.email,
        name=reader.name,
        greeting=greeting_for(reader.name, reader.greeting, course.greeting_fallback),
        # As a lesson sent at the course's send time opens: the usual case, whatever the
        # hour staff look at it (docs/courses.md, Salutation).
        salutation=course.usual_salutation,
        **links.samples(day),
    )
    msg_id = msg_id or message_id("preview.invalid", None, "")
    return build_message(rendered, who, now=now, msg_id=msg_id)


def allowed_staff_address(to: str, staff_emails: tuple[str, ...], config_file: str = "") -> str:
    """``to`` normalised, if it is on the staff allow-list; InputError otherwise.

    ``config_file`` is the settings file in use, if any: an empty list names it.
    """
    try:
        address = check_address(to)
    except ValueError as exc:
        raise InputError(f"--to: {exc}") from None
    allowed = {check_address(a) for a in staff_emails}
    if not allowed:
        where = f"in {config_file}" if config_file else "in a settings file (--config)"
        raise InputError(
            f'--to: no staff addresses are set; add yours as staff_emails = ["{address}"] '
            f"under [staff] {where}, or set DRIPCOURSE_STAFF_EMAILS={address}"
        )
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

    Its links are sample links even when ``reader`` is a real subscriber: a test message
    is read by staff and may be forwarded, and must not open anyone's private journal.
    """
    first_source = rt.settings.source.split(", ")[0]
    config_file = "" if first_source.startswith(("DRIPCOURSE_", "built-in")) else first_source
    address = allowed_staff_address(to, rt.settings.staff_addresses, config_file)
    course = rt.catalog.course(slug)
    msg_id = message_id(rt.settings.message_id_domain, None, "")
    msg = lesson_message(
        rt.catalog.renderer, course, day, rt.sample_links, reader, now=now, msg_id=msg_id
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
