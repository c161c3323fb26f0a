"""`make bench`'s shared set-up: the SMTP sink in a process of its own, settings, a scratch
PostgreSQL database seeded with a cohort, and pre-built lesson messages."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_claim, bench_morning

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dripcourse import db, encryption
from dripcourse.clock import utcnow
from dripcourse.courses.greeting import from_name
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal
from dripcourse.courses.wire import (
    wire_bytes,
)
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings

COURSE = "white-coat"
WARM_UP = 200  # subscribers sent before the measured cohort: see end_to_end
REFLECTIONS_KEY = encryption.new_key()
SENDER = "lessons@dripcourse.example"
LINK_KEY = "benchlinkkey"  # an enrollment's random link key: 12 characters

# ---------------------------------------------------------------------------- the SMTP sink


def _sink_main(port: int, count, ready, stop, delay: float) -> None:  # type: ignore[no-untyped-def]
    class Counting:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            if delay:  # a relay that takes its time over each message (queueing, scanning)
                await asyncio.sleep(delay)
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class Sink:
    """aiosmtpd counting what it accepts, in a process of its own; ``delay`` seconds before
    each message's 250."""

    def __init__(self, delay: float = 0.0) -> None:
        from tests.smtp_sink import _free_port

        ctx = multiprocessing.get_context("fork")
        self.port = _free_port()
        self.count = ctx.Value("q", 0)
        ready, self._stop = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_sink_main, args=(self.port, self.count, ready, self._stop, delay), daemon=True
        )
        self.proc.start()
        if not ready.wait(30):
            raise SystemExit("the SMTP sink did not start")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self.count.get_lock():
            self.count.value = 0

    def stop(self) -> None:
        self._stop.set()
        self.proc.join(10)


# ------------------------------------------------------------------------- shared set-up


def settings_for(tmp: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "database_url": f"sqlite:///{tmp}/probe.sqlite3",
        "broker_url": "memory://",
        "mail_url": f"file://{tmp}/outbox",
        "base_url": "https://course.example.org",
        "secret_key": "bench-secret-key-" + "k" * 32,  # 32 bytes at least, as settings demand
        "reflections_key": REFLECTIONS_KEY,  # PostgreSQL needs one set
        "emails_dir": str(ROOT / "emails"),
        "var_dir": str(tmp / "var"),
        "message_id_domain": "course.example.org",
        "batch_size": 500,
    }
    base.update(values)
    return Settings(**base)  # type: ignore[arg-type]


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"dripcourse_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(url: str, enrolled: int, due: int, now: dt.datetime, *, spread: bool = False) -> None:
    """``enrolled`` subscribers on Day 1, ``due`` of them with Day 2 due at ``now``.

    Set up in the database with generate_series (a million rows take seconds): every
    enrollment already has its Day 1 delivery recorded, as it would a day into a cohort,
    and the rest are due at times spread over the next day. The due ones were enrolled
    together, as a cohort is (neighbours in the table); with ``spread`` every nth row is due
    instead, the worst case for the claim (one table page per due row).
    """
    naive = now.astimezone(dt.UTC).replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as conn:
        cohort = conn.execute(
            text(
                "INSERT INTO cohorts (name, course_slug, started_at, created_at) "
                "VALUES (:name, :slug, :now, :now) RETURNING id"
            ),
            {"name": f"bench-{uuid.uuid4().hex[:6]}", "slug": COURSE, "now": naive},
        ).scalar_one()
        # What each name gives, kept on the row as an import or a signup keeps it: every
        # "Reader <n>" gives the same.
        greeting, given = from_name("Reader 1")
        conn.execute(
            text(
                "INSERT INTO subscribers (email, name, timezone, created_at, "
                "derived_greeting, derived_given_name) "
                "SELECT 'reader' || g || '@example.org', 'Reader ' || g, :zone, :now, "
                ":greeting, :given FROM generate_series(1, :n) AS g"
            ),
            {
                "n": enrolled,
                "now": naive,
                "zone": midday_zone(now),
                "greeting": greeting,
                "given": given,
            },
        )
        conn.execute(
            text(
                "INSERT INTO enrollments (subscriber_id, cohort_id, status, day, next_send_at, "
                "created_at, updated_at) "
                "SELECT s.id, :cohort, 'active', 1, "
                "CASE WHEN (CASE WHEN :spread THEN s.id % :every = 0 ELSE s.id <= :due END) "
                "THEN :now - interval '1 minute' "
                "ELSE :now + interval '1 hour' + (s.id % 86400) * interval '1 second' END, "
                ":now, :now FROM subscribers AS s"
            ),
            {
                "cohort": cohort,
                "now": naive,
                "spread": spread,
                "every": max(1, enrolled // due),
                "due": due,
            },
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (enrollment_id, day, status, attempts, created_at, "
                "updated_at, sent_at) "
                "SELECT id, 1, 'sent', 1, :now, :now, :now FROM enrollments"
            ),
            {"now": naive},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def midday_zone(now: dt.datetime) -> str:
    """A zone where ``now`` is about noon: inside the course's sending window whenever the
    benchmark runs (the workers read the real clock)."""
    offset = (12 - now.astimezone(dt.UTC).hour + 12) % 24 - 12  # hours east of UTC, -12..11
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/ signs are inverted


def lesson_messages(rt: Runtime, n: int, day: int = 1) -> list[tuple[str, bytes]]:
    course = rt.catalog.course(COURSE)
    rendered = rt.catalog.renderer.lesson(course, day)
    out = []
    for i in range(n):
        who = Personal(
            email=f"reader{i}@example.org",
            name=f"Reader {i}",
            **rt.links.for_lesson(i, day, LINK_KEY),
        )
        msg = build_message(rendered, who, now=utcnow(), msg_id=message_id("b.org", i, "k"))
        out.append((who.email, wire_bytes(msg)))
    return out
