"""`make bench`'s measurements: raw smtplib, the naive way, dripcourse end to end with Celery
workers, personalisation, enqueueing and the scheduler pass, each a function returning figures."""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_claim, bench_morning

import redis
from bench_setup import (  # noqa: E402 - beside this file
    COURSE,
    LINK_KEY,
    SENDER,
    WARM_UP,
    Sink,
    scratch_postgres,
    seed,
    settings_for,
)
from sqlalchemy import text

from dripcourse import tasks
from dripcourse.clock import utcnow
from dripcourse.courses.message import build_message
from dripcourse.courses.render import Personal, Renderer
from dripcourse.courses.wire import (
    personalise,
    wire_bytes,
)
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery
from tests.workers import CeleryProcess, wait_until

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
