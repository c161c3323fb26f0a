"""Cohorts and enrollments: creating them, enrolling people, leaving, pausing and suppressing.

Sending and inbound mail stop an enrollment or suppress an address through here, so the
rules for leaving live in one place whoever acts. That is why it stays one module (about 490
lines); holding a lesson that is on its way during a pause is the part to move out next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse import schedule, validate, zones
from dripcourse.courses.course import Course
from dripcourse.courses.greeting import check_greeting
from dripcourse.errors import FieldErrors, InputError, NotFound
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.validate import check_address

DEFAULT_TIMEZONE = "UTC"
PAUSE = dt.timedelta(days=7)
# A start date this far ahead is more likely a typo than a plan.
FAR_AHEAD = dt.timedelta(days=366)
MISSING_ZONE = (
    "missing; give each person's zone, or a default with --timezone ZONE "
    "(or `cohort create --timezone ZONE`)"
)


class NeedsConfirmation(InputError):
    """The request is valid but probably a mistake: the operator must confirm it (--yes)."""


@dataclass(frozen=True)
class Start:
    """How a cohort starts: on a date, "today" in each subscriber's own zone, or now."""

    date: dt.date | None = None
    today: bool = False
    now: dt.datetime | None = None


def parse_start(value: str, now: dt.datetime) -> Start:
    """Read a cohort start: ``YYYY-MM-DD``, ``today`` or ``now``.

    ``today`` is each subscriber's own local today at the moment the cohort is created: Day 1
    at the course's send time there, at once if that has passed but the day's window is still
    open, or the next morning if it has closed (in Auckland it may already be tomorrow).
    """
    if value == "now":
        return Start(now=now)
    if value == "today":
        return Start(today=True)
    try:
        return Start(date=dt.date.fromisoformat(value))
    except ValueError:
        raise InputError(f"--start: expected YYYY-MM-DD, today or now, got {value!r}") from None


def check_start(start_date: dt.date | None, course: Course, now: dt.datetime) -> None:
    """Refuse, unless confirmed, a start date in the past or more than a year ahead, saying
    what would happen."""
    if start_date is None:
        return
    # The earliest date it still is anywhere (UTC-12): before that, the date has passed for all.
    if start_date < (now - dt.timedelta(hours=12)).date():
        raise NeedsConfirmation(
            f"--start {start_date} is in the past: each person would get Day 1 at their next "
            f"local {course.cadence.send_time:%H:%M}, with no backlog of missed lessons; "
            "add --yes to create it anyway"
        )
    if start_date > now.date() + FAR_AHEAD:
        raise NeedsConfirmation(
            f"--start {start_date} is more than a year ahead: nobody gets anything until then; "
            "add --yes if that is what you mean"
        )


def create_cohort(
    session: Session,
    name: str,
    course: Course,
    start: str,
    now: dt.datetime,
    *,
    timezone: str | None = None,
    confirmed: bool = False,
) -> Cohort:
    """Create a cohort; ``timezone`` is the zone of people enrolled without one."""
    name = name.strip()
    if not name:
        raise InputError("cohort name is empty")
    if session.scalar(select(Cohort).where(Cohort.name == name)) is not None:
        raise InputError(f"cohort {name!r} already exists")
    parsed = parse_start(start, now)
    if not confirmed:
        check_start(parsed.date, course, now)
    if timezone is not None:
        try:
            timezone = zones.check_zone(timezone)
        except InputError as exc:
            raise InputError(f"--timezone: {exc}") from None
    cohort = Cohort(
        name=name,
        course_slug=course.slug,
        start_date=parsed.date,
        started_at=parsed.now,
        start_today=parsed.today,
        timezone=timezone,
        created_at=now,
    )
    session.add(cohort)
    session.flush()
    return cohort


def get_cohort(session: Session, name: str) -> Cohort:
    cohort = session.scalar(select(Cohort).where(Cohort.name == name))
    if cohort is None:
        raise NotFound(f"no cohort named {name!r} (see: dripcourse cohort list)")
    return cohort


@dataclass(frozen=True)
class Signup:
    email: str
    name: str
    timezone: str
    greeting: str = ""  # "" derives it from the name when a lesson is sent
    country: str = ""  # "" shows the places to turn of their time zone's country


