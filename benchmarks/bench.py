"""`make bench`: dripcourse's sending rate next to the raw limit and the naive way, in one run.

Everything is measured in the same run on the same machine, because this machine is shared and
its speed changes from minute to minute: only figures taken together compare.

- raw: smtplib pushing pre-built lesson messages over one connection into a local aiosmtpd
  sink (the limit for one sending process on this machine);
- naive: what most tutorials do per recipient (Jinja, Markdown and premailer, a new
  EmailMessage, a new SMTP connection);
- dripcourse end to end: one scheduler pass claims a cohort's Day 1 and queues it on Redis;
  two Celery worker processes (prefork) send it through PostgreSQL into the same sink, warm
  (a first 200 sent before the clock starts, as workers up since before the morning are);
  then the same with two thread-pool workers; and all that into a relay slow to answer;
- our CPU per message: send_batch in one process on PostgreSQL, into a null transport and
  into the sink, our CPU time and the database's per message (bench_cpu.py);
- personalisation: one rendered lesson into wire bytes per recipient, old path and new, in
  CPU time of one process (one core);
- enqueue: queueing 10,000 delivery ids on Redis, one publish per id and in batches;
- scheduler pass: claiming 10,000 due among 10,000 / 100,000 / 1,000,000 enrolled on
  PostgreSQL, with the query plans.

The sink runs in a process of its own, so no sender shares its CPU (or GIL) with it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import signal
import smtplib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formataddr
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_claim, bench_morning

import bench_claim  # noqa: E402 - beside this file
import bench_cpu  # noqa: E402 - beside this file
import bench_morning  # noqa: E402 - beside this file
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dripcourse import db, encryption, tasks
from dripcourse.clock import utcnow
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal, Renderer
from dripcourse.courses.wire import (
    personalise,
    wire_bytes,
)
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery
from dripcourse.sending.transport import transport_from_url
from dripcourse.settings import Settings
from tests.workers import CeleryProcess, wait_until

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
        conn.execute(
            text(
                "INSERT INTO subscribers (email, name, timezone, created_at) "
                "SELECT 'reader' || g || '@example.org', 'Reader ' || g, :zone, :now "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": enrolled, "now": naive, "zone": midday_zone(now)},
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


# ------------------------------------------------------------------------------ the rates


def raw_rate(sink: Sink, messages: list[tuple[str, bytes]]) -> float:
    """Pre-built messages over one smtplib connection: the limit on this machine."""
    sink.reset()
    conn = smtplib.SMTP("127.0.0.1", sink.port)
    start = time.perf_counter()
    for to, data in messages:
        conn.sendmail(SENDER, [to], data)
    elapsed = time.perf_counter() - start
    conn.quit()
    assert sink.count.value == len(messages)
    return len(messages) / elapsed


def naive_rate(sink: Sink, rt: Runtime, n: int) -> float:
    """Per recipient: render and inline the lesson, a new EmailMessage, a new connection."""
    course = rt.catalog.course(COURSE)
    renderer = Renderer(ROOT / "emails")
    sink.reset()
    start = time.perf_counter()
    for i in range(n):
        rendered = renderer._render(course, course.lesson(1))  # noqa: SLF001 - no cache: naive
        who = Personal(
            email=f"reader{i}@example.org",
            name=f"Reader {i}",
            **rt.links.for_lesson(i, 1, LINK_KEY),
        )
        msg = EmailMessage()
        msg["From"] = course.sender
        msg["To"] = formataddr((who.name, who.email))
        msg["Subject"] = rendered.subject.render(who)
        msg.set_content(rendered.text.render(who))
        msg.add_alternative(rendered.html.render(who), subtype="html")
        with smtplib.SMTP("127.0.0.1", sink.port) as conn:
            conn.send_message(msg)
    elapsed = time.perf_counter() - start
    assert sink.count.value == n
    return n / elapsed


def _peak_rss_mib(pid: int) -> tuple[float, float]:
    """VmHWM of a process and the largest of its children's, in MiB."""

    def hwm(p: int) -> float:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return hwm(pid), max((hwm(int(c)) for c in children), default=0.0)


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and all its descendants now alive."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo.extend(int(c) for c in children)
    return total


