"""Inflow control: a new transaction waits while delivery is behind (Postfix's ``in_flow_delay``).

Why: receiving a newsletter costs a fraction of delivering it (a message seen once:
its analysis and render, ``docs/performance.md``), so a sender that offers more than
the relay delivers had every message accepted at once and queued here: the queue,
the accept-to-deliver latency (minutes) and the memory grew for as long as the
sender kept up its rate (``bench/personal_relay.py --soak-seconds 600``: 128 000
personalised messages offered at 213 a second, delivered at ~160; p99
accept-to-deliver 125 s, RSS +250 MB).  An MTA in front keeps mail in its own
queue and retries it; it is the place for a backlog, not the hop.  So, as Postfix's
cleanup does with ``in_flow_delay``, each new transaction (``MAIL FROM``) of a worker
whose delivery is behind waits, up to ``delay`` seconds, for a delivery worker to
take a message of the backlog; then it goes on either way: mail is slowed, never
refused.

*Behind* means: at least ``limit`` messages are due and wait for a delivery worker
(the scheduler's ready queue: new messages and retries that came due; deferred ones
are not counted, so an upstream outage slows nothing until the retries come due).
Each message a delivery worker takes lets the longest waiting transaction go on
(first come, first served: a transaction that arrives while others wait queues
behind them).  A client's connection is thereby slowed to the rate its worker
delivers at: with connections kept open (an MTA's cached ones), a worker that got
more of them than the other slows its own and their sender sends more through the
other worker's, instead of queueing the difference.

    >>> import asyncio
    >>> backlog = [5]
    >>> gate = InFlow(limit=5, delay=10.0, backlog=lambda: backlog[0])
    >>> async def demo() -> bool:
    ...     waiting = asyncio.ensure_future(gate.admit())
    ...     await asyncio.sleep(0)
    ...     backlog[0] -= 1  # a delivery worker took a message...
    ...     gate.taken()     # ... and says so: the transaction goes on
    ...     return await waiting > 0 and gate.waiting == 0
    >>> asyncio.run(demo())
    True
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from beacon_proxy.metrics import SMTP_IN_FLOW, SMTP_IN_FLOW_SECONDS

__all__ = ["InFlow"]


class InFlow:
    """The gate (see the module docstring): ``admit()`` before a new transaction,
    ``taken()`` each time a delivery worker takes a message.

    ``limit``: the backlog (``backlog()``, messages due and not yet taken) from which
    new transactions wait; ``delay``: the longest wait in seconds (0: never wait).
    One event loop's; not thread-safe.
    """

    def __init__(self, *, limit: int, delay: float, backlog: Callable[[], int]) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if not delay >= 0:
            raise ValueError(f"delay must be 0 or more seconds, not {delay!r}")
        self.limit = limit
        self.delay = delay
        self._backlog = backlog
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waiting = 0  # admit() calls waiting now (cancelled tickets stay in the deque)
        self._closed = False  # the relay stops: nothing waits any more
        #: Transactions that waited, and of them those let go at ``delay`` (for metrics).
        self.delayed = 0
        self.timed_out = 0

    @property
    def waiting(self) -> int:
        """Transactions waiting now."""
        return self._waiting

    def behind(self) -> bool:
        """Whether a new transaction would wait now."""
        return self.delay > 0 and not self._closed and (
            self._waiting > 0 or self._backlog() >= self.limit)

    async def admit(self) -> float:
        """Wait while delivery is behind, at most ``delay`` seconds; the seconds waited."""
        if not self.behind():
            return 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        ticket: asyncio.Future[None] = loop.create_future()
        self._waiters.append(ticket)
        self._waiting += 1
        self.delayed += 1
        outcome = "caught_up"
        try:
            async with asyncio.timeout(self.delay):
                await ticket
        except TimeoutError:
            self.timed_out += 1
            outcome = "delay_passed"
        finally:
            self._waiting -= 1
            if not ticket.done():  # timed out or cancelled: skipped when its turn comes
                ticket.cancel()
            self._drop_done()
        waited = loop.time() - start
        SMTP_IN_FLOW.labels(outcome).inc()
        SMTP_IN_FLOW_SECONDS.inc(waited)
        return waited

    def taken(self) -> None:
        """A delivery worker took a message: the longest waiting transactions go on, as
        many as the backlog is below the limit."""
        room = self.limit - self._backlog()
        while room > 0:
            self._drop_done()
            if not self._waiters:
                return
            self._waiters.popleft().set_result(None)
            room -= 1

    def close(self) -> None:
        """The relay stops: every waiting transaction goes on, and no new one waits (the
        transactions in progress end within the shutdown's timeout, not after a wait)."""
        self._closed = True
        while self._waiters:
            ticket = self._waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)

    def _drop_done(self) -> None:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