def check_signup(
    email: str,
    name: str | None,
    timezone: str | None,
    greeting: str | None = None,
    country: str | None = None,
) -> Signup:
    """Normalise one person's details, or raise FieldErrors naming every field that is wrong
    (so a CSV line is fixed once, not once per field)."""
    problems: list[str] = []
    address = clean_name = zone_name = clean_greeting = clean_country = ""
    try:
        address = check_address(email)
    except ValueError as exc:
        problems.append(f"email: {exc}")
    try:
        clean_name = validate.check_name(name)
    except ValueError as exc:
        problems.append(f"name: {exc}")
    # A missing zone is refused: UTC by default would mean 02:00 lessons in New York.
    if not (timezone or "").strip():
        problems.append(f"timezone: {MISSING_ZONE}")
    else:
        try:
            zone_name = zones.check_zone(timezone or "")
        except InputError as exc:
            problems.append(f"timezone: {exc}")
    try:
        clean_greeting = check_greeting(greeting or "")
    except InputError as exc:
        problems.append(str(exc))  # it names its field already
    if (country or "").strip():
        try:
            clean_country = zones.check_country(country or "")
        except InputError as exc:
            problems.append(f"country: {exc}")
    if problems:
        raise FieldErrors(problems)
    return Signup(
        email=address,
        name=clean_name,
        timezone=zone_name,
        greeting=clean_greeting,
        country=clean_country,
    )


def suppressed_reason(reason: str, when: dt.datetime) -> str:
    """Why an address may not be mailed, in the words an operator needs."""
    kind, _, detail = reason.partition(":")
    day = f"{when:%Y-%m-%d}"
    if kind == "unsubscribed":
        return f"unsubscribed on {day}"
    if kind == "forgotten":
        return f"forgotten on {day} at their request"
    if kind in ("bounced", "complained"):
        return f"{kind} on {day}" + (f" ({detail.strip()})" if detail.strip() else "")
    return f"suppressed by an operator on {day}: {detail.strip() or reason}"


def differences(subscriber: Subscriber, signup: Signup) -> list[str]:
    """How ``signup`` differs from the person on record (a blank name is no difference)."""
    changes = []
    if signup.name and signup.name != subscriber.name:
        changes.append(f"name {subscriber.name!r} -> {signup.name!r}")
    if signup.timezone != subscriber.timezone:
        changes.append(f"timezone {subscriber.timezone} -> {signup.timezone}")
    if signup.greeting and signup.greeting != subscriber.greeting:
        changes.append(f"greeting {subscriber.greeting!r} -> {signup.greeting!r}")
    if signup.country and signup.country != subscriber.country:
        changes.append(f"country {subscriber.country or '(from the zone)'} -> {signup.country}")
    return changes


def enroll(
    session: Session, cohort: Cohort, course: Course, signup: Signup, now: dt.datetime
) -> Enrollment:
    """Enroll one person in a cohort; their Day 1 is scheduled at once in the database.

    Someone already on record keeps their details: if ``signup`` differs from them this
    refuses, naming the difference (``people.enroll_person`` can update them first).
    """
    suppression = session.scalar(select(Suppression).where(Suppression.email == signup.email))
    if suppression is not None:
        why = suppressed_reason(suppression.reason, suppression.created_at)
        raise InputError(f"email: {signup.email} is suppressed: {why}")
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == signup.email))
    if subscriber is None:
        subscriber = Subscriber(
            email=signup.email,
            name=signup.name,
            greeting=signup.greeting,
            timezone=signup.timezone,
            country=signup.country,
            created_at=now,
        )
        session.add(subscriber)
        session.flush()
    elif changes := differences(subscriber, signup):
        raise InputError(
            f"email: {signup.email} is already on record; this would change "
            f"{', '.join(changes)} for every cohort they are in (add --update to change it)"
        )
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.cohort_id == cohort.id
        )
    )
    if existing is not None:
        raise InputError(f"email: {signup.email} is already enrolled in cohort {cohort.name!r}")
    tz = schedule.zone(subscriber.timezone)
    due = schedule.first_due(
        course.cadence,
        tz,
        start_date=cohort.start_date_in(tz),
        started_at=cohort.started_at,
        enrolled_at=now,
    )
    enrollment = Enrollment(
        subscriber=subscriber,
        cohort=cohort,
        day=0,
        next_send_at=due,
        status=EnrollmentStatus.ACTIVE,
        created_at=now,
        updated_at=now,
    )
    session.add(enrollment)
    session.flush()
    return enrollment