def end_to_end(
    sink: Sink,
    tmp: Path,
    admin_url: str,
    redis_url: str,
    n: int,
    *,
    threads: int = 0,
    warm: int = WARM_UP,
) -> tuple[float, float, float, float, float]:
    """One tick claims a cohort's Day 1 and queues it; 2 Celery workers send it: one worker
    with 2 prefork pool processes, or with ``threads``, two worker processes of that many
    threads each (each sending thread on an SMTP connection of its own).

    The workers and the scheduler run warm, as they do in production, where they have been up
    since before the morning: ``warm`` more subscribers are due too, and a first claim sends
    them (loading the course, opening connections, recording the lesson's version) before
    the clock starts.

    Returns messages/s from the start of the tick to the sink's last acceptance, the peak RSS
    of the worker's parent and of its largest pool process (prefork only), the seconds
    from the warm-up's claim to its first message (a cold start), and the workers' CPU time
    per message meanwhile, in ms (every process of theirs: our code, Celery, the drivers).
    """
    with scratch_postgres(admin_url) as url:
        settings = settings_for(
            tmp, database_url=url, broker_url=redis_url, mail_url=sink.url, batch_size=500
        )
        redis.Redis.from_url(redis_url).flushdb()
        now = utcnow()
        seed(url, n + warm, n + warm, now)
        if threads:
            workers = [
                CeleryProcess.worker(
                    settings,
                    tmp / f"worker-{n}-{i}.log",
                    pool="threads",
                    concurrency=threads,
                    name=f"bench{n}t{i}",
                )
                for i in (1, 2)
            ]
        else:
            log = tmp / f"worker-{n}.log"
            workers = [
                CeleryProcess.worker(settings, log, pool="prefork", concurrency=2, name=f"bench{n}")
            ]
        worker = workers[0]
        try:
            for each in workers:
                wait_until(lambda w=each: "ready." in w.output(), 120, "the worker", each.output)
            rt = Runtime(settings)
            tasks.configure(settings)
            sink.reset()
            start = time.perf_counter()
            if warm:
                assert delivery.claim_due_lessons(rt, utcnow(), tasks.enqueue, limit=warm) == warm
                wait_until(lambda: sink.count.value >= 1, 600, "a first message", worker.output)
            cold = time.perf_counter() - start
            wait_until(lambda: sink.count.value >= warm, 600, "the warm-up", worker.output)
            sink.reset()
            cpu = sum(_cpu_seconds(each.proc.pid) for each in workers)
            start = time.perf_counter()
            claimed = delivery.tick(rt, utcnow(), tasks.enqueue).claimed
            assert claimed == n, (claimed, n)
            wait_until(lambda: sink.count.value >= n, 3600, f"{n} messages", worker.output)
            elapsed = time.perf_counter() - start
            cpu = sum(_cpu_seconds(each.proc.pid) for each in workers) - cpu
            parent, child = _peak_rss_mib(worker.proc.pid)
            rt.close()
        finally:
            for each in workers:
                each.stop()
    return n / elapsed, parent, child, cold, cpu / n * 1000


def personalisation_rates(rt: Runtime, n: int) -> tuple[float, float, float]:
    """Messages per CPU-second: build_message + serialise (old), wire.personalise (new), and
    signing the seven links a lesson carries (an input to both)."""
    course = rt.catalog.course(COURSE)
    rendered = rt.catalog.renderer.lesson(course, 3)
    now = utcnow()
    people = [
        Personal(email=f"reader{i}@example.org", name=name, **rt.links.for_lesson(i, 3, LINK_KEY))
        for i, name in zip(
            range(n), ["Amara Okafor", "Zoë Núñez-Çelik", 'Dr. "Bob" Smith'] * n, strict=False
        )
    ]
    personalise(rendered, people[0], now=now, msg_id="<warm@b.org>")  # encode once, untimed

    def rate(run: Callable[[], object]) -> float:
        samples = []
        for _ in range(3):
            start = time.process_time()
            run()
            samples.append(n / (time.process_time() - start))
        return statistics.median(samples)

    old = rate(
        lambda: [
            wire_bytes(build_message(rendered, who, now=now, msg_id=f"<{i}@b.org>"))
            for i, who in enumerate(people)
        ]
    )
    new = rate(
        lambda: [
            personalise(rendered, who, now=now, msg_id=f"<{i}@b.org>")
            for i, who in enumerate(people)
        ]
    )
    links = rate(lambda: [rt.links.for_lesson(i, 3, LINK_KEY) for i in range(n)])
    return old, new, links


