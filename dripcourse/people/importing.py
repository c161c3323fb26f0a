"""Importing a cohort from a CSV file: check every row, report every problem, then enroll all
of them at once, or nobody.

Two passes. The first reads the file and the database and writes nothing; it collects every
bad row (line, column, reason), so an operator fixes the file once rather than once per
error. The second inserts subscribers and enrollments in bulk, a few thousand rows per
statement, in one transaction: 100,000 rows take seconds, and a failure leaves nothing behind.
It stays one module past 400 lines because both passes share the rows' reading and their
refusals; split, each half would need the other's.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.courses.greeting import greeting_for, unusual
from dripcourse.errors import FieldErrors, InputError
from dripcourse.models import Cohort, Enrollment, EnrollmentStatus, Subscriber, Suppression
from dripcourse.people.enrollment import (
    MISSING_ZONE,
    Signup,
    check_signup,
    differences,
    suppressed_reason,
)

CSV_COLUMNS = ("email", "name", "timezone", "greeting", "country")  # the last two optional
# Header spellings people and spreadsheets use, compared without case, spaces, "-" or "_".
HEADER_NAMES = {
    "email": "email",
    "emailaddress": "email",
    "mail": "email",
    "name": "name",
    "fullname": "name",
    "displayname": "name",
    "timezone": "timezone",
    "tz": "timezone",
    "zone": "timezone",
    "greeting": "greeting",
    "salutation": "greeting",
    "country": "country",
    "countrycode": "country",
}
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
SAVE_AS_UTF8 = (
    'save it as UTF-8: in Excel, "Save As" and pick "CSV UTF-8 (Comma delimited)"; in '
    'LibreOffice, tick "Edit filter settings" and pick "Unicode (UTF-8)"'
)
CHUNK = 2000  # rows per INSERT; also how often progress is reported
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Row:
    """One checked line of the file. ``signup.timezone`` is "" when the line gave none and no
    default applies: fine for someone already on record (they keep theirs), an error otherwise."""

    line: int
    signup: Signup


@dataclass
class CsvFile:
    path: Path
    rows: list[Row]
    problems: list[tuple[int, str]]  # (line, "column: reason"): a line may have several
    ignored_columns: list[str]
    repeated: list[tuple[int, int]] = field(default_factory=list)  # (line, same as line)
    delimiter: str = ","

    @property
    def errors(self) -> list[str]:
        """Each problem as ``FILE:LINE: COLUMN: reason``."""
        return [located(self.path, line, problem) for line, problem in self.problems]


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


def read_csv(
    path: Path,
    default_timezone: str | None = None,
    progress: Progress | None = None,
    delimiter: str | None = None,
) -> CsvFile:
    """Read and check every line of a CSV file: UTF-8 (with or without BOM) or UTF-16 with
    its BOM (a spreadsheet's "Unicode text"), any line endings, separated by commas,
    semicolons or tabs (found from the header line unless ``delimiter`` is given).

    A problem with the file as a whole (unreadable, no email column) raises InputError; each
    problem with a line is collected in ``problems`` as (line, "column: reason"). A line that
    repeats an earlier one exactly is imported once and listed in ``repeated``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    text = _decode(path, raw)
    delimiter = delimiter or _delimiter(text)
    records = _records(path, text, delimiter)
    _start, first = next(records, (1, []))
    written = [h.strip() for h in first]
    header = [HEADER_NAMES.get(_plain_header(h), h.lower()) for h in written]
    if "email" not in header:
        raise InputError(_no_email_column(path, written, text, delimiter))
    out = CsvFile(
        path,
        [],
        [],
        [w for w, h in zip(written, header, strict=True) if h not in CSV_COLUMNS],
        delimiter=delimiter,
    )
    seen: dict[str, int] = {}
    exact: dict[tuple[str, ...], int] = {}
    for count, (line, fields) in enumerate(records, start=1):
        if progress and count % CHUNK == 0:
            progress(CHUNK)
        if len(fields) > len(header):
            out.problems.append((line, "more fields than the header has columns"))
            continue
        if not any(v.strip() for v in fields):
            continue  # a blank line, or one of only commas
        key = tuple(f.strip() for f in fields) + ("",) * (len(header) - len(fields))
        if key in exact:
            out.repeated.append((line, exact[key]))
            continue
        exact[key] = line
        values = dict(zip(header, fields, strict=False))
        row = _check_row(line, values, default_timezone, out.problems)
        if row is None:
            continue
        if row.signup.email in seen:
            out.problems.append(
                (line, f"email: {row.signup.email} is also on line {seen[row.signup.email]}")
            )
            continue
        seen[row.signup.email] = line
        out.rows.append(row)
    if not out.rows and not out.problems:
        raise InputError(f"{path}: no rows to import")
    return out


def located(path: Path, line: int, problem: str) -> str:
    """A problem with the place it is at, as an editor jumps to it: ``FILE:LINE: problem``."""
    return f"{path}:{line}: {problem}"


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not readable as UTF-16 text; {SAVE_AS_UTF8}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; {SAVE_AS_UTF8}") from None


def _delimiter(text: str) -> str:
    """The separator of the header line: the one of comma, semicolon and tab it holds most of
    outside quotes (Excel in much of Europe writes semicolons, "Unicode text" tabs)."""
    header = next(csv.reader(io.StringIO(text, newline=""), delimiter="\x00"), [""])
    line = re.sub(r'"[^"]*"', "", header[0] if header else "")
    counts = {d: line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _plain_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _no_email_column(path: Path, header: list[str], text: str, delimiter: str) -> str:
    """The error for a header without an email column, naming the column that holds
    addresses when there is one, and the separator it was read with."""
    message = f"{path}:1: the header needs an email column ({','.join(CSV_COLUMNS)})"
    rows = list(
        itertools.islice(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1, 6)
    )
    for index, name in enumerate(header):
        if any(index < len(r) and "@" in r[index] for r in rows):
            return f"{message}; column {name!r} holds addresses: name it email"
    if len(header) == 1:
        return (
            f"{message}; the header was read as one column: is it separated by something "
            "other than commas, semicolons or tabs? (--delimiter)"
        )
    return message


def _records(path: Path, text: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on, counted from 1 as an editor shows it.

    A quoted field may hold line breaks, so a record can span lines; the csv module counts
    the lines read so far, which is where a record ends. Every line belongs to exactly one
    record (a blank line is an empty one), so the next record starts on the line after. A
    record the csv module cannot read (a quote never closed, swallowing the rest of the file
    into one field) is an InputError at the line it starts on.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{path}:{start}: {exc}") from None


def _check_row(
    line: int, values: dict[str, str], default: str | None, problems: list[tuple[int, str]]
) -> Row | None:
    zone = (values.get("timezone") or "").strip() or default or ""
    try:
        # With no zone, the other fields are still checked now; the zone once we know
        # whether the person is on record already.
        signup = check_signup(
            values.get("email") or "",
            values.get("name"),
            zone or "UTC",
            values.get("greeting"),
            values.get("country"),
        )
    except FieldErrors as exc:
        problems.extend((line, problem) for problem in exc.problems)
        return None
    return Row(
        line,
        Signup(
            email=signup.email,
            name=signup.name,
            timezone=zone and signup.timezone,
            greeting=signup.greeting,
            country=signup.country,
        ),
    )


def _chunks(items: Sequence[Row], size: int = CHUNK) -> Iterator[Sequence[Row]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    for chunk in _chunks(csv_file.rows):
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
    for row in sorted([*new_people, *(row for row, _ in known_people)], key=lambda r: r.line):
        name, set_by_hand = row.signup.name or "", row.signup.greeting or greetings.get(row.line)
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
                _insert(session, cohort, report, new_people, known_people, now, progress)
        except IntegrityError:
            raise _raced(session, path, new_people) from None
    return report


def _raced(session: Session, path: Path, new_people: list[Row]) -> ImportRefused:
    """The refusal when someone else put some of ``new_people`` on record while we read."""
    added: set[str] = set()
    for chunk in _chunks(new_people):
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


def _insert(
    session: Session,
    cohort: Cohort,
    report: ImportReport,
    new_people: list[Row],
    known_people: list[tuple[Row, int]],
    now: dt.datetime,
    progress: Progress | None,
) -> None:
    """Bulk INSERTs: subscribers first, then one enrollment each.

    The rows go to the driver's executemany as plain tuples. The ORM's bulk insert spent most
    of its time turning the same few datetimes into SQLite text 400,000 times; here each
    distinct value is converted once, by the column type's own bind processor.
    """
    stamp = _converter(session, Subscriber.__table__.c.created_at)
    at = stamp(now)
    for chunk in _chunks(new_people):
        _executemany(
            session,
            "subscribers",
            ("email", "name", "timezone", "greeting", "country", "created_at"),
            [
                (s.email, s.name, s.timezone, s.greeting, s.country, at)
                for s in (r.signup for r in chunk)
            ],
        )
        if progress:
            progress(len(chunk))
    zone_of = {row.signup.email: row.signup.timezone for row in new_people}
    people = [(row.signup.timezone, person_id) for row, person_id in known_people]
    for chunk in _chunks(new_people):
        people.extend(
            (zone_of[email], person_id)
            for person_id, email in session.execute(
                select(Subscriber.id, Subscriber.email).where(
                    Subscriber.email.in_([r.signup.email for r in chunk])
                )
            )
        )
    due = {zone: stamp(instant) for zone, instant in report.day_one.items()}
    active = str(EnrollmentStatus.ACTIVE)
    for start in range(0, len(people), CHUNK):
        part = people[start : start + CHUNK]
        _executemany(
            session,
            "enrollments",
            (
                "subscriber_id",
                "cohort_id",
                "day",
                "status",
                "next_send_at",
                "created_at",
                "updated_at",
            ),
            [(pid, cohort.id, 0, active, due[zone], at, at) for zone, pid in part],
        )
        if progress:
            progress(len(part))
    session.expire_all()


def _converter(session: Session, column) -> Callable[[dt.datetime], object]:  # type: ignore[no-untyped-def]
    # The dialect's own form of the type: on SQLite it writes the exact text the ORM writes,
    # which matters because SQLite compares these columns as text.
    dialect = session.get_bind().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process or (lambda value: value)


def _executemany(
    session: Session, table: str, columns: Sequence[str], rows: list[tuple[object, ...]]
) -> None:
    mark = "?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})"
    session.connection().exec_driver_sql(sql, rows)


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
