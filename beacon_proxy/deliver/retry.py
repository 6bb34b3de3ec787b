"""Retry timing: exponential backoff with jitter, within configured bounds.

The n-th retry waits ``retry_min * 2**(n-1)`` seconds, capped at
``retry_max``, multiplied by a random factor in [0.8, 1.2] and clamped back
into ``[retry_min, retry_max]`` so a burst of failures does not retry in
lockstep.  With Postfix's defaults (300 s, 4000 s) that is about 5, 10, 20,
40, 67, 67, ... minutes.  No attempt is planned past the queue lifetime: the
last one happens when the lifetime runs out, and what still fails then
bounces.

    >>> policy = RetryPolicy(retry_min=300, retry_max=4000, queue_lifetime=432000)
    >>> 240 <= policy.delay(1) <= 360, policy.delay(10) <= 4000
    (True, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    retry_min: float
    retry_max: float
    queue_lifetime: float
    jitter: float = 0.2

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        base = min(self.retry_max, self.retry_min * 2.0 ** min(max(attempts - 1, 0), 40))
        factor = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.retry_max, max(self.retry_min, base * factor))

    def expires_at(self, received_at: float) -> float:
        return received_at + self.queue_lifetime

    def next_attempt(self, attempts: int, received_at: float, now: float) -> float:
        return min(now + self.delay(attempts), max(now, self.expires_at(received_at)))

    def expired(self, received_at: float, now: float) -> bool:
        return now >= self.expires_at(received_at)