def enqueue_rates(tmp: Path, redis_url: str, n: int) -> tuple[float, float]:
    """Ids queued per second on Redis: one task published per id (before), tasks.enqueue
    (after: one task per send_batch_size ids, published in pipelined batches)."""
    tasks.configure(settings_for(tmp, broker_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    ids = list(range(1, n + 1))

    def one_by_one(batch: list[int]) -> None:
        for delivery_id in batch:
            tasks.send_lesson.apply_async((delivery_id,))

    size = tasks.runtime().settings.send_batch_size
    rates = []
    for way, messages in ((one_by_one, n), (tasks.enqueue, -(-n // size))):
        client.flushdb()
        way([0])  # connect and declare the queue first: not measured
        start = time.perf_counter()
        way(ids)
        rates.append(n / (time.perf_counter() - start))
        assert client.llen("celery") == messages + 1
    client.flushdb()
    return rates[0], rates[1]


# ---------------------------------------------------------------------- the scheduler pass


def explain(session, statement) -> str:  # type: ignore[no-untyped-def]
    """EXPLAIN (ANALYZE, BUFFERS) of a statement with its values written in as literals."""
    sql = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
    )
    rows = session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")).scalars()
    return "\n".join(rows)


def plans(rt: Runtime, now: dt.datetime) -> dict[str, str]:
    """The plans of the pass's statements, run and rolled back."""
    statements = {
        "claim (UPDATE ... RETURNING of one batch)": lambda s: delivery.claim_statement(
            s, now, rt.settings.batch_size
        ),
        "sweep (deliveries to queue again)": lambda s: delivery.open_deliveries(
            now, rt.settings.batch_size
        ),
    }
    out = {}
    for label, make in statements.items():
        with rt.sessions() as session:
            out[label] = explain(session, make(session))
            session.rollback()
    return out


def scheduler_pass(
    tmp: Path, admin_url: str, enrolled: int, due: int, spread: bool, repeats: int = 3
) -> tuple[float, dict]:
    """Median seconds of ``repeats`` passes (claim + sweep) each taking ``due`` among
    ``enrolled``, the same rows made due again between passes; and the plans."""
    with scratch_postgres(admin_url) as url:
        now = utcnow()
        seed(url, enrolled, due, now, spread=spread)
        rt = Runtime(settings_for(tmp, database_url=url))
        explained = plans(rt, now)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = delivery.tick(rt, now, lambda ids: None)
            times.append(time.perf_counter() - start)
            assert result.claimed == due, (result.claimed, due)
            make_due_again(rt, now)
        rt.close()
    return statistics.median(times), explained


def make_due_again(rt: Runtime, now: dt.datetime) -> None:
    """Undo a pass: the claimed enrollments due again, their new deliveries gone, vacuumed."""
    naive = now.astimezone(dt.UTC).replace(tzinfo=None)
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM deliveries WHERE day = 2"))
        conn.execute(
            text("UPDATE enrollments SET next_send_at = :due WHERE next_send_at IS NULL"),
            {"due": naive - dt.timedelta(minutes=1)},
        )
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE enrollments, deliveries"))


# ---------------------------------------------------------------------------------- main


class Rows(list[tuple[str, str]]):
    """The table's rows; each also goes to stderr as it is measured, to show progress."""

    def append(self, row: tuple[str, str]) -> None:
        print(f"  {row[0]}: {row[1]}", file=sys.stderr, flush=True)
        super().append(row)


def measure_sending(rows: Rows, probe: Runtime, tmp: Path, args: argparse.Namespace) -> None:
    """Raw, naive and end to end into one sink, one after the other.

    The raw rate moves by a fifth from one minute to the next on this machine (where the two
    processes of a loopback exchange land on its two cores), so it is measured before the
    first end-to-end run and after each, and the ratios use the median.
    """
    sink = Sink()
    try:
        messages = lesson_messages(probe, min(max(args.subscribers), 3000))
        raws = [raw_rate(sink, messages)]
        naive = naive_rate(sink, probe, args.naive)
        layouts = [("2 workers (prefork, one connection each)", 0)]
        if args.threads:
            layouts.append(
                (f"2 workers of {args.threads} threads (a connection each)", args.threads)
            )
        measured = []
        for n in args.subscribers:
            for layout, threads in layouts:
                rate, parent, child, cold, cpu = end_to_end(
                    sink, tmp, args.postgres, args.redis, n, threads=threads
                )
                print(f"  ({n:,}, {layout}: {rate:,.0f}/s)", file=sys.stderr, flush=True)
                measured.append((n, layout, threads, rate, parent, child, cold, cpu))
                raws.append(raw_rate(sink, messages))
        raw = statistics.median(raws)
        spread = f"{min(raws):,.0f} to {max(raws):,.0f}"
        rows.append(
            (
                "raw smtplib, pre-built messages, one connection",
                f"{raw:,.0f}/s (median of {len(raws)} runs through the part: {spread})",
            )
        )
        rows.append(("naive: premailer + EmailMessage + connection each", f"{naive:,.0f}/s"))
        for n, layout, threads, rate, parent, child, cold, cpu in measured:
            rows.append(
                (
                    f"dripcourse end to end, {n:,} subscribers, {layout}, PostgreSQL + Redis",
                    f"{rate:,.0f}/s = {rate / raw:.2f} x raw, {rate / naive:.1f} x naive",
                )
            )
            rows.append((f"the workers' CPU per message meanwhile, {layout}", f"{cpu:.2f} ms"))
            if not threads:
                rows.append(
                    (
                        f"worker peak RSS, {n:,} subscribers",
                        f"pool process {child:.0f} MiB, parent {parent:.0f} MiB",
                    )
                )
                rows.append(
                    (
                        f"cold start before the {n:,} run: from the first claim to the first "
                        "message, workers just started",
                        f"{cold:.2f} s",
                    )
                )
    finally:
        sink.stop()


def measure_slow_relay(rows: Rows, probe: Runtime, tmp: Path, args: argparse.Namespace) -> None:
    """A relay that answers each message after ``--relay-delay`` ms: one connection per
    sending process against one per sending thread."""
    delay = args.relay_delay / 1000
    n = min(args.subscribers)
    sink = Sink(delay=delay)
    try:
        raw = raw_rate(sink, lesson_messages(probe, min(n, 500)))
        rows.append(
            (f"relay answering after {args.relay_delay:g} ms: raw, one connection", f"{raw:,.0f}/s")
        )
        prefork, _, _, _, _ = end_to_end(sink, tmp, args.postgres, args.redis, n)
        rows.append(
            (
                f"the same relay: dripcourse, {n:,} subscribers, 2 prefork processes",
                f"{prefork:,.0f}/s = {prefork / raw:.2f} x raw",
            )
        )
        threaded, _, _, _, _ = end_to_end(
            sink, tmp, args.postgres, args.redis, n, threads=args.relay_threads
        )
        rows.append(
            (
                f"the same relay: dripcourse, {n:,} subscribers, 2 workers of "
                f"{args.relay_threads} threads",
                f"{threaded:,.0f}/s = {threaded / raw:.2f} x raw",
            )
        )
    finally:
        sink.stop()


def measure_claim(rows: Rows, tmp: Path, args: argparse.Namespace) -> None:
    enrolled, due = args.claim
    with scratch_postgres(args.postgres) as url:
        now = utcnow()
        seed(url, enrolled, due, now)
        rt = Runtime(settings_for(tmp, database_url=url, broker_url=args.redis))
        again = partial(make_due_again, rt, now)
        found = bench_claim.claim_rates(rt, now, due, args.redis, again)
        rt.close()
    raw, claim, queued = found["raw"], found["claim"], found["queued"]
    morning = f"{due:,} due among {enrolled:,} enrolled"
    rows.append(
        (
            f"raw: one SQL statement marks {morning} in flight and inserts their deliveries",
            f"{raw:.2f} s = {due / raw:,.0f}/s",
        )
    )
    rows.append(
        (
            f"claim {morning}: claim_due_lessons, batches of 500, every rule",
            f"{claim:.2f} s = **{due / claim:,.0f}/s** = {raw / claim:.2f} x raw",
        )
    )
    rows.append(
        (
            f"claim {morning} and queue it on Redis as each batch commits",
            f"first batch queued after {found['first queued']:.3f} s, all after {queued:.2f} s "
            f"= {due / queued:,.0f}/s",
        )
    )


def measure_cpu(rows: Rows, tmp: Path, args: argparse.Namespace) -> None:
    """Our CPU per message, null transport and SMTP into a sink, alternately, ``--cpu-runs``
    times each; the median of each."""
    n = args.cpu
    sink = Sink()
    try:
        found: dict[str, list[dict[str, float]]] = {"null": [], "smtp": []}
        for run in range(args.cpu_runs):
            profile = Path(args.profile) if args.profile and run == 0 else None
            found["null"].append(
                bench_cpu.cpu_per_message(
                    sys.modules[__name__], tmp, args.postgres, n, profile=profile
                )
            )
            found["smtp"].append(
                bench_cpu.cpu_per_message(
                    sys.modules[__name__],
                    tmp,
                    args.postgres,
                    n,
                    transport=partial(transport_from_url, sink.url),
                )
            )
            print(f"  (cpu run {run + 1}: {found})", file=sys.stderr, flush=True)
    finally:
        sink.stop()
    for label, runs in (
        ("null transport", found["null"]),
        ("SMTP into the local sink", found["smtp"]),
    ):
        ours = statistics.median(r["ours"] for r in runs)
        each = ", ".join(f"{r['ours']:.2f}" for r in runs)
        rows.append(
            (
                f"our CPU per message, send_batch, {n:,} after 200, PostgreSQL, {label}",
                f"**{ours:.2f} ms** (median of {len(runs)}: {each})",
            )
        )
        if all("database" in r for r in runs):
            database = statistics.median(r["database"] for r in runs)
            rows.append(
                (f"the database's CPU per message (its backends), {label}", f"{database:.2f} ms")
            )
        wall = statistics.median(r["wall"] for r in runs)
        rows.append((f"wall time per message, one process, {label}", f"{wall:.2f} ms"))


def measure_morning(rows: Rows, probe: Runtime, tmp: Path, args: argparse.Namespace) -> None:
    """Whole mornings, with the raw rate into the same sink before and after each."""
    sink = Sink()
    try:
        messages = lesson_messages(probe, 2000)
        raws = [raw_rate(sink, messages)]
        found = []
        for n in args.morning:
            found.append(
                (
                    n,
                    bench_morning.morning(
                        sys.modules[__name__], sink, tmp, args.postgres, args.redis, n
                    ),
                )
            )
            raws.append(raw_rate(sink, messages))
        raw = statistics.median(raws)
        rows.append(("raw smtplib into the morning's sink (median)", f"{raw:,.0f}/s"))
        for n, t in found:
            rate = n / (t["last sent"] - t["first sent"])
            rows.append(
                (
                    f"morning of {n:,}: first batch on Redis / claim and queue done / first sent / "
                    "last sent / last recorded (s from the tick)",
                    f"{t['first queued']:.2f} / {t['claimed and queued']:.2f} / "
                    f"{t['first sent']:.2f} / {t['last sent']:.2f} / {t['last recorded']:.2f}",
                )
            )
            rows.append(
                (
                    f"morning of {n:,}: sending rate, first to last message",
                    f"{rate:,.0f}/s = {rate / raw:.2f} x raw",
                )
            )
            rows.append(
                (
                    f"morning of {n:,}: peak memory (MiB) of the tick / a worker / Redis "
                    "(used, above its start) / a PostgreSQL backend",
                    f"{t['tick MiB']:.0f} / {t['worker MiB']:.0f} / {t['redis MiB']:.1f} / "
                    f"{t['postgres MiB']:.0f}",
                )
            )
    finally:
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "DRIPCOURSE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="admin URL under which scratch databases are made and dropped",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("DRIPCOURSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
        help="a Redis database the benchmark may empty",
    )
    parser.add_argument("--subscribers", type=int, nargs="+", default=[3000])
    parser.add_argument("--naive", type=int, default=300, help="messages sent the naive way")
    parser.add_argument(
        "--enrolled",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="population sizes for the scheduler pass (smaller for a quick run)",
    )
    parser.add_argument("--due", type=int, default=10_000, help="due in each scheduler pass")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="scheduler pass: every nth enrollment due (worst case) rather than one cohort",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["send", "cpu", "slow-relay", "personalise", "enqueue", "pass", "claim", "morning"],
        default=["send", "cpu", "slow-relay", "personalise", "enqueue", "pass", "claim", "morning"],
        help="what to measure (all by default)",
    )
    parser.add_argument(
        "--relay-delay", type=float, default=20, help="slow-relay part: ms before each 250"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="send part: also run 2 thread-pool workers of this many threads (0: not)",
    )
    parser.add_argument(
        "--relay-threads", type=int, default=8, help="slow-relay part: threads per worker"
    )
    parser.add_argument(
        "--claim",
        type=int,
        nargs=2,
        default=[1_000_000, 100_000],
        metavar=("ENROLLED", "DUE"),
        help="claim part: a morning of DUE among ENROLLED",
    )
    parser.add_argument(
        "--morning",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="morning part: readers in each end-to-end morning",
    )
    parser.add_argument(
        "--cpu", type=int, default=2000, help="cpu part: messages measured (after 200 to warm up)"
    )
    parser.add_argument("--cpu-runs", type=int, default=3, help="cpu part: runs of each transport")
    parser.add_argument(
        "--profile", default="", help="cpu part: write a cProfile of the first null run here"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not a result")
    args = parser.parse_args()
    # Killed with SIGTERM, still stop the workers and drop the scratch databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    load_before = os.getloadavg()[0]
    if args.quick:
        args.subscribers, args.naive, args.enrolled, args.due = [300], 50, [2000, 20_000], 1000
        args.claim = [100_000, 10_000]
        args.morning = [1000, 3000]
        args.cpu, args.cpu_runs = 500, 1

    rows = Rows()
    explained: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        probe = Runtime(settings_for(tmp))
        if "send" in args.parts:
            measure_sending(rows, probe, tmp, args)
        if "cpu" in args.parts:
            measure_cpu(rows, tmp, args)
        if "slow-relay" in args.parts:
            measure_slow_relay(rows, probe, tmp, args)
        if "personalise" in args.parts:
            old, new, links = personalisation_rates(probe, 2000)
            rows.append(("personalise into wire bytes: build_message (old)", f"{old:,.0f}/s"))
            rows.append(("personalise into wire bytes: wire.personalise (new)", f"{new:,.0f}/s"))
            rows.append(("sign the 7 links of one lesson", f"{links:,.0f}/s"))
        if "enqueue" in args.parts:
            before, after = enqueue_rates(tmp, args.redis, 10_000)
            rows.append(
                ("enqueue 10,000 ids on Redis: one publish each (before)", f"{before:,.0f}/s")
            )
            rows.append(
                ("enqueue 10,000 ids on Redis: tasks.enqueue, 100 to a task", f"{after:,.0f}/s")
            )
        probe.close()
        if "claim" in args.parts:
            measure_claim(rows, tmp, args)
        if "morning" in args.parts:
            measure_morning(rows, probe, tmp, args)
        layout = "every nth due" if args.spread else "one cohort due"
        for enrolled in args.enrolled if "pass" in args.parts else []:
            due = min(args.due, enrolled)
            seconds, explained[f"{enrolled:,}"] = scheduler_pass(
                tmp, args.postgres, enrolled, due, args.spread
            )
            rows.append(
                (
                    f"scheduler pass: claim {due:,} due among {enrolled:,} enrolled ({layout})",
                    f"{seconds:.2f} s",
                )
            )
    print(
        f"Load average (1 min) at the start {load_before:.1f}, at the end "
        f"{os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores.\n"
    )
    print("| what | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")
    for enrolled, statements in explained.items():
        for label, plan in statements.items():
            print(f"\nPlan, {enrolled} enrolled, {label}:\n")
            print("\n".join("    " + line for line in plan.splitlines()))


if __name__ == "__main__":
    main()
