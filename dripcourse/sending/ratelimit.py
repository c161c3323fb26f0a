"""A send-rate limit shared by every worker on every machine, kept in Redis.

Celery's own ``rate_limit`` counts per worker, so ten workers would send ten times the quota.
Here each message reserves the next free slot on one Redis key (a generic cell rate algorithm
on the server's clock, so machines with drifting clocks still agree) and waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

# Returns how many microseconds the caller must wait for its slot.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - burst
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return wait
"""


class RateLimiter:
    """At most ``per_second`` messages a second across all processes using ``key``."""

    def __init__(
        self,
        client: redis.Redis,
        per_second: float,
        *,
        key: str = "dripcourse:send-rate",
        burst: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.client = client
        self.key = key
        self.interval_us = int(1_000_000 / per_second)
        # Up to ``burst`` messages may go at once after a quiet spell; then the rate holds.
        self.burst_us = self.interval_us * max(0, burst - 1)
        self._script = client.register_script(_RESERVE)
        self._sleep = sleep

    @classmethod
    def from_url(cls, url: str, per_second: float) -> RateLimiter:
        return cls(redis.Redis.from_url(url, socket_timeout=5), per_second)

    def reserve(self) -> float:
        """Take the next slot; return the seconds to wait before sending in it."""
        return int(self._script(keys=[self.key], args=[self.interval_us, self.burst_us])) / 1e6

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
