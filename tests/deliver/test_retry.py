from __future__ import annotations

import random

from beacon_proxy.deliver.retry import RetryPolicy

POSTFIX = RetryPolicy(retry_min=300, retry_max=4000, queue_lifetime=5 * 86400)


def test_backoff_grows_and_stays_within_bounds() -> None:
    rng = random.Random(1)
    delays = [POSTFIX.delay(n, rng) for n in range(1, 30)]
    assert all(300 <= d <= 4000 for d in delays)
    assert 240 * 1.0 <= POSTFIX.delay(1, rng) <= 360
    assert POSTFIX.delay(2, rng) >= 480
    assert all(d >= 3200 for d in delays[5:])


def test_jitter_spreads_retries() -> None:
    rng = random.Random(2)
    assert len({round(POSTFIX.delay(3, rng), 3) for _ in range(50)}) > 40


def test_no_attempt_is_planned_past_the_lifetime() -> None:
    policy = RetryPolicy(retry_min=10, retry_max=100, queue_lifetime=30)
    assert policy.next_attempt(5, received_at=1000, now=1025) == 1030
    assert policy.expired(1000, 1030)
    assert not policy.expired(1000, 1029.9)
    assert policy.next_attempt(1, received_at=1000, now=1001) <= 1013
