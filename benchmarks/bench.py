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
import os
import signal
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_claim, bench_morning

import bench_claim  # noqa: E402 - beside this file
import bench_cpu  # noqa: E402 - beside this file
import bench_morning  # noqa: E402 - beside this file
import bench_setup  # noqa: E402 - beside this file
from bench_rates import (  # noqa: E402 - beside this file
    end_to_end,
    enqueue_rates,
    make_due_again,
    naive_rate,
    personalisation_rates,
    raw_rate,
    scheduler_pass,
)
from bench_setup import (  # noqa: E402 - beside this file
    Sink,
    lesson_messages,
    scratch_postgres,
    seed,
    settings_for,
)

from dripcourse.clock import utcnow
from dripcourse.runtime import Runtime
from dripcourse.sending.transport import transport_from_url

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
                bench_cpu.cpu_per_message(bench_setup, tmp, args.postgres, n, profile=profile)
            )
            found["smtp"].append(
                bench_cpu.cpu_per_message(
                    bench_setup,
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
                    bench_morning.morning(bench_setup, sink, tmp, args.postgres, args.redis, n),
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
    load_before, ticks_before = os.getloadavg()[0], _cpu_ticks()
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
        f"{os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores.{_stolen(ticks_before)}\n"
    )
    print("| what | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")
    for enrolled, statements in explained.items():
        for label, plan in statements.items():
            print(f"\nPlan, {enrolled} enrolled, {label}:\n")
            print("\n".join("    " + line for line in plan.splitlines()))


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far by kind, from /proc/stat (None where there is none)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None


def _stolen(before: list[int] | None) -> str:
    """How much of the machine's CPU time its host took for others meanwhile (steal): on a
    virtual machine the same work can take twice the CPU from one run to the next."""
    after = _cpu_ticks()
    if before is None or after is None or len(after) < 8:
        return ""
    spent = [b - a for a, b in zip(before, after, strict=False)]
    return f" The host took {spent[7] / max(1, sum(spent[:8])):.1%} of its CPU time (steal)."


if __name__ == "__main__":
    main()
