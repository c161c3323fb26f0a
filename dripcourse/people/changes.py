"""One person, as an operator changes them: find, show, pause, resume, unenroll, move, set the
day or the time zone. Each change says what it was before and after.

Pausing and resuming go through the same functions as the subscriber's own pause page. Every
other change that moves the next lesson goes through ``replan``, the one place that asks the
schedule when the next lesson is due now. It uses pausing's compare-and-set
(``reschedule``) and its "when would it be due unpaused" (``unpaused_due``), the same steps
pause and resume take, rather than a second copy of them.

It stays one module (about 450 lines): each change to one person is a short function over
the same guards, and ``describe`` is what the operator sees of the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse import schedule, zones
from dripcourse.courses.course import Course
from dripcourse.errors import InputError, NotFound
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryProblem,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Reflection,
    Subscriber,
    Suppression,
)
from dripcourse.people import enrollment as enrollments
from dripcourse.people import pausing
from dripcourse.people.signup import Signup

CourseFor = Callable[[str], Course]
LONGEST_PAUSE = dt.timedelta(days=365)


@dataclass(frozen=True)
class Change:
    """What one command changed, as the operator reads it: ``what: before -> after``."""

    what: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.what}: {self.before} -> {self.after}"


def find_person(session: Session, email: str) -> Subscriber:
    person = session.scalar(select(Subscriber).where(Subscriber.email == email.strip().lower()))
    if person is None:
        raise NotFound(f"no subscriber {email.strip()!r} (see: dripcourse status --json)")
    return person


def pick_enrollment(person: Subscriber, cohort: str | None) -> Enrollment:
    """The person's enrollment in ``cohort``; with no cohort named, their only one, or their
    only active one."""
    if cohort is not None:
        for each in person.enrollments:
            if each.cohort.name == cohort:
                return each
        raise NotFound(f"{person.email} is not in cohort {cohort!r}")
    if not person.enrollments:
        raise NotFound(f"{person.email} is in no cohort")
    candidates = person.enrollments
    if len(candidates) > 1:
        candidates = [e for e in candidates if e.status == EnrollmentStatus.ACTIVE]
    if len(candidates) != 1:
        names = ", ".join(sorted(e.cohort.name for e in person.enrollments))
        raise InputError(f"{person.email} is in several cohorts ({names}): name one with --cohort")
    return candidates[0]


def when(moment: dt.datetime | None, tz_name: str) -> str:
    """A UTC instant as the subscriber's local time and UTC: ``2027-03-10 07:00 America/...``."""
    if moment is None:
        return "-"
    local = moment.astimezone(schedule.zone(tz_name))
    return f"{local:%Y-%m-%d %H:%M} {tz_name} ({moment:%Y-%m-%d %H:%M} UTC)"


def state(enrollment: Enrollment, course: Course, now: dt.datetime) -> str:
    """Where an enrollment stands, in one line."""
    tz_name = enrollment.subscriber.timezone
    if enrollment.status != EnrollmentStatus.ACTIVE:
        if enrollment.day == 0:
            return f"{enrollment.status} before Day 1 of {course.length}"
        return f"{enrollment.status} after Day {enrollment.day} of {course.length}"
    parts = ["active"]
    paused = enrollment.paused_until is not None and enrollment.paused_until > now
    if paused:
        parts.append(f"paused until {when(enrollment.paused_until, tz_name)}")
    lesson = f"Day {enrollment.day + 1} of {course.length}"
    if enrollment.next_send_at is None and paused:
        # Claimed already: it waits for the pause's end (pausing.pause holds it there).
        parts.append(f"{lesson} held until the pause ends")
    elif enrollment.next_send_at is None:
        parts.append(f"{lesson} on its way")
    else:
        parts.append(f"{lesson} due {when(enrollment.next_send_at, tz_name)}")
    return ", ".join(parts)