def enroll_all(
    session: Session, cohort: Cohort, course: Course, signups: list[Signup], now: dt.datetime
) -> None:
    """Enroll everyone in ``signups``; the first refusal names the address and stops them all
    (the caller's transaction then rolls back, so nothing is half-written)."""
    for signup in signups:
        try:
            enroll(session, cohort, course, signup, now)
        except InputError as exc:
            raise InputError(f"{signup.email}: {exc}") from None


def suppress(session: Session, email: str, reason: str, now: dt.datetime) -> None:
    """Put an address on the list that is never mailed again (idempotent)."""
    if session.scalar(select(Suppression.id).where(Suppression.email == email)) is None:
        session.add(Suppression(email=email, reason=reason, created_at=now))


def stop_enrollment(
    session: Session, enrollment: Enrollment, status: EnrollmentStatus, now: dt.datetime
) -> None:
    """End an enrollment early and cancel its lessons still waiting to go out."""
    enrollment.status = status
    enrollment.next_send_at = None
    enrollment.updated_at = now
    session.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            # Queued, or waiting for a retry or a pause's end; one being sent is cancelled by
            # the sender's last look (sending.last_look).
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.WAITING)),
        )
        .values(
            status=DeliveryStatus.CANCELLED,
            next_attempt_at=None,
            updated_at=now,
            last_error=str(status),
        )
    )


def unsubscribe(session: Session, enrollment: Enrollment, now: dt.datetime) -> bool:
    """Stop every lesson to this person, in every cohort, for good.

    Pending deliveries are cancelled and the address is suppressed, so no later enrollment
    can mail it either. Returns False when they had already left.
    """
    subscriber = enrollment.subscriber
    if enrollment.status == EnrollmentStatus.UNSUBSCRIBED:
        return False
    for each in subscriber.enrollments:
        if each.status == EnrollmentStatus.ACTIVE or each is enrollment:
            stop_enrollment(session, each, EnrollmentStatus.UNSUBSCRIBED, now)
    suppress(session, subscriber.email, "unsubscribed", now)
    return True


def _reschedule(
    session: Session, enrollment: Enrollment, seen: dt.datetime | None, **values: object
) -> bool:
    """Compare-and-set the schedule columns: only if next_send_at is still ``seen``.

    A tick may claim the lesson between our read and our write; overwriting its
    ``next_send_at = NULL`` would let a second claim of the same day through.
    """
    same_due = (
        Enrollment.next_send_at.is_(None) if seen is None else Enrollment.next_send_at == seen
    )
    query = (
        update(Enrollment)
        .where(Enrollment.id == enrollment.id, Enrollment.status == EnrollmentStatus.ACTIVE)
        .where(same_due)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = session.execute(query).rowcount == 1
    session.refresh(enrollment)
    return changed


def pause(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    now: dt.datetime,
    length: dt.timedelta = PAUSE,
) -> bool:
    """Hold an active enrollment's lessons for ``length`` (a week) from ``now``; False if it is
    not active.

    The lesson that was next stays next: it moves to the first send time after the pause, and
    the course carries on from there. A lesson already on its way (queued, or waiting for a
    retry) waits for that time too; one a worker has taken is held by the sender's last look,
    its attempt given back (sending.last_look). Only the one message being handed to the mail
    server at this very moment is not recalled: on PostgreSQL the pause waits for it. Pausing
    again while paused runs the new length from ``now``, but never shortens a longer pause.
    """
    if length <= dt.timedelta(0):
        raise InputError(f"pause length: must be more than nothing, got {length}")
    for _ in range(3):
        if enrollment.status != EnrollmentStatus.ACTIVE:
            return False
        paused_until = max(
            _start_of_local_day(now + length, enrollment.subscriber.timezone),
            enrollment.paused_until or now,
        )
        seen = due = enrollment.next_send_at
        if due is not None and due < paused_until:
            due = schedule.resume_due(
                course.cadence,
                schedule.zone(enrollment.subscriber.timezone),
                due=due,
                paused_until=paused_until,
            )
        if _reschedule(
            session, enrollment, seen, paused_until=paused_until, next_send_at=due, updated_at=now
        ):
            _hold_on_its_way(session, enrollment, course, paused_until, now)
            return True
    raise RuntimeError(f"enrollment {enrollment.id} kept changing while being paused")


def _start_of_local_day(moment: dt.datetime, timezone: str) -> dt.datetime:
    """The start of the subscriber's local day that ``moment`` falls in. A pause of N days
    ends there, so a reader is back on the morning N days later whatever the hour they paused
    at: a week from Monday 07:38 brings the next lesson on Monday morning, not Tuesday."""
    tz = schedule.zone(timezone)
    return schedule.at_local_time(moment.astimezone(tz).date(), dt.time(0, 0), tz)


def next_lesson_at(session: Session, enrollment: Enrollment) -> dt.datetime | None:
    """When the next lesson is due to go out: its planned time, or, for one already claimed
    and waiting (for a pause's end, a retry, the morning), the time it waits for."""
    if enrollment.next_send_at is not None:
        return enrollment.next_send_at
    return session.scalar(
        select(Delivery.next_attempt_at).where(
            Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.WAITING
        )
    )


def _hold_on_its_way(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    paused_until: dt.datetime,
    now: dt.datetime,
) -> None:
    """The lesson on its way (queued, or waiting for a retry) waits for the pause's end: the
    first send time after it. Its queued task, when it comes, finds it not free and leaves
    it; the sweep queues it again then. No attempt is spent."""
    until = schedule.resume_due(
        course.cadence,
        schedule.zone(enrollment.subscriber.timezone),
        due=now,
        paused_until=paused_until,
    )
    session.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.WAITING)),
            Delivery.next_attempt_at < until,
        )
        .values(
            status=DeliveryStatus.WAITING, next_attempt_at=until, queued_at=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )


