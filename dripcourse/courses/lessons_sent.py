"""The lesson each person received, kept so it can be read again as it was sent.

A lesson's words (title, question, sub-questions, body) are stored once per distinct version,
named by a digest of its content, and each sent delivery points at the version it carried.
When staff later edit a lesson file, the people who already had it still read their own
version; nothing personal is stored (names in the body are placeholders, filled in on view).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dripcourse.courses.greeting import DEFAULT_SALUTATION_MODE, MORNING_SALUTATION, salutation
from dripcourse.courses.render import Personal, RenderedLesson, Template
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, LessonVersion, Subscriber


def digest(rendered: RenderedLesson) -> str:
    """What names one version: the course, the day and every word a reader sees.

    Worked out once and kept with ``rendered`` (asked again for every message sent).
    """
    found = rendered.derived.get("digest")
    if not isinstance(found, str):
        found = rendered.derived.setdefault("digest", _digest(rendered))
    assert isinstance(found, str)
    return found


def _digest(rendered: RenderedLesson) -> str:
    lesson = rendered.lesson
    content = [
        rendered.course.slug,
        lesson.day,
        lesson.title,
        lesson.prompt,
        list(lesson.questions),
        rendered.body_html,
    ]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


def record_version(
    session: Session, rendered: RenderedLesson, now: dt.datetime, known: dict[str, int]
) -> int:
    """The id of this lesson version, stored the first time it is seen.

    ``known`` caches digests already looked up by this process; an insert that meets a version
    another worker stored first keeps theirs (the digest is unique).
    """
    key = digest(rendered)
    if key in known:
        return known[key]
    lesson = rendered.lesson
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(LessonVersion)
        .values(
            digest=key,
            course_slug=rendered.course.slug,
            day=lesson.day,
            title=lesson.title,
            prompt=lesson.prompt,
            questions=json.dumps(list(lesson.questions), ensure_ascii=False),
            body_html=rendered.body_html,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[LessonVersion.digest])
    )
    found = session.scalar(select(LessonVersion.id).where(LessonVersion.digest == key))
    assert found is not None
    return found


@dataclass(frozen=True)
class SentLesson:
    """One lesson as one subscriber received it, ready for the page."""

    day: int
    title: str
    prompt: str
    questions: tuple[str, ...]
    body_html: str  # personalised
    sent_at: dt.datetime | None
    as_sent: bool  # False: the version sent was not kept; this is the lesson as it reads now


def _personal(
    body_html: str, subscriber: Subscriber, salutation: str, current: RenderedLesson | None
) -> str:
    """The lesson's HTML for ``subscriber``, greeted as the email greeted them: the greeting
    set for them, else what their name gives, else the course's fallback."""
    who = Personal(
        email=subscriber.email,
        name=subscriber.name,
        reflect="",
        journal="",
        pause="",
        unsubscribe="",
        greeting=(subscriber.greeting or "").strip(),
        derived_greeting=subscriber.derived_greeting,
        derived_given_name=subscriber.derived_given_name,
        salutation=salutation,
        **({"greeting_fallback": current.course.greeting_fallback} if current is not None else {}),
    )
    return Template(body_html, html=True).render(who)


def salutation_sent(
    delivery: Delivery, subscriber: Subscriber, current: RenderedLesson | None
) -> str:
    """The lesson's opening as it was sent: by the reader's clock at ``sent_at``, in the
    course's salutation mode (time of day when the course has lost the lesson)."""
    mode = current.course.salutation if current is not None else DEFAULT_SALUTATION_MODE
    sent_at = delivery.sent_at
    if sent_at is None:
        return MORNING_SALUTATION
    try:
        local = sent_at.astimezone(ZoneInfo(subscriber.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = sent_at
    return salutation(mode, local)


def sent_lessons(session: Session, enrollment: Enrollment) -> dict[int, Delivery]:
    """This enrollment's sent deliveries by day, with their lesson versions."""
    rows = session.scalars(
        select(Delivery).where(
            Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.SENT
        )
    )
    return {d.day: d for d in rows}


def sent_lesson(
    session: Session, enrollment: Enrollment, day: int, current: RenderedLesson | None
) -> SentLesson | None:
    """Lesson ``day`` as this subscriber got it; None if it was never sent to them.

    Lessons sent before versions were kept show the course's current words (``current``),
    marked as such; None too if the course has lost that day since.
    """
    delivery = session.scalar(
        select(Delivery).where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.day == day,
            Delivery.status == DeliveryStatus.SENT,
        )
    )
    if delivery is None:
        return None
    subscriber = enrollment.subscriber
    opening = salutation_sent(delivery, subscriber, current)
    version = delivery.lesson_version
    if version is not None:
        return SentLesson(
            day=day,
            title=version.title,
            prompt=version.prompt,
            questions=tuple(json.loads(version.questions)),
            body_html=_personal(version.body_html, subscriber, opening, current),
            sent_at=delivery.sent_at,
            as_sent=True,
        )
    if current is None:
        return None
    lesson = current.lesson
    return SentLesson(
        day=day,
        title=lesson.title,
        prompt=lesson.prompt,
        questions=lesson.questions,
        body_html=_personal(current.body_html, subscriber, opening, current),
        sent_at=delivery.sent_at,
        as_sent=False,
    )
