"""Writing an import's people: the new subscribers and every enrollment in a few bulk INSERTs.

``importing`` has checked every row and decided who is new and who is on record; here they go
to the database a few thousand rows per statement, inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.courses.greeting import from_name
from dripcourse.models import Cohort, EnrollmentStatus, Subscriber
from dripcourse.people.csv_file import CHUNK, Progress, Row, chunks


def insert_people(
    session: Session,
    cohort: Cohort,
    day_one: dict[str, dt.datetime],
    new_people: list[Row],
    known_people: list[tuple[Row, int]],
    now: dt.datetime,
    progress: Progress | None,
    gives: Mapping[int, tuple[str, str]] | None = None,
) -> None:
    """Bulk INSERTs: subscribers first, then one enrollment each, due at ``day_one`` of their
    zone.

    The rows go to the driver's executemany as plain tuples. The ORM's bulk insert spent most
    of its time turning the same few datetimes into SQLite text 400,000 times; here each
    distinct value is converted once, by the column type's own bind processor.

    What each name gives is kept too, as the ORM's listener on ``Subscriber.name`` would have
    done: ``gives`` (by line) when the caller has already parsed the names, else parsed here.
    """
    gives = gives or {}
    stamp = _converter(session, Subscriber.__table__.c.created_at)
    at = stamp(now)
    for chunk in chunks(new_people):
        _executemany(
            session,
            "subscribers",
            (
                "email",
                "name",
                "timezone",
                "greeting",
                "country",
                "created_at",
                "derived_greeting",
                "derived_given_name",
            ),
            [
                (s.email, s.name, s.timezone, s.greeting, s.country, at, *kept)
                for s, kept in (
                    (r.signup, gives.get(r.line) or from_name(r.signup.name)) for r in chunk
                )
            ],
        )
        if progress:
            progress(len(chunk))
    zone_of = {row.signup.email: row.signup.timezone for row in new_people}
    people = [(row.signup.timezone, person_id) for row, person_id in known_people]
    for chunk in chunks(new_people):
        people.extend(
            (zone_of[email], person_id)
            for person_id, email in session.execute(
                select(Subscriber.id, Subscriber.email).where(
                    Subscriber.email.in_([r.signup.email for r in chunk])
                )
            )
        )
    due = {zone: stamp(instant) for zone, instant in day_one.items()}
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