def resume(session: Session, enrollment: Enrollment, course: Course, now: dt.datetime) -> bool:
    """End a pause early; the next lesson comes back to when it would have been due.

    If that time has passed, it comes at today's local send time if that is still ahead, at
    once if today's send time has passed too, or on the next sending day's send time if today
    is not one (see ``schedule.resumed_due``). It never brings two lessons on one local day
    and never skips one. False if the enrollment is not active or not paused (a pause whose
    week has run out is over already).
    """
    for _ in range(3):
        paused = enrollment.paused_until is not None and enrollment.paused_until > now
        if enrollment.status != EnrollmentStatus.ACTIVE or not paused:
            return False
        was_paused_until = enrollment.paused_until
        seen = due = enrollment.next_send_at
        # None: a lesson is in flight; recording it schedules the next, now without the pause.
        if due is not None:
            due = schedule.resumed_due(
                course.cadence,
                schedule.zone(enrollment.subscriber.timezone),
                unpaused_due=unpaused_due(session, enrollment, course),
                now=now,
            )
        if _reschedule(
            session, enrollment, seen, paused_until=None, next_send_at=due, updated_at=now
        ):
            # A lesson held for the pause comes back now (in the window) instead of at its end.
            tz = schedule.zone(enrollment.subscriber.timezone)
            session.execute(
                update(Delivery)
                .where(
                    Delivery.enrollment_id == enrollment.id,
                    Delivery.status == DeliveryStatus.WAITING,
                    Delivery.next_attempt_at >= was_paused_until,
                )
                .values(next_attempt_at=schedule.window_start(course.cadence, tz, now))
                .execution_options(synchronize_session=False)
            )
            return True
    raise RuntimeError(f"enrollment {enrollment.id} kept changing while being resumed")


def unpaused_due(session: Session, enrollment: Enrollment, course: Course) -> dt.datetime:
    """When the next lesson would be due had there been no pause."""
    tz = schedule.zone(enrollment.subscriber.timezone)
    last_sent_at = session.scalar(
        select(Delivery.sent_at)
        .where(Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.SENT)
        .order_by(Delivery.sent_at.desc())
        .limit(1)
    )
    if last_sent_at is not None:
        return schedule.next_due(course.cadence, tz, last_sent_at=last_sent_at)
    cohort = enrollment.cohort
    return schedule.first_due(
        course.cadence,
        tz,
        start_date=cohort.start_date_in(tz),
        started_at=cohort.started_at,
        enrolled_at=enrollment.created_at,
    )