def replan(session: Session, enrollment: Enrollment, course: Course, now: dt.datetime) -> None:
    """Set when the next lesson is due, from the lessons already sent, the person's zone and
    cohort, and any pause, by the schedule's own rules: never two lessons on one local day,
    never a lesson skipped, never in the night because a zone or a day changed.

    A lesson already on its way is left alone: recording it schedules the next one.
    """
    for _ in range(3):
        seen = enrollment.next_send_at
        if enrollment.status != EnrollmentStatus.ACTIVE or seen is None:
            return
        tz = schedule.zone(enrollment.subscriber.timezone)
        due = schedule.resumed_due(
            course.cadence,
            tz,
            unpaused_due=pausing.unpaused_due(session, enrollment, course),
            now=now,
        )
        if enrollment.paused_until is not None and enrollment.paused_until > now:
            due = schedule.resume_due(
                course.cadence, tz, due=due, paused_until=enrollment.paused_until
            )
        if pausing.reschedule(session, enrollment, seen, next_send_at=due, updated_at=now):
            return
    raise RuntimeError(f"enrollment {enrollment.id} kept changing while being re-planned")


def _ready_to_change(session: Session, enrollment: Enrollment, what: str) -> None:
    if enrollment.status != EnrollmentStatus.ACTIVE:
        raise InputError(
            f"{enrollment.subscriber.email} is {enrollment.status} in cohort "
            f"{enrollment.cohort.name!r}; nothing to change"
        )
    if enrollment.next_send_at is None:
        raise _in_flight(session, enrollment, what)


def _in_flight(session: Session, enrollment: Enrollment, what: str) -> InputError:
    """Why ``what`` is refused now: the lesson on its way, where it stands, and when to try.

    A lesson claimed for the person is theirs for that day whatever happens to the
    enrollment: moving them or changing their day under it would send it to the wrong
    cohort's plan or skip it. Pause and unenroll hold or cancel it instead.
    """
    email = enrollment.subscriber.email
    on_way = session.scalars(
        select(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.status.in_(
                (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.WAITING)
            ),
        )
        .order_by(Delivery.day.desc())
        .limit(1)
    ).first()
    if on_way is None or on_way.status == DeliveryStatus.PENDING:
        lesson = on_way.day if on_way is not None else enrollment.day + 1
        where, after = f"Day {lesson} is queued to go out to them now", "in a minute"
    elif on_way.status == DeliveryStatus.SENDING:
        where, after = f"Day {on_way.day} is being sent to them right now", "in a minute"
    else:
        moment = when(on_way.next_attempt_at, enrollment.subscriber.timezone)
        where = f"Day {on_way.day} waits to go out at {moment}"
        if on_way.last_error:
            where += f" (last error: {on_way.last_error})"
        after = "after that"
    return InputError(
        f"{email}: {what} is refused while a lesson is on its way: {where}; try again {after} "
        f"(see: dripcourse show {email})"
    )


def pause(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    now: dt.datetime,
    *,
    days: int | None = None,
    until: dt.date | None = None,
) -> Change:
    """Pause for ``days`` days, or until the subscriber's local morning of ``until``."""
    if (days is None) == (until is None):
        raise InputError("give either --days N or --until YYYY-MM-DD")
    before = state(enrollment, course, now)
    if days is not None:
        if days < 1:
            raise InputError(f"--days: at least 1, got {days}")
        length = dt.timedelta(days=days)
    else:
        assert until is not None
        tz = schedule.zone(enrollment.subscriber.timezone)
        length = schedule.at_local_time(until, dt.time(0, 0), tz) - now
        if length <= dt.timedelta(0):
            raise InputError(
                f"--until: {until} is not in the future for {enrollment.subscriber.email}"
            )
    if length > LONGEST_PAUSE:
        raise InputError(
            f"a pause of at most {LONGEST_PAUSE.days} days; to stop someone's lessons for longer, "
            "use unenroll (or suppressions add)"
        )
    current = enrollment.paused_until
    if current is not None and current > now and current >= now + length:
        raise InputError(
            f"{enrollment.subscriber.email} is already paused until "
            f"{when(current, enrollment.subscriber.timezone)}, longer than asked: nothing "
            "changed (resume, then pause again, to make it shorter)"
        )
    if not pausing.pause(session, enrollment, course, now, length=length):
        raise InputError(
            f"{enrollment.subscriber.email} is {enrollment.status}, not active: nothing to pause"
        )
    return Change("pause", before, state(enrollment, course, now))


def resume(session: Session, enrollment: Enrollment, course: Course, now: dt.datetime) -> Change:
    before = state(enrollment, course, now)
    if not pausing.resume(session, enrollment, course, now):
        raise InputError(f"{enrollment.subscriber.email} is not paused")
    return Change("resume", before, state(enrollment, course, now))


