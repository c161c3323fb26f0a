"""Enrolling a cohort's checked CSV rows: all of them at once, or nobody.

``csv_file`` has read and checked the file; here each row is checked against the database
(suppressed, already in the cohort, on record with other details) and every refusal reported
in one error. Then ``bulk_insert`` writes the subscribers and enrollments a few thousand rows
per statement, in one transaction: 100,000 rows take seconds, and a failure leaves nothing
behind. ``summary`` tells the operator what was done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.courses.greeting import from_name, greeting_for, unusual
from dripcourse.errors import InputError
from dripcourse.models import Cohort, Enrollment, Subscriber, Suppression
from dripcourse.people.bulk_insert import insert_people
from dripcourse.people.csv_file import CsvFile, Progress, Row, chunks, located
from dripcourse.people.enrollment import suppressed_reason
from dripcourse.people.signup import MISSING_ZONE, Signup, differences


@dataclass
class ImportReport:
    cohort: str
    enrolled: int = 0
    skipped: int = 0  # already in the cohort, left alone (--skip-existing)
    dry_run: bool = False
    ignored_columns: list[str] = field(default_factory=list)
    by_zone: Counter[str] = field(default_factory=Counter)
    day_one: dict[str, dt.datetime] = field(default_factory=dict)  # zone -> UTC instant
    # Greetings an operator should look at before Day 1: (line, email, name, greeting, why).
    odd_greetings: list[tuple[int, str, str, str, str]] = field(default_factory=list)


class ImportRefused(InputError):
    """Some rows are bad; the message lists every one of them and nothing was written."""


def import_rows(
    session: Session,
    cohort: Cohort,
    course: Course,
    csv_file: CsvFile,
    now: dt.datetime,
    *,
    skip_existing: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Enroll every row of ``csv_file`` in ``cohort``, or nobody.

    Refused rows (a bad field, a suppressed address, someone already in the cohort unless
    ``skip_existing``, someone on record with other details) are all reported in one
    ImportRefused. With ``dry_run`` everything is checked and reported, nothing written.
    """
    path = csv_file.path
    if not dry_run:
        # One import into a cohort at a time: a second one waits here until the first has
        # committed, then finds its people on record like anyone else's (already in the
        # cohort: refused, or skipped with --skip-existing). PostgreSQL locks the cohort's row;
        # SQLite takes its one write lock, which also keeps any other writer out meanwhile.
        session.execute(
            update(Cohort)
            .where(Cohort.id == cohort.id)
            .values(name=Cohort.name)
            .execution_options(synchronize_session=False)
        )
    errors = list(csv_file.problems)
    report = ImportReport(cohort.name, dry_run=dry_run, ignored_columns=csv_file.ignored_columns)
    new_people: list[Row] = []
    known_people: list[tuple[Row, int]] = []
    greetings: dict[int, str] = {}  # line -> the greeting on record for someone known
    for chunk in chunks(csv_file.rows):
        emails = [row.signup.email for row in chunk]
        suppressed = {
            s.email: s
            for s in session.scalars(select(Suppression).where(Suppression.email.in_(emails)))
        }
        on_record = {
            s.email: s
            for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))
        }
        in_cohort = set(
            session.scalars(
                select(Enrollment.subscriber_id).where(
                    Enrollment.cohort_id == cohort.id,
                    Enrollment.subscriber_id.in_([s.id for s in on_record.values()]),
                )
            )
        )
        for row in chunk:
            email = row.signup.email
            if email in suppressed:
                s = suppressed[email]
                errors.append(
                    (
                        row.line,
                        f"email: {email} is suppressed: "
                        f"{suppressed_reason(s.reason, s.created_at)}",
                    )
                )
                continue
            person = on_record.get(email)
            if person is not None and person.id in in_cohort:
                if skip_existing:
                    report.skipped += 1
                else:
                    errors.append(
                        (
                            row.line,
                            f"email: {email} is already in cohort {cohort.name!r} "
                            "(--skip-existing leaves such people alone)",
                        )
                    )
                continue
            if person is None:
                if not row.signup.timezone:
                    errors.append((row.line, f"timezone: {MISSING_ZONE}"))
                else:
                    new_people.append(row)
                continue
            signup = row.signup
            if not signup.timezone:
                signup = Signup(
                    signup.email, signup.name, person.timezone, signup.greeting, signup.country
                )
            if changes := differences(person, signup):
                errors.append(
                    (
                        row.line,
                        f"email: {email} is already on record with other details "
                        f"({', '.join(changes)}); fix the line, or change the person first "
                        "(dripcourse set-timezone, set-country, enroll --update)",
                    )
                )
                continue
            known_people.append((Row(row.line, signup), person.id))
            greetings[row.line] = person.greeting or ""
    if errors:
        errors.sort(key=lambda error: error[0])  # in the order of the file, whichever pass
        listed = "\n".join(located(path, line, problem) for line, problem in errors)
        rows = len({line for line, _problem in errors})  # a row may have several problems
        raise ImportRefused(f"{listed}\n{rows} bad row(s): nothing was imported")
    new_lines = {row.line for row in new_people}
    gives: dict[int, tuple[str, str]] = {}  # line -> what a new person's name gives
    for row in sorted([*new_people, *(row for row, _ in known_people)], key=lambda r: r.line):
        name, set_by_hand = row.signup.name or "", row.signup.greeting or greetings.get(row.line)
        if row.line in new_lines:
            # Kept on their row (bulk_insert); parsed here, the name's one parse, which the
            # two calls below find in greeting's caches.
            gives[row.line] = from_name(name)
        greeting = greeting_for(name, set_by_hand, course.greeting_fallback)
        why = None if set_by_hand else unusual(name, greeting, course.greeting_fallback)
        if why:
            report.odd_greetings.append((row.line, row.signup.email, name, greeting, why))
    for row in new_people:
        report.by_zone[row.signup.timezone] += 1
    for row, _ in known_people:
        report.by_zone[row.signup.timezone] += 1
    report.enrolled = sum(report.by_zone.values())
    report.day_one = {
        name: schedule.first_due(
            course.cadence,
            schedule.zone(name),
            start_date=cohort.start_date_in(schedule.zone(name)),
            started_at=cohort.started_at,
            enrolled_at=now,
        )
        for name in report.by_zone
    }
    if not dry_run:
        # Only PostgreSQL can meet a conflict here (SQLite holds its write lock since the
        # start): an import into another cohort, or an enroll, put one of these people on
        # record meanwhile. The savepoint keeps the transaction usable to name them.
        nested = session.begin_nested() if session.get_bind().dialect.name == "postgresql" else None
        try:
            with nested or contextlib.nullcontext():
                insert_people(
                    session, cohort, report.day_one, new_people, known_people, now, progress, gives
                )
        except IntegrityError:
            raise _raced(session, path, new_people) from None
    return report


