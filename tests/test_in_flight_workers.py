"""People who delete themselves, or pause, while a cohort's morning is being sent by real
Celery workers: none of them is mailed after their request returned, everyone else gets their
lesson once, and no worker task fails.

Two prefork workers (one with embedded beat), a private redis-server, PostgreSQL and an SMTP
server slow to answer, so that batches are taken and being sent when people act. The test
waits on the processes, never on the calendar.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from dripcourse.clock import utcnow
from dripcourse.db import transaction
from dripcourse.models import DeliveryStatus
from dripcourse.people import changes as people
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.smtp_sink import SMTPSink
from tests.workers import (
    CeleryProcess,
    delivery_rows,
    private_redis_server,
    start_cohort,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SIZE = 240
ACTING = 12


def _act(rt: Runtime, action: str, address: str) -> None:
    """What the reader's "Delete everything about me" (or `dripcourse forget`) does, or
    `dripcourse pause ADDRESS --days 3` (the same steps as the reader's pause page)."""
    with transaction(rt.sessions) as session:
        if action == "forget":
            privacy.forget_subscriber(session, privacy.find_subscriber(session, address), utcnow())
            return
        person = people.find_person(session, address)
        chosen = people.pick_enrollment(person, None)
        course = rt.catalog.course(chosen.cohort.course_slug)
        people.pause(session, chosen, course, utcnow(), days=3)


@pytest.mark.parametrize("action", ["forget", "pause"])
def test_people_acting_mid_morning_are_not_mailed_after_and_everyone_else_is_served(
    tmp_path: Path, postgres_url: str, action: str
) -> None:
    sink = SMTPSink().start()
    sink.handler.delay = 0.03  # a relay slow to answer: batches are on their way for a while
    with private_redis_server(tmp_path / "redis") as redis_server:
        settings = make_settings(
            tmp_path,
            database_url=postgres_url,
            broker_url=redis_server.url,
            mail_url=f"smtp://127.0.0.1:{sink.port}",
            tick_seconds=0.5,
            batch_size=40,
            send_lease_seconds=300,
        )
        addresses = start_cohort(settings, SIZE, name="morning")
        workers = [
            CeleryProcess.worker(
                settings, tmp_path / "w1.log", beat=True, pool="prefork", concurrency=2
            ),
            CeleryProcess.worker(
                settings, tmp_path / "w2.log", pool="prefork", concurrency=2, name="w2"
            ),
        ]

        def output() -> str:
            return "\n".join(w.output() for w in workers)

        returned: dict[str, float] = {}
        try:
            wait_until(
                lambda: len(sink.handler.received) >= 20, 90, "the morning under way", output
            )
            mailed = set(sink.handler.recipients())
            # Readers whose lessons are taken or queued now, spread over the batches.
            waiting = [a for a in addresses if a not in mailed]
            acting = waiting[:: max(1, len(waiting) // ACTING)][:ACTING]
            rt = Runtime(settings)
            try:
                for address in acting:
                    _act(rt, action, address)
                    returned[address] = time.monotonic()
            finally:
                rt.close()
            others = set(addresses) - set(acting)
            wait_until(
                lambda: others <= set(sink.handler.recipients()), 120, "everyone else", output
            )

            def recorded() -> bool:  # the sink stores a message before its 250 is answered
                rows = delivery_rows(settings)
                return all(r["status"] == "sent" for r in rows if r["email"] in others)

            wait_until(recorded, 60, "everyone else's lesson recorded as sent", output)
        finally:
            for worker in workers:
                worker.kill()
            sink.stop()
    assert len(returned) == ACTING
    late = [
        (to, round(m.started - returned[to], 3))
        for m in sink.handler.messages()
        for to in m.rcpt_tos
        if to in returned and m.started > returned[to]
    ]
    assert late == [], f"mailed after their {action} returned: {late}"
    counts = sink.handler.counts()
    assert {a: counts[a] for a in set(addresses) - set(returned)} == dict.fromkeys(
        set(addresses) - set(returned), 1
    )
    rows = delivery_rows(settings)
    logs = output()
    assert "Traceback" not in logs and "AssertionError" not in logs
    statuses = collections.Counter(r["status"] for r in rows if r["email"] not in returned)
    assert statuses == {DeliveryStatus.SENT: SIZE - ACTING}  # nothing stranded in "sending"
    if action == "forget":
        assert not [r for r in rows if r["email"] in returned]
    else:
        # Each paused reader's Day 1 was either out before the pause or waits for its end,
        # its attempt given back.
        held = [r for r in rows if r["email"] in returned and r["status"] != "sent"]
        assert {(r["status"], r["attempts"]) for r in held} <= {("waiting", 0)}
        assert len(held) + sum(counts[a] for a in returned) == ACTING
