"""Per-client limits: whose connections count together, and AUTH failures per address.

In the spirit of Postfix's ``anvil``: the server remembers, per client
address, how many AUTH attempts failed in the last ``window`` seconds.

* Each failure makes the next AUTH from that address wait before it is even
  checked: half a second after one failure, doubling with each further one,
  at most ``delay_max`` (:meth:`AuthLimiter.delay`).  The wait comes before
  the answer, whatever the answer, so a client cannot hang up early on a slow
  reply to tell a wrong password from a right one.
* Once ``limit`` failures fall within the window, AUTH from that address is
  refused without a check (:meth:`AuthLimiter.blocked`) until the oldest of
  them leaves the window: at most ``limit`` guesses per ``window`` per address.

Memory is bounded: each address keeps at most ``limit`` times, an address
whose newest failure left the window is forgotten, and past ``max_clients``
addresses the one that failed least recently goes first.

Addresses are grouped by :func:`~beacon_proxy.clientkey.client_key`: an IPv4
address on its own, an IPv6 address by its /64.

The clock is injectable (:class:`Clock`), so tests run on a fake one:

    >>> clock = FakeClock()
    >>> limiter = AuthLimiter(window=60, limit=3, delay_max=1.5, clock=clock)
    >>> [limiter.record_failure("192.0.2.7") for _ in range(2)], limiter.delay("192.0.2.7")
    ([1, 2], 1.0)
    >>> limiter.record_failure("192.0.2.7"), limiter.blocked("192.0.2.7")
    (3, True)
    >>> clock.now_value += 61
    >>> limiter.blocked("192.0.2.7"), limiter.delay("192.0.2.7"), len(limiter)
    (False, 0.0, 0)
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Protocol

from beacon_proxy.clientkey import client_key

__all__ = ["AuthLimiter", "Clock", "FakeClock", "MonotonicClock"]

_FIRST_DELAY = 0.5  # seconds after one failure; doubles with each further one
_MAX_CLIENTS = 10_000  # addresses remembered at once (each holds at most `limit` floats)


class Clock(Protocol):
    """Monotonic time and sleeping: the real ones, or a test's."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to, or when slept on (by the time asked for)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now_value = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.now_value

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_value += seconds


class AuthLimiter:
    """Failed AUTH attempts per client address in a sliding window (see the module)."""

    def __init__(self, *, window: float, limit: int, delay_max: float, clock: Clock,
                 max_clients: int = _MAX_CLIENTS) -> None:
        self.window = window
        self.limit = limit
        self.delay_max = delay_max
        self.clock = clock
        self.max_clients = max_clients
        # key -> failure times, oldest first; the dict is ordered by newest failure.
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._failures)

    def failures(self, ip: str) -> int:
        """Failures from ``ip``'s group within the window (at most ``limit``)."""
        cutoff = self._expire()
        times = self._failures.get(client_key(ip))
        if times is None:
            return 0
        while times and times[0] <= cutoff:
            times.popleft()
        return len(times)

    def blocked(self, ip: str) -> bool:
        """True while ``limit`` failures from ``ip``'s group are within the window."""
        return self.failures(ip) >= self.limit

    def delay(self, ip: str) -> float:
        """Seconds to wait before answering AUTH from ``ip``: 0 without failures."""
        count = self.failures(ip)
        if count == 0 or self.delay_max <= 0:
            return 0.0
        return min(self.delay_max, _FIRST_DELAY * 2.0 ** min(count - 1, 32))

    def record_failure(self, ip: str) -> int:
        """Count one failure; returns the failures now within the window."""
        key = client_key(ip)
        count = self.failures(ip)
        times = self._failures.pop(key, None)
        if times is None:
            times = collections.deque(maxlen=self.limit)
        times.append(self.clock.now())
        self._failures[key] = times  # now the most recent
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        return min(count + 1, self.limit)

    def _expire(self) -> float:
        """Forget addresses whose newest failure left the window; returns the cutoff."""
        cutoff = self.clock.now() - self.window
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times and times[-1] > cutoff:
                break
            del self._failures[key]
        return cutoff