def _raced(session: Session, path: Path, new_people: list[Row]) -> ImportRefused:
    """The refusal when someone else put some of ``new_people`` on record while we read."""
    added: set[str] = set()
    for chunk in chunks(new_people):
        emails = [r.signup.email for r in chunk]
        added.update(session.scalars(select(Subscriber.email).where(Subscriber.email.in_(emails))))
    lines = [
        located(
            path,
            r.line,
            f"email: {r.signup.email} was put on record by another import or enrollment "
            "while this one ran",
        )
        for r in new_people
        if r.signup.email in added
    ]
    if not lines:
        return ImportRefused(
            "another import or enrollment changed these people while this one ran: nothing "
            "was imported; run it again"
        )
    return ImportRefused(
        "\n".join(
            [
                *lines,
                f"{len(lines)} row(s) raced another import: nothing was imported; "
                "run it again (--skip-existing leaves people already in the cohort alone)",
            ]
        )
    )


def summary(report: ImportReport, course: Course) -> list[str]:
    """What an import did, for the operator: how many, in which zones, when Day 1 goes out."""
    verb = "would enroll" if report.dry_run else "enrolled"
    head = f"{verb} {report.enrolled} in cohort {report.cohort!r}"
    if report.skipped:
        head += f"; {report.skipped} already there, left alone"
    if report.dry_run:
        head += " (dry run: nothing was written)"
    lines = [head]
    if not report.enrolled:
        return lines
    lines.append("by time zone, with Day 1 local and UTC:")
    order = sorted(report.by_zone, key=lambda z: (report.day_one[z], z))
    width = max(len(z) for z in order)
    for name in order:
        due = report.day_one[name]
        local = due.astimezone(schedule.zone(name))
        lines.append(
            f"  {report.by_zone[name]:>7}  {name:<{width}}  "
            f"{local:%Y-%m-%d %H:%M} local = {due:%Y-%m-%d %H:%M} UTC"
        )
    first, last = order[0], order[-1]
    lines.append(
        f"Day 1 of {course.title!r}: earliest {report.day_one[first]:%Y-%m-%d %H:%M} UTC "
        f"({first}), latest {report.day_one[last]:%Y-%m-%d %H:%M} UTC ({last})"
    )
    if report.odd_greetings:
        lines.append(
            f"{len(report.odd_greetings)} greeting(s) to look at before Day 1 "
            "(change one with: dripcourse set-greeting EMAIL TEXT):"
        )
        for line, email, name, greeting, why in report.odd_greetings:
            lines.append(f"  line {line}: {email}  {greeting!r} from {name!r}: {why}")
    return lines