def unenroll(session: Session, enrollment: Enrollment, course: Course, now: dt.datetime) -> Change:
    """Take the person out of one cohort; their address stays mailable for other cohorts."""
    if enrollment.status != EnrollmentStatus.ACTIVE:
        raise InputError(
            f"{enrollment.subscriber.email} is already {enrollment.status} in cohort "
            f"{enrollment.cohort.name!r}"
        )
    before = state(enrollment, course, now)
    enrollments.stop_enrollment(session, enrollment, EnrollmentStatus.REMOVED, now)
    return Change(f"cohort {enrollment.cohort.name}", before, state(enrollment, course, now))


def move(
    session: Session,
    enrollment: Enrollment,
    target: Cohort,
    course_for: CourseFor,
    now: dt.datetime,
) -> Change:
    """Move the person to another cohort.

    Same course: the enrollment moves with its day, lessons and reflections, and the next lesson
    is re-planned for the new cohort (one not started yet waits for the new start date).
    Another course: they leave the old cohort (status removed) and start the new one at Day 1.
    """
    person = enrollment.subscriber
    old = enrollment.cohort
    if target.id == old.id:
        raise InputError(f"{person.email} is in cohort {target.name!r} already")
    if any(e.cohort_id == target.id for e in person.enrollments):
        raise InputError(f"{person.email} has an enrollment in cohort {target.name!r} already")
    _ready_to_change(session, enrollment, "move")
    course = course_for(old.course_slug)
    before = f"{old.name}: {state(enrollment, course, now)}"
    if target.course_slug == old.course_slug:
        if not pausing.reschedule(
            session, enrollment, enrollment.next_send_at, cohort_id=target.id, updated_at=now
        ):
            raise _in_flight(session, enrollment, "move")
        replan(session, enrollment, course, now)
        return Change("cohort", before, f"{target.name}: {state(enrollment, course, now)}")
    new_course = course_for(target.course_slug)
    enrollments.stop_enrollment(session, enrollment, EnrollmentStatus.REMOVED, now)
    signup = Signup(person.email, person.name, person.timezone)
    moved = enrollments.enroll(session, target, new_course, signup, now)
    return Change("cohort", before, f"{target.name}: {state(moved, new_course, now)}")


def set_day(
    session: Session, enrollment: Enrollment, course: Course, day: int, now: dt.datetime
) -> Change:
    """Make Day ``day`` the next lesson the person gets (to correct a mistake).

    Forward skips lessons; back is allowed only over days never sent to them, since each lesson
    goes to an enrollment once.
    """
    email = enrollment.subscriber.email
    if not 1 <= day <= course.length:
        raise InputError(f"--day: the course has days 1-{course.length}, got {day}")
    if enrollment.status == EnrollmentStatus.COMPLETED:
        enrollment.status = EnrollmentStatus.ACTIVE
        # Finished people have no next lesson; give them one so replan can place it.
        enrollment.next_send_at = now
    _ready_to_change(session, enrollment, "set-day")
    last = session.scalar(
        select(func.max(Delivery.day)).where(Delivery.enrollment_id == enrollment.id)
    )
    if last is not None and day <= last:
        raise InputError(
            f"--day: {email} has had Day {last} already (each lesson goes out once); "
            f"the next can be Day {last + 1} to {course.length}"
        )
    before = state(enrollment, course, now)
    if not pausing.reschedule(
        session, enrollment, enrollment.next_send_at, day=day - 1, updated_at=now
    ):
        raise _in_flight(session, enrollment, "set-day")
    replan(session, enrollment, course, now)
    return Change("next lesson", before, state(enrollment, course, now))


def set_timezone(
    session: Session, person: Subscriber, zone_name: str, course_for: CourseFor, now: dt.datetime
) -> list[Change]:
    """Change the person's zone and re-plan the next lesson of each of their enrollments."""
    try:
        zone_name = zones.check_zone(zone_name)
    except InputError as exc:
        raise InputError(f"timezone: {exc}") from None
    if zone_name == person.timezone:
        raise InputError(f"{person.email} is in {zone_name} already")
    active = [e for e in person.enrollments if e.status == EnrollmentStatus.ACTIVE]
    befores = [state(e, course_for(e.cohort.course_slug), now) for e in active]
    changes = [Change("timezone", person.timezone, zone_name)]
    person.timezone = zone_name
    session.flush()
    for enrollment, before in zip(active, befores, strict=True):
        course = course_for(enrollment.cohort.course_slug)
        replan(session, enrollment, course, now)
        changes.append(
            Change(f"cohort {enrollment.cohort.name}", before, state(enrollment, course, now))
        )
    return changes


