"""The migrations build exactly the schema the models describe, on both databases, and going
down and back up again loses no row that the schema in between can hold."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, insert, inspect, select, update

from dripcourse import db
from dripcourse.encryption import ReflectionCipher
from dripcourse.errors import MigrationRefused
from dripcourse.models import (
    CheckinAnswer,
    CircleMember,
    CircleNote,
    CirclePost,
    CircleReport,
    CircuitBreaker,
    Cohort,
    Delivery,
    DeliveryProblem,
    Enrollment,
    HeldReply,
    InboundMessage,
    LessonVersion,
    Reflection,
    Subscriber,
    Suppression,
    WorkerBeat,
)
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from tests.conftest import REFLECTIONS_KEY

NOW = dt.datetime(2026, 3, 5, 12, tzinfo=dt.UTC)
Tables = dict[str, list[dict[str, object]]]

# What a downgrade to the first revision drops, as it comes back on the way up again: the
# columns newer versions added (with their defaults) and the tables they added (empty). Keep
# this and "Going back to an older release" in docs/production.md saying the same thing.
COLUMNS_RESET = {
    ("cohorts", "start_today"): False,
    ("cohorts", "timezone"): None,
    ("subscribers", "greeting"): "",
    ("subscribers", "country"): "",
    ("deliveries", "queued_at"): None,
    ("deliveries", "lesson_version_id"): None,
    ("reflections", "source"): "web",
    # Rows back from before links01 are rows from before keys: their unbound links still open.
    ("enrollments", "legacy_links"): True,
    ("subscribers", "journal_link_sent_at"): None,
    ("cohorts", "circle"): True,
    # What the name gives is parsed again at each send until the name is written again.
    ("subscribers", "derived_greeting"): None,
    ("subscribers", "derived_given_name"): None,
}
# Columns made anew, at random, by the round trip: each row's value must be new and its own.
COLUMNS_FRESH = {("enrollments", "link_key")}
TABLES_EMPTIED = {
    "lesson_versions",
    "inbound_messages",
    "worker_beats",
    "delivery_problems",
    "webhook_events",
    "checkin_answers",
    "circle_members",
    "circle_posts",
    "circle_notes",
    "circle_reports",
    "held_replies",
}
BREAKER_CLOSED = {
    "name": "mail",
    "failures": 0,
    "opened_at": None,
    "retry_at": None,
    "reason": None,
    "updated_at": None,
}


def test_migrations_match_the_models(database_url: str) -> None:
    engine = db.make_engine(database_url)
    cfg = db.alembic_config(database_url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if autogenerate would find any difference
    engine.dispose()


def test_upgrade_is_repeatable_and_downgrade_removes_everything(database_url: str) -> None:
    engine = db.make_engine(database_url)
    db.upgrade(engine)  # already at head: nothing to do, no error
    db.downgrade(engine, "base")
    with engine.connect() as conn:
        tables = set(engine.dialect.get_table_names(conn)) - {"alembic_version"}
    assert tables == set()
    db.upgrade(engine)
    engine.dispose()


def test_down_to_the_first_revision_and_back_keeps_every_row(database_url: str) -> None:
    """Step by step, every row of every table stays, with every value its schema can hold."""
    engine = db.make_engine(database_url)
    cipher = ReflectionCipher([REFLECTIONS_KEY])
    fill(engine, cipher)
    at_head = stored(engine, cipher)
    revisions = oldest_first()

    for revision in reversed(revisions[:-1]):
        db.downgrade(engine, revision, cipher)
        now = stored(engine, cipher)
        expected = held(at_head, columns(engine))
        assert counts(now) == counts(expected), f"rows lost going down to {revision}"
        assert now == expected, f"values changed going down to {revision}"

    lowest = columns(engine)
    for revision in revisions[1:]:
        db.upgrade(engine, cipher, revision=revision)
        now = stored(engine, cipher)
        kept = {t: cs & lowest[t] for t, cs in columns(engine).items() if t in lowest}
        assert counts(held(now, kept)) == counts(held(at_head, kept)), (
            f"rows lost going up to {revision}"
        )
        assert held(now, kept) == held(at_head, kept), f"values changed going up to {revision}"

    assert fresh_values_apart(now, at_head) == after_a_round_trip(at_head)
    cfg = db.alembic_config(database_url)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # and the schema is the models' again: no constraint or index lost
    engine.dispose()


def test_a_cohort_started_today_still_takes_new_people_after_going_back_and_forth(
    rt: Runtime,
) -> None:
    course = rt.catalog.course("white-coat")
    with db.transaction(rt.sessions) as session:
        enrollment.create_cohort(session, "spring", course, "today", NOW)
    db.downgrade(rt.engine, oldest_first()[0], rt.reflection_cipher)
    db.upgrade(rt.engine, rt.reflection_cipher)
    with db.transaction(rt.sessions) as session:
        cohort = enrollment.get_cohort(session, "spring")
        assert cohort.start_date == NOW.date()  # the day it was created, where it is UTC
        signup = check_signup("ana@example.org", "Ana", "Europe/Madrid")
        later = NOW + dt.timedelta(days=2)
        joined = enrollment.enroll(session, cohort, course, signup, later)
        assert joined.next_send_at == later  # their own first day, its window open: at once


def test_sqlite_migrations_leave_foreign_keys_on_for_the_next_user(sqlite_url: str) -> None:
    engine = db.make_engine(sqlite_url)
    db.downgrade(engine, oldest_first()[-2])
    db.upgrade(engine)
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]  # the one they ran on
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_sqlite_migration_that_finds_a_broken_reference_is_refused_and_rolled_back(
    sqlite_url: str,
) -> None:
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # only outside a transaction
        conn.commit()
        conn.execute(
            insert(Subscriber).values(email="a@example.org", timezone="UTC", created_at=NOW)
        )
        conn.execute(  # cohort 99 does not exist
            insert(Enrollment).values(subscriber_id=1, cohort_id=99, created_at=NOW, updated_at=NOW)
        )
        conn.commit()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()
    before = stored(engine, ReflectionCipher([REFLECTIONS_KEY]))
    with pytest.raises(
        MigrationRefused, match="1 row.s. of enrollments would point at missing cohorts"
    ):
        db.downgrade(engine, "staff01_subscriber_greeting")  # rebuilds cohorts on the way
    assert stored(engine, ReflectionCipher([REFLECTIONS_KEY])) == before
    assert db.schema_problem(engine) is None, "still at head"
    with engine.connect() as conn:
        assert "_alembic_tmp_cohorts" not in inspect(conn).get_table_names()
    engine.dispose()


def test_sqlite_migrations_refuse_a_connection_already_in_a_transaction(sqlite_url: str) -> None:
    engine = db.make_engine(sqlite_url)
    cfg = db.alembic_config(sqlite_url)
    with engine.begin() as conn, pytest.raises(RuntimeError, match="outside a transaction"):
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    assert db.schema_problem(engine) is None, "still at head"
    engine.dispose()


def oldest_first() -> list[str]:
    """Every revision from the first (which creates the tables) to head."""
    script = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def fill(engine: Engine, cipher: ReflectionCipher) -> None:
    """Three people in two cohorts, with something in every column and table a version added."""
    both = {"created_at": NOW, "updated_at": NOW}
    with engine.begin() as conn:
        for email, name, greeting, zone, country, asked in [
            ("ana@example.org", "Ana Ruiz", "Dr. Ruiz", "Europe/Madrid", "AR", NOW),
            ("bo@example.org", "Bo", "", "Asia/Tokyo", "", None),
            ("chen@example.org", "Chen Li", "Chen", "America/New_York", "", None),
        ]:
            conn.execute(
                insert(Subscriber).values(
                    email=email,
                    name=name,
                    greeting=greeting,
                    timezone=zone,
                    country=country,
                    created_at=NOW,
                    journal_link_sent_at=asked,
                    derived_greeting=name.split()[0],
                    derived_given_name=name.split()[0],
                )
            )
        conn.execute(
            insert(Cohort).values(
                name="spring",
                course_slug="white-coat",
                start_today=True,
                timezone="Europe/Berlin",
                created_at=NOW,
            )
        )
        conn.execute(
            insert(Cohort).values(
                name="summer",
                course_slug="white-coat",
                start_date=dt.date(2026, 6, 1),
                started_at=NOW,
                created_at=NOW,
            )
        )
        for subscriber, cohort, status, day in [
            (1, 1, "active", 2),
            (2, 1, "completed", 3),
            (3, 2, "active", 1),
            (1, 2, "unsubscribed", 0),
        ]:
            conn.execute(
                insert(Enrollment).values(
                    subscriber_id=subscriber,
                    cohort_id=cohort,
                    status=status,
                    day=day,
                    next_send_at=NOW + dt.timedelta(days=1) if status == "active" else None,
                    paused_until=NOW + dt.timedelta(days=3) if subscriber == 3 else None,
                    **both,
                )
            )
        conn.execute(
            insert(LessonVersion).values(
                digest="d" * 64,
                course_slug="white-coat",
                day=1,
                title="Why",
                prompt="What brought you here?",
                questions="[]",
                body_html="<p>Day 1</p>",
                created_at=NOW,
            )
        )
        for enrollment, last in [(1, 2), (2, 3), (3, 1)]:
            for day in range(1, last + 1):
                conn.execute(
                    insert(Delivery).values(
                        enrollment_id=enrollment,
                        day=day,
                        status="sent",
                        attempts=1,
                        message_id=f"<{enrollment}.{day}@course.example.org>",
                        sent_at=NOW,
                        lesson_version_id=1 if day == 1 else None,
                        **both,
                    )
                )
        conn.execute(
            insert(Delivery).values(
                enrollment_id=3,
                day=2,
                status="waiting",
                attempts=1,
                next_attempt_at=NOW,
                last_error="451 try later",
                queued_at=NOW,
                **both,
            )
        )
        for enrollment, day, source in [(1, 1, "web"), (1, 2, "email"), (2, 1, "web")]:
            conn.execute(
                insert(Reflection).values(
                    enrollment_id=enrollment,
                    day=day,
                    prompt="What brought you here?",
                    sealed_body=cipher.seal(f"what {enrollment} wrote on day {day}"),
                    source=source,
                    **both,
                )
            )
        conn.execute(update(Cohort).where(Cohort.name == "summer").values(circle=False))
        conn.execute(insert(CircleMember).values(enrollment_id=1, anonymous=True, updated_at=NOW))
        conn.execute(
            insert(CirclePost).values(
                reflection_id=1,
                enrollment_id=1,
                cohort_id=1,
                day=1,
                sealed_body=cipher.seal("what 1 shared on day 1"),
                anonymous=True,
                hidden_reason="a reason",
                **both,
            )
        )
        conn.execute(
            insert(CircleNote).values(
                post_id=1,
                enrollment_id=2,
                sealed_body=cipher.seal("a note"),
                anonymous=False,
                created_at=NOW,
            )
        )
        conn.execute(
            insert(CircleReport).values(enrollment_id=2, post_id=1, reason="spam", created_at=NOW)
        )
        conn.execute(
            insert(InboundMessage).values(
                digest="e" * 64, kind="reply", enrollment_id=1, day=2, received_at=NOW
            )
        )
        conn.execute(
            insert(HeldReply).values(
                enrollment_id=1,
                day=2,
                sender_digest="f" * 64,
                sealed_sender=cipher.seal("ana@hospital.example.org"),
                sealed_body=cipher.seal("a reply from another address"),
                prompt="What brought you here?",
                received_at=NOW,
                expires_at=NOW + dt.timedelta(days=7),
                notice_state="sent",
                notice_attempts=1,
                notice_sent_at=NOW,
            )
        )
        conn.execute(
            insert(DeliveryProblem).values(
                enrollment_id=1,
                day=2,
                kind="bounce",
                reason="mailbox full",
                effect="soft",
                status="5.2.2",
                source="mail",
                at=NOW,
            )
        )
        conn.execute(
            insert(CheckinAnswer).values(
                enrollment_id=1, day=1, question=1, wording="How rested?", answer=4, **both
            )
        )
        conn.execute(
            insert(Suppression).values(email="gone@example.org", reason="550", created_at=NOW)
        )
        conn.execute(insert(WorkerBeat).values(worker="celery@host", last_task_at=NOW))
        conn.execute(
            update(CircuitBreaker)
            .where(CircuitBreaker.name == "mail")
            .values(failures=2, opened_at=NOW, retry_at=NOW, reason="535", updated_at=NOW)
        )


def stored(engine: Engine, cipher: ReflectionCipher) -> Tables:
    """Every row of every table as the schema of the moment has it; reflection text opened,
    so sealed (``sealed_body``) and plain (``body``, before sealing) compare alike."""
    meta = MetaData()
    tables: Tables = {}
    with engine.connect() as conn:
        meta.reflect(conn)
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            query = select(table).order_by(*table.primary_key.columns)
            rows = [dict(row._mapping) for row in conn.execute(query)]
            for row in rows:
                if "sealed_body" in row:
                    row["body"] = cipher.open(str(row.pop("sealed_body")))
            tables[table.name] = rows
    return tables


def columns(engine: Engine) -> dict[str, set[str]]:
    """The columns of every table as the schema of the moment has them (``body`` for both)."""
    with engine.connect() as conn:
        found = inspect(conn)
        return {
            table: {
                "body" if c["name"] == "sealed_body" else c["name"]
                for c in found.get_columns(table)
            }
            for table in found.get_table_names()
            if table != "alembic_version"
        }


def held(tables: Tables, schema: dict[str, set[str]]) -> Tables:
    """``tables`` as ``schema`` can hold them: only its tables and columns, and said the
    older way where ``schema`` is from before a7c1e0f2b9d4 (see said_before_a7c1)."""
    old = "start_today" not in schema.get("cohorts", ())
    return {
        name: [
            {c: row[c] for c in sorted(schema[name])}
            for row in (said_before_a7c1(name, row) if old else row for row in rows)
        ]
        for name, rows in tables.items()
        if name in schema
    }


def said_before_a7c1(name: str, row: dict[str, object]) -> dict[str, object]:
    """A row as the downgrade of a7c1e0f2b9d4 writes it for the older code: a cohort started
    "today" dated by the day it was created (UTC), a delivery waiting for a retry pending."""
    if name == "cohorts" and row.get("start_today") and row["start_date"] is None:
        assert isinstance(row["created_at"], dt.datetime)
        return row | {"start_date": row["created_at"].date()}
    if name == "deliveries" and row["status"] == "waiting":
        return row | {"status": "pending"}
    return row


def counts(tables: Tables) -> dict[str, int]:
    return {name: len(rows) for name, rows in tables.items()}


def fresh_values_apart(now: Tables, before: Tables) -> Tables:
    """``now`` with the COLUMNS_FRESH values checked (each new, none shared) and set aside."""
    for name, column in COLUMNS_FRESH:
        old = {row[column] for row in before[name]}
        new = [row[column] for row in now[name]]
        assert len(set(new)) == len(new) and not old & set(new), (name, column, old, new)
    return {
        name: [
            {c: None if (name, c) in COLUMNS_FRESH else v for c, v in row.items()} for row in rows
        ]
        for name, rows in now.items()
    }


def after_a_round_trip(at_head: Tables) -> Tables:
    expected = {
        name: [
            {
                c: None if (name, c) in COLUMNS_FRESH else COLUMNS_RESET.get((name, c), value)
                for c, value in said.items()
            }
            for said in (said_before_a7c1(name, row) for row in rows)
        ]
        for name, rows in at_head.items()
    }
    expected.update({name: [] for name in TABLES_EMPTIED})
    expected["circuit_breakers"] = [BREAKER_CLOSED]
    return expected


def test_a_database_older_or_newer_than_this_version_says_which(sqlite_url: str) -> None:
    """A database a newer release upgraded was called "from an older version", and the
    remedy given (`dripcourse init`) cannot work: this version has no such migration."""
    engine = db.make_engine(sqlite_url)
    heads = ScriptDirectory.from_config(db.alembic_config(sqlite_url)).get_heads()
    older = ScriptDirectory.from_config(db.alembic_config(sqlite_url)).get_revision(heads[0])
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE alembic_version SET version_num = '{older.down_revision}'"
            )
        problem = db.schema_problem(engine)
        assert problem is not None and "older version" in problem and "dripcourse init" in problem
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'zz_from_the_future'")
        problem = db.schema_problem(engine)
        assert problem is not None
        assert "newer version" in problem and "zz_from_the_future" in problem
        assert "dripcourse init" not in problem
    finally:
        engine.dispose()
