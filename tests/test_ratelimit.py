"""The global send-rate limit: one budget in Redis, shared by every process that sends."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import redis

from dripcourse import runtime
from dripcourse.runtime import Runtime
from dripcourse.sending.ratelimit import RateLimiter
from dripcourse.sending.transport import RelayError
from tests.conftest import make_settings
from tests.smtp_sink import _free_port
from tests.workers import private_redis_server

pytestmark = pytest.mark.redis


def limiter(url: str, per_second: float, **options: object) -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(url), per_second, **options)  # type: ignore[arg-type]


def test_back_to_back_reservations_are_spaced_one_interval_apart(redis_url: str):
    ten_a_second = limiter(redis_url, 10)

    waits = [ten_a_second.reserve() for _ in range(10)]

    # Slot k starts k/10 s after the first; the calls themselves take a little of that time.
    for k, wait in enumerate(waits):
        assert k * 0.1 - 0.05 <= wait <= k * 0.1 + 1e-6, waits


def test_burst_lets_the_first_few_go_at_once(redis_url: str):
    bursty = limiter(redis_url, 10, burst=3)

    waits = [bursty.reserve() for _ in range(4)]

    assert waits[:3] == [0, 0, 0]
    assert 0.05 <= waits[3] <= 0.1 + 1e-6


def test_separate_keys_have_separate_budgets(redis_url: str):
    first = limiter(redis_url, 1, key="relay-a")
    second = limiter(redis_url, 1, key="relay-b")

    assert first.reserve() == 0
    assert second.reserve() == 0
    assert first.reserve() > 0.5


def test_wait_sleeps_for_the_reserved_slot(redis_url: str):
    slept: list[float] = []
    two_a_second = limiter(redis_url, 2, sleep=slept.append)

    two_a_second.wait()
    two_a_second.wait()

    assert len(slept) == 1 and 0.4 <= slept[0] <= 0.5


@pytest.mark.parametrize("per_second", [0, -1])
def test_a_rate_must_be_positive(redis_url: str, per_second: float):
    with pytest.raises(ValueError):
        limiter(redis_url, per_second)


def _send_through_limiter(url: str, per_second: float, count: int, out) -> None:  # type: ignore[no-untyped-def]
    """One sending process: take ``count`` slots, note when each one came."""
    shared = RateLimiter.from_url(url, per_second)
    stamps = []
    for _ in range(count):
        shared.wait()
        stamps.append(time.time())
    out.put(stamps)


def _send_from_processes(url: str, per_second: float, processes: int, each: int) -> list[float]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    senders = [
        ctx.Process(target=_send_through_limiter, args=(url, per_second, each, out))
        for _ in range(processes)
    ]
    for p in senders:
        p.start()
    stamps = [s for _ in senders for s in out.get(timeout=60)]
    for p in senders:
        p.join(10)
    return stamps


@pytest.mark.slow
def test_three_processes_together_keep_to_one_rate(tmp_path: Path):
    per_second, processes, each = 20.0, 3, 20
    with private_redis_server(tmp_path / "redis") as server:
        stamps = sorted(_send_from_processes(server.url, per_second, processes, each))

    n = len(stamps)
    achieved = (n - 1) / (stamps[-1] - stamps[0])
    busiest_second = max(
        sum(1 for s in stamps[i:] if s < start + 1.0) for i, start in enumerate(stamps)
    )
    print(
        f"{n} sends from {processes} processes at {achieved:.1f}/s; busiest second {busiest_second}"
    )
    assert n == processes * each
    # Alone, each process would go at 20/s; together they share 20/s. Timing on a busy machine
    # wobbles, so the bounds are loose, but three times the rate would be far outside them.
    assert achieved <= per_second * 1.1
    assert busiest_second <= per_second + 2
    assert achieved >= per_second * 0.6


def test_runtime_throttle_turns_a_missing_redis_into_a_pause_of_our_own_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(
        tmp_path,
        rate_limit_per_second=5.0,
        rate_limit_redis_url=f"redis://127.0.0.1:{_free_port()}/0",
    )
    rt = Runtime(settings)
    monkeypatch.setattr(runtime, "RATE_LIMIT_PATIENCE_SECONDS", 0)  # gone for good

    # The limiter is ours: sending pauses, as for a relay that is down; no attempt is spent.
    with pytest.raises(RelayError, match="rate limiter unavailable"):
        rt.throttle()


def test_runtime_throttle_waits_for_the_limiters_redis_to_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with private_redis_server(tmp_path / "redis") as server:
        rt = Runtime(
            make_settings(tmp_path, rate_limit_per_second=5.0, rate_limit_redis_url=server.url)
        )
        rt.throttle()
        server.stop()  # a crash; it restarts, empty, once the first try has failed
        pauses: list[float] = []

        def pause(seconds: float) -> None:
            pauses.append(seconds)
            server.start()

        monkeypatch.setattr(runtime, "_pause", pause)
        rt.throttle()
        assert len(pauses) == 1


def test_no_limit_means_no_redis(tmp_path: Path):
    rt = Runtime(make_settings(tmp_path))

    assert rt.limiter is None
    rt.throttle()
