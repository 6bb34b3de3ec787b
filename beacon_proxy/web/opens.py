"""Recording opens off the request path: a per-token rate limit and a bounded queue.

The open pixel must answer at once, whatever the database is doing: a mail
client that waits on a pixel shows a half-rendered message, and a slow store
must not pile up connections.  So ``GET /o/<token>`` only offers the open to
an :class:`OpenQueue` (``put_nowait``) and answers; a few workers write the
queued opens to the store in batches (``record_opens``: a worker takes an
open, waits ``linger`` (50 ms) for more to queue up, and writes up to
``batch`` of them in one transaction; consent is still checked per open).
At 500 opens/s that is about 20 commits a second instead of 500, which
halves the server's CPU per open and lets the writes keep up when the store
is slow; an open reaches the store at most about ``linger`` later.  When the
queue is full the open is dropped and counted
(``beacon_proxy_opens_total{result="dropped"}``) and a warning is logged at
most once a minute; losing an open statistic is better than stalling mail.

Image proxies and scanners, and people who reopen a message, hit one token
many times.  :class:`RateLimit` records at most one open per token per
``min_interval`` and ``per_window`` per ``window``; it remembers at most
``capacity`` tokens (least recently used first out), so its memory is bounded
whatever the traffic.  Only genuine tokens reach it: forged ones cannot evict.

    >>> now = [0.0]
    >>> limit = RateLimit(min_interval=30, per_window=2, window=3600, clock=lambda: now[0])
    >>> [limit.allow(b"t"), limit.allow(b"t")]
    [True, False]
    >>> now[0] = 31.0
    >>> [limit.allow(b"t"), limit.allow(b"other")]
    [True, True]
    >>> now[0] = 62.0
    >>> limit.allow(b"t")  # two in this hour already
    False
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from beacon_proxy.consent.model import OpenInput, StoreError
from beacon_proxy.consent.store import OpenRecorder
from beacon_proxy.log import event
from beacon_proxy.metrics import OPENS
from beacon_proxy.tokens import Claims

__all__ = ["Open", "OpenQueue", "RateLimit"]

log = logging.getLogger(__name__)


class RateLimit:
    """At most one allowed hit per key per ``min_interval``, ``per_window`` per ``window``."""

    def __init__(self, *, min_interval: float = 30.0, per_window: int = 5,
                 window: float = 3600.0, capacity: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min_interval < 0 or per_window < 1 or window <= 0 or capacity < 1:
            raise ValueError("rate limit: intervals must be positive, counts at least 1")
        self.min_interval, self.per_window, self.window = min_interval, per_window, window
        self.capacity = capacity
        self._clock = clock
        # key -> (time of the last allowed hit, start of its window, hits allowed in it)
        self._seen: OrderedDict[bytes, tuple[float, float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def allow(self, key: bytes) -> bool:
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = (now, now, 1)
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True
        self._seen.move_to_end(key)
        last, start, count = seen
        if now - last < self.min_interval:
            return False
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.per_window:
            return False
        self._seen[key] = (now, start, count + 1)
        return True


@dataclass(frozen=True, slots=True)
class Open:
    """One pixel fetch of a genuine open token, waiting to be recorded."""

    claims: Claims
    ua_class: str
    machine: bool
    at: datetime


class _Throttled:
    """Log a recurring warning at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


class OpenQueue:
    """Record offered opens in the background; ``on_open`` after each one recorded."""

    def __init__(self, store: OpenRecorder, *, on_open: Callable[[Claims], None] | None = None,
                 max_pending: int = 10_000, workers: int = 2, batch: int = 200,
                 linger: float = 0.05) -> None:
        if max_pending < 1 or workers < 1 or batch < 1 or linger < 0:
            raise ValueError("max_pending, workers and batch must be at least 1, linger >= 0")
        self._batch = batch
        self._linger = linger
        self._store = store
        self._on_open = on_open
        self._queue: asyncio.Queue[Open] = asyncio.Queue(max_pending)
        self._n_workers = workers
        self._workers: list[asyncio.Task[None]] = []
        self._drop_log = _Throttled()
        self._error_log = _Throttled()

    def pending(self) -> int:
        return self._queue.qsize()

    def offer(self, item: Open) -> bool:
        """Queue an open without waiting; ``False`` (dropped, counted) when full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            OPENS.labels("dropped").inc()
            if self._drop_log.due():
                event("opens_dropped", logging.WARNING, pending=self._queue.qsize(),
                      message="the open recording queue is full: opens are dropped "
                      "(the store is slower than the pixel traffic)")
            return False
        return True

    async def drain(self) -> None:
        """Wait until every open queued so far has been recorded (or failed)."""
        await self._queue.join()

    async def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"opens-{i}")
                             for i in range(self._n_workers)]

    async def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued (within ``timeout``), then stop the workers."""
        if not self._workers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.drain()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        lost = self._queue.qsize()
        if lost:
            OPENS.labels("dropped").inc(lost)
            event("opens_dropped", logging.WARNING, pending=lost,
                  message="stopped before these opens were recorded")
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger > 0 and self._batch > 1:
                await asyncio.sleep(self._linger)  # let a batch gather: one commit for all
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._record(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _record(self, batch: list[Open]) -> None:
        inputs = [OpenInput(o.claims.recipient, o.claims.list_id, o.claims.queue_id or None,
                            o.ua_class, o.machine, o.at) for o in batch]
        done: list[bool | None]
        try:
            done = list(await self._store.record_opens(inputs))
        except ValueError:  # a claim the store refuses spoils the batch: one by one
            done = [await self._one(i) for i in inputs]
        except StoreError as exc:
            done = [None] * len(batch)
            if self._error_log.due():
                event("open_not_recorded", logging.WARNING, error=str(exc)[:300],
                      opens=len(batch))
        for item, recorded in zip(batch, done, strict=True):
            if recorded is None:
                OPENS.labels("error").inc()
                continue
            OPENS.labels("recorded" if recorded else "not_consenting").inc()
            if recorded and self._on_open is not None:
                try:
                    self._on_open(item.claims)
                except Exception:  # a callback's bug must not stop recording
                    log.exception("on_open callback failed")

    async def _one(self, item: OpenInput) -> bool | None:
        try:
            return (await self._store.record_opens([item]))[0]
        except (StoreError, ValueError) as exc:
            if self._error_log.due():
                # A refused claim's message may name the address: only the kind is logged.
                detail = str(exc)[:300] if isinstance(exc, StoreError) else type(exc).__name__
                event("open_not_recorded", logging.WARNING, error=detail)
            return None