def set_country(person: Subscriber, code: str) -> Change:
    """Set whose places to turn the person is shown; "" goes back to their zone's country."""
    country = ""
    if code.strip():
        try:
            country = zones.check_country(code)
        except InputError as exc:
            raise InputError(f"country: {exc}") from None
    if country == person.country:
        raise InputError(f"{person.email} has country {country or '(from the zone)'} already")
    change = Change("country", person.country or "(from the zone)", country or "(from the zone)")
    person.country = country
    return change


def enroll_person(
    session: Session,
    cohort: Cohort,
    signup: Signup,
    course_for: CourseFor,
    now: dt.datetime,
    *,
    update: bool = False,
) -> tuple[Enrollment, list[Change]]:
    """Enroll one person; with ``update``, first change the details of someone on record to
    the ones given (a new zone re-plans their other enrollments), saying what changed."""
    changes: list[Change] = []
    person = session.scalar(select(Subscriber).where(Subscriber.email == signup.email))
    if update and person is not None:
        if signup.name and signup.name != person.name:
            changes.append(Change("name", repr(person.name), repr(signup.name)))
            person.name = signup.name
        if signup.timezone != person.timezone:
            changes.extend(set_timezone(session, person, signup.timezone, course_for, now))
        if signup.country and signup.country != person.country:
            changes.append(set_country(person, signup.country))
    enrolled = enrollments.enroll(session, cohort, course_for(cohort.course_slug), signup, now)
    return enrolled, changes


@dataclass(frozen=True)
class DeliveryLine:
    day: int
    status: str
    at: dt.datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class ProblemLine:
    """A bounce or complaint as it was applied, and which way it came ("mail", "ses", ...)."""

    day: int | None
    kind: str
    reason: str
    status: str
    effect: str
    source: str
    at: dt.datetime


@dataclass(frozen=True)
class EnrollmentView:
    cohort: str
    course: str
    state: str
    reflections: int
    deliveries: list[DeliveryLine]
    problems: list[ProblemLine] = field(default_factory=list)


@dataclass(frozen=True)
class PersonView:
    email: str
    name: str
    timezone: str
    since: dt.datetime
    suppressed: str | None
    enrollments: list[EnrollmentView]


def describe(
    session: Session, person: Subscriber, course_for: CourseFor, now: dt.datetime
) -> PersonView:
    """Everything an operator needs to answer "what is happening with this person?"."""
    suppression = session.scalar(select(Suppression).where(Suppression.email == person.email))
    views = []
    for enrollment in sorted(person.enrollments, key=lambda e: e.created_at):
        course = course_for(enrollment.cohort.course_slug)
        deliveries = session.scalars(
            select(Delivery).where(Delivery.enrollment_id == enrollment.id).order_by(Delivery.day)
        ).all()
        reflections = session.scalar(
            select(func.count())
            .select_from(Reflection)
            .where(Reflection.enrollment_id == enrollment.id)
        )
        views.append(
            EnrollmentView(
                cohort=enrollment.cohort.name,
                course=course.slug,
                state=state(enrollment, course, now),
                reflections=reflections or 0,
                deliveries=[
                    DeliveryLine(
                        d.day,
                        str(d.status),
                        d.sent_at if d.status == DeliveryStatus.SENT else d.updated_at,
                        d.attempts,
                        d.last_error,
                    )
                    for d in deliveries
                ],
                problems=[
                    ProblemLine(p.day, p.kind, p.reason, p.status, p.effect, p.source, p.at)
                    for p in session.scalars(
                        select(DeliveryProblem)
                        .where(DeliveryProblem.enrollment_id == enrollment.id)
                        .order_by(DeliveryProblem.at, DeliveryProblem.id)
                    )
                ],
            )
        )
    return PersonView(
        email=person.email,
        name=person.name,
        timezone=person.timezone,
        since=person.created_at,
        suppressed=suppression
        and enrollments.suppressed_reason(suppression.reason, suppression.created_at),
        enrollments=views,
    )
