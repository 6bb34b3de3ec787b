"""The open queue records off the request path, bounded; the rate limit is bounded too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from beacon_proxy.consent.model import InvalidValue, OpenInput, StoreError, utcnow
from beacon_proxy.metrics import OPENS
from beacon_proxy.tokens import Claims, Purpose
from beacon_proxy.web.opens import Open, OpenQueue, RateLimit


class FakeStore:
    """Records calls; ``gate`` holds every write until set; ``consents`` decides."""

    def __init__(self, consents: bool = True, fail: bool = False) -> None:
        self.calls: list[tuple[str, OpenInput]] = []
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.consents, self.fail = consents, fail

    async def record_opens(self, opens: Sequence[OpenInput]) -> list[bool]:
        await self.gate.wait()
        self.batches.append(len(opens))
        if self.fail:
            raise StoreError("database is locked")
        if any(o.list_id == "bad list" for o in opens):
            raise InvalidValue("list", "not a list id")
        self.calls.extend((str(o.address), o) for o in opens)
        return [self.consents] * len(opens)

    async def record_open(self, address: Any, *, list_id: str | None = None,
                          message_id: str | None = None, ua_class: str | None = None,
                          machine: bool = False, at: datetime | None = None) -> bool:
        raise AssertionError("the queue records in batches")


def _item(n: int = 0) -> Open:
    return Open(Claims(Purpose.OPEN, f"u{n}@example.org", "l.example.org", f"Q{n}"),
                "browser", False, utcnow())


def _count(result: str) -> float:
    return float(OPENS.labels(result)._value.get())


async def test_records_and_calls_back_only_recorded_opens() -> None:
    for consents in (True, False):
        store, seen = FakeStore(consents), list[Claims]()
        q = OpenQueue(store, on_open=seen.append)
        await q.start()
        assert q.offer(_item(1))
        await asyncio.wait_for(q.drain(), 30)
        await q.stop()
        assert store.calls[0][0] == "u1@example.org"
        assert store.calls[0][1].message_id == "Q1"
        assert [c.recipient for c in seen] == (["u1@example.org"] if consents else [])


async def test_full_queue_drops_and_counts_without_waiting() -> None:
    store = FakeStore()
    store.gate.clear()  # the store is stuck
    q = OpenQueue(store, max_pending=3, workers=1, batch=1)
    await q.start()
    before = _count("dropped")
    results = [q.offer(_item(i)) for i in range(10)]
    # one is taken by the worker (waiting on the store), three wait in the queue
    await asyncio.sleep(0)
    results += [q.offer(_item(i)) for i in range(10, 12)]
    assert results.count(True) <= 4 and _count("dropped") - before == results.count(False)
    store.gate.set()
    await q.stop()
    assert len(store.calls) == results.count(True)


async def test_stop_is_bounded_when_the_store_hangs() -> None:
    store = FakeStore()
    store.gate.clear()
    q = OpenQueue(store, workers=1, batch=1)
    await q.start()
    for i in range(5):
        q.offer(_item(i))
    before = _count("dropped")
    await q.stop(timeout=0.05)
    assert q.pending() == 0
    assert _count("dropped") - before == 4  # one was in the worker's hands


async def test_store_errors_are_counted_and_the_worker_goes_on() -> None:
    store = FakeStore(fail=True)
    q = OpenQueue(store, workers=1)
    await q.start()
    before = _count("error")
    for i in range(3):
        q.offer(_item(i))
    await asyncio.wait_for(q.drain(), 30)
    assert _count("error") - before == 3
    store.fail = False
    q.offer(_item(9))
    await asyncio.wait_for(q.drain(), 30)
    await q.stop()
    assert len(store.calls) == 1


def test_rate_limit_memory_is_bounded() -> None:
    now = [0.0]
    limit = RateLimit(capacity=100, clock=lambda: now[0])
    for i in range(10_000):
        assert limit.allow(i.to_bytes(4, "big"))
    assert len(limit) == 100
    assert not limit.allow((9_999).to_bytes(4, "big"))  # recent: remembered
    assert limit.allow((0).to_bytes(4, "big"))  # evicted long ago: allowed again


def test_rate_limit_window() -> None:
    now = [0.0]
    limit = RateLimit(min_interval=30, per_window=2, window=3600, clock=lambda: now[0])
    hits = []
    for _ in range(200):  # one try a minute for 200 minutes
        hits.append(limit.allow(b"t"))
        now[0] += 60
    assert sum(hits) == 8  # two an hour (over 3 h 20 min: four windows)
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(per_window=0)


async def test_writes_are_batched_and_a_bad_claim_spoils_only_itself() -> None:
    store = FakeStore()
    store.gate.clear()
    q = OpenQueue(store, workers=1, batch=10)
    await q.start()
    for i in range(25):
        q.offer(_item(i))
    bad = _item(99)
    q.offer(Open(Claims(Purpose.OPEN, "x@example.org", "bad list", "Q"), "browser", False,
                 bad.at))
    before = _count("error")
    store.gate.set()
    await asyncio.wait_for(q.drain(), 30)
    await q.stop()
    assert store.batches == [10, 10, 6] + [1] * 6  # the spoilt batch again, one by one
    assert len(store.calls) == 25
    assert _count("error") - before == 1


async def test_a_clean_stop_records_every_queued_open_in_batches() -> None:
    """Stopping writes out what is queued, a batch per transaction: no open lost."""
    store = FakeStore()
    store.gate.clear()  # everything queues up behind the first write
    q = OpenQueue(store, workers=1, batch=50, linger=0)
    await q.start()
    before = _count("dropped")
    assert all(q.offer(_item(i)) for i in range(120))
    store.gate.set()
    await q.stop()
    assert sorted(a for a, _ in store.calls) == sorted(f"u{i}@example.org" for i in range(120))
    assert sum(store.batches) == 120 and max(store.batches) == 50
    assert _count("dropped") == before
