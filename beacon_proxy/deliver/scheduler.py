"""The queue manager: moves spooled messages through delivery attempts.

One timer task keeps deferred messages in a heap ordered by their next
attempt and hands due ones to a ready queue; ``concurrency`` workers take
messages from it, each with its own courier (so an SMTP courier reuses its
connection across messages; a worker with nothing to do for ``idle_timeout``
seconds closes it, and the next message opens a new one).  For every pending
recipient a worker looks up the policy, renders that recipient's copy through
the rewrite step and hands it to the courier; the outcome is journaled at once:

* delivered -> final, never sent again (also after a crash);
* temporary -> retried with backoff until ``queue_lifetime`` runs out;
* permanent, or expired -> a DSN to the envelope sender is queued *first*,
  then the recipient is journaled ``bounced`` (a crash in between means a
  duplicate DSN, never a lost one).  Bounces to the null sender are dropped
  and logged, as no one can receive them;
* held (the rewrite step may not send this recipient a copy now, see
  :mod:`~beacon_proxy.rewrite.copies`) -> deferred like a temporary failure,
  so it bounces at the queue lifetime, and logged as ``held``;
* waiting (a held copy with a :class:`~beacon_proxy.rewrite.step.Wait`: the
  first copy of a new campaign, :mod:`~beacon_proxy.rewrite.diffing`) ->
  deferred until the wait ends or :meth:`Scheduler.wake` names its key, and
  logged as ``waiting``.

Consent is never guessed: when the lookup fails (the store is down), every
pending recipient is deferred, and the attempt counts, so a long outage is
retried with the backoff of a 4xx, not every ``retry_min`` for every queued
message.  The first lookup that succeeds again (a new message's, or one that
came due) makes the messages it deferred due at once -- at most once per
``retry_min``, so a store that flaps does not bring the whole queue back on
every answer -- and logs ``consent_store_back``; the failure logs
``consent_store_down`` once.

An attempt that raises (a bug, a spool error) is counted and journaled as a
failure and retried with the same backoff; after ``max_failures`` failed
attempts, or past the queue lifetime, the message is moved to ``corrupt/``
and its pending recipients are bounced: no message loops forever.

A message leaves the spool when every recipient is final.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from beacon_proxy.consent.policy import ConsentLookup, Decision, Policy, policy_of
from beacon_proxy.deliver.courier import Courier, CourierFactory, Outcome, Result
from beacon_proxy.deliver.dsn import Failure, build_dsn, needs_bounce
from beacon_proxy.deliver.inflow import InFlow
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.headerfacts import message_id
from beacon_proxy.log import event, listened
from beacon_proxy.metrics import (
    DELIVERIES,
    DELIVERY_SECONDS,
    MESSAGES_QUARANTINED,
    QUEUE_MESSAGES,
    SMTP_IN_FLOW_WAITING,
    child,
)
from beacon_proxy.rewrite.step import Copy, PreparedMessage, RewriteStep, Wait
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import QueueEntry, Spool, SpoolCorruptError

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

_THREAD_RENDER_BYTES = 1 << 20  # render big messages off the event loop
_CACHE_BYTES = 64 << 20  # fresh messages kept in memory for their first attempt
_CONTROL_INTERVAL = 1.0  # seconds between looks at the operators' requests
MAX_FAILURES = 5  # failed (raising) attempts before a message is set aside
#: Messages due per delivery worker (``concurrency``) from which a new SMTP transaction
#: waits (``[smtp] in_flow_delay``): 40 for the default 20 workers, a fraction of a
#: second of delivery at the rates bench/relay.py and bench/personal_relay.py measure.
INFLOW_BACKLOG = 2
#: Recipients to send per lane: a message opens one more connection (of the spare
#: ``lanes``) for each this many copies it has to send, the first at twice this.
LANE_RECIPIENTS = 32
_WOKEN_KEYS = 10_000  # wait keys whose last wake is remembered
_STORE_BACK = "consent store back"  # the wait key of messages a failed lookup deferred


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _alone() -> bool:
    """No other lane to give a copy to (one connection: its failure is the site's)."""
    return False


def _site_failure(result: Result) -> bool:
    """A failure of the destination, not of this recipient: defer the rest too."""
    return result.outcome is Outcome.TEMPORARY and (
        result.session or result.code == 421 or result.status.startswith("4.4.")
    )


@dataclass(slots=True)
class _Pending:
    """A recipient's failure waiting for the end of the attempt."""

    index: int
    result: Result


class Scheduler:
    def __init__(
        self,
        spool: Spool,
        couriers: CourierFactory,
        rewrite: RewriteStep,
        consent: ConsentLookup,
        retry: RetryPolicy,
        *,
        concurrency: int,
        hostname: str,
        max_failures: int = MAX_FAILURES,
        idle_timeout: float | None = None,
        lanes: int = 0,
        in_flow_delay: float = 0.0,
    ) -> None:
        self.spool = spool
        self.couriers = couriers
        self.rewrite = rewrite
        self.consent = consent
        self.retry = retry
        self.concurrency = concurrency
        self.hostname = hostname
        self.max_failures = max_failures
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        # How long a worker keeps its courier's connection with nothing to send (None:
        # until the upstream closes it).
        self.idle_timeout = idle_timeout
        if lanes < 0:
            raise ValueError("lanes must not be negative")
        # Connections a message with many recipients may open besides its worker's, for
        # every message together (``[delivery] lanes``); those not in use now.
        self._spare = lanes
        self._heap: list[tuple[float, int, QueueEntry]] = []
        self._seq = itertools.count()
        self._ready: asyncio.Queue[QueueEntry] = asyncio.Queue()
        # New transactions wait while INFLOW_BACKLOG messages a delivery worker wait
        # for the workers (``[smtp] in_flow_delay``, deliver/inflow.py).
        self.inflow = InFlow(limit=INFLOW_BACKLOG * concurrency, delay=in_flow_delay,
                             backlog=self._ready.qsize)
        self._wake = asyncio.Event()
        self._entries: dict[str, QueueEntry] = {}
        self._data_cache: dict[str, bytes] = {}
        self._cache_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Messages whose copies wait, by wait key, and the keys of each message.
        self._waiting: dict[str, set[str]] = {}
        self._waits_of: dict[str, set[str]] = {}
        # When each key was last woken (bounded): a wake that came while the waiting
        # message's attempt was still running is not lost.
        self._woken: collections.OrderedDict[str, float] = collections.OrderedDict()
        # Messages in an attempt now, and those made due again meanwhile (a wake or a
        # retry request while the attempt journals its end): never two attempts at once.
        self._attempting: set[str] = set()
        self._again: set[str] = set()
        # The consent store's outages (the messages a failed lookup deferred wait for
        # the key _STORE_BACK, woken by the first lookup that succeeds again): since
        # when it fails (None: it answers), and the earliest next wake.
        self._store_failures = 0  # lookups that failed, ever
        self._store_down_since: float | None = None
        self._store_next_wake = 0.0

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> int:
        """Recover the spool and start delivering.  Returns the recovered count."""
        entries = await self.spool.recover()
        now = time.time()
        for entry in entries:
            self._entries[entry.queue_id] = entry
            if entry.state == "active" or entry.next_attempt <= now:
                self._ready.put_nowait(entry)
            else:
                self._push(entry)
        # Computed when /metrics is scraped, not on every change.
        QUEUE_MESSAGES.labels("deferred").set_function(self._deferred)
        QUEUE_MESSAGES.labels("active").set_function(
            lambda: len(self._entries) - self._deferred())
        SMTP_IN_FLOW_WAITING.set_function(lambda: self.inflow.waiting)
        self._tasks.append(asyncio.create_task(self._timer(), name="scheduler-timer"))
        self._tasks.append(asyncio.create_task(self._control(), name="scheduler-control"))
        for n in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"delivery-{n}"))
        return len(entries)

    async def stop(self, timeout: float) -> None:
        """Stop taking messages; let attempts in progress end within ``timeout``."""
        self._stopping = True
        self.inflow.close()  # (Relay.stop closed it before the SMTP side stopped)
        busy = list(self._busy)
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- intake -------------------------------------------------------------

    async def enqueue(self, envelope: Envelope, data: bytes) -> None:
        """Spool a message durably, then schedule it.  The SMTP side awaits this."""
        await self.spool.put(envelope, data)
        entry = QueueEntry.new(envelope)
        self._entries[entry.queue_id] = entry
        if self._cache_bytes + len(data) <= _CACHE_BYTES:
            self._data_cache[entry.queue_id] = data  # saves re-reading a fresh message
            self._cache_bytes += len(data)
        self._ready.put_nowait(entry)

    def queue_size(self) -> int:
        return len(self._entries)

    # -- scheduling -----------------------------------------------------------

    def _push(self, entry: QueueEntry) -> None:
        heapq.heappush(self._heap, (entry.next_attempt, next(self._seq), entry))
        self._wake.set()

    def _deferred(self) -> int:
        return sum(1 for e in self._entries.values() if e.state == "deferred")

    async def _timer(self) -> None:
        while True:
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                due, _, entry = heapq.heappop(self._heap)
                if self._entries.get(entry.queue_id) is not entry or due != entry.next_attempt:
                    continue  # deleted, or rescheduled (a newer heap item stands for it)
                self._ready.put_nowait(entry)
            self._wake.clear()
            wait = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _control(self) -> None:
        """Carry out ``beacon-proxy queue retry|delete`` requests."""
        while True:
            for action, queue_id in await self.spool.take_requests():
                if action == "delete":
                    entry = self._entries.pop(queue_id, None)
                    self._forget_waits(queue_id)
                    if entry is not None:
                        entry.deleted = True  # a worker on it stops there
                        event("removed", queue_id=queue_id, reason="deleted by an operator")
                else:
                    self.retry_now(None if queue_id == "ALL" else queue_id)
            await asyncio.sleep(_CONTROL_INTERVAL)

    def retry_now(self, queue_id: str | None) -> int:
        """Make deferred messages (one, or all) due now; returns how many."""
        now = time.time()
        if queue_id is not None:
            entry = self._entries.get(queue_id)
            return int(entry is not None and self._due_now(entry, now))
        return sum(self._due_now(entry, now) for entry in list(self._entries.values()))

    def _due_now(self, entry: QueueEntry, now: float) -> bool:
        if entry.queue_id in self._attempting:
            # Once more when that attempt ends (it plans the next one itself): pushed
            # now as well, the attempt's own push would queue it a second time, for
            # an attempt right after the one asked for.
            self._again.add(entry.queue_id)
            return True
        if entry.next_attempt <= now:
            return False
        entry.next_attempt = now
        self._push(entry)
        return True

    def wake(self, key: str) -> int:
        """Make the messages whose copies wait for ``key`` due now; returns how many."""
        self._woken[key] = time.time()
        self._woken.move_to_end(key)
        while len(self._woken) > _WOKEN_KEYS:
            self._woken.popitem(last=False)
        return sum(self.retry_now(queue_id) for queue_id in self._waiting.pop(key, ()))

    def waiting_keys(self) -> list[str]:
        """The wait keys some message's copies wait for now (see :meth:`wake`); not the
        consent store's own (it is woken by a lookup, not by a campaign)."""
        return [key for key in self._waiting if key != _STORE_BACK]

    def _forget_waits(self, queue_id: str) -> None:
        for key in self._waits_of.pop(queue_id, ()):
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.discard(queue_id)
                if not waiting:
                    del self._waiting[key]

    def _note_waits(self, entry: QueueEntry, waits: Sequence[Wait]) -> None:
        """Defer ``entry`` until its waits end or one of their keys is woken."""
        entry.next_attempt = min([entry.next_attempt, *(w.until for w in waits)])
        for wait in waits:
            self._waiting.setdefault(wait.key, set()).add(entry.queue_id)
            self._waits_of.setdefault(entry.queue_id, set()).add(wait.key)

    def _stop_requested(self) -> bool:
        return self._stopping

    async def _worker(self) -> None:
        courier = self.couriers()
        connected = False  # the courier may hold a connection
        try:
            # Checked on every turn, not only after a get: stop() sets it before it
            # cancels, and on Python 3.11 a cancellation that meets a reply can be
            # lost inside a library's ``asyncio.wait_for`` (aiosmtplib's QUIT, when
            # the idle close ends as stop() comes), leaving this loop to wait on the
            # queue for good and stop() with it.  (A call: the attribute, narrowed by
            # the loop's test, would hide the check after the get from mypy.)
            while not self._stop_requested():
                if connected and self.idle_timeout is not None and self._ready.empty():
                    try:
                        async with asyncio.timeout(self.idle_timeout):
                            entry = await self._ready.get()
                        self.inflow.taken()
                    except TimeoutError:  # nothing to send for a while: QUIT
                        log.debug("delivery worker idle for %ss; closing its connection",
                                  self.idle_timeout)
                        await courier.close()
                        connected = False
                        continue
                else:
                    entry = await self._ready.get()
                    self.inflow.taken()
                if self._stopping:
                    break
                if self._entries.get(entry.queue_id) is not entry:
                    continue  # deleted by an operator while it waited
                if entry.queue_id in self._attempting:
                    # Made due again while another worker attempts it (its files move
                    # meanwhile): once more when that attempt ends, never at once.
                    self._again.add(entry.queue_id)
                    continue
                task = asyncio.current_task()
                assert task is not None
                self._busy.add(task)
                self._attempting.add(entry.queue_id)
                connected = True
                try:
                    await self._attempt(entry, courier)
                except Exception as exc:
                    log.exception("delivery attempt for %s failed", entry.queue_id)
                    await self._failed_attempt(entry, exc)
                finally:
                    self._attempting.discard(entry.queue_id)
                    self._again.discard(entry.queue_id)
                    self._busy.discard(task)
        finally:
            with contextlib.suppress(Exception):
                await courier.close()

    # -- one attempt ----------------------------------------------------------

    async def _load(self, entry: QueueEntry) -> bytes | None:
        data = self._data_cache.pop(entry.queue_id, None)
        if data is not None:
            self._cache_bytes -= len(data)
            return data
        try:
            return await self.spool.read_data(entry)
        except FileNotFoundError:
            event("removed", queue_id=entry.queue_id, reason="queue file gone")
        except SpoolCorruptError as exc:
            await self.spool.quarantine(entry.queue_id, str(exc))
        self._entries.pop(entry.queue_id, None)
        return None

    @staticmethod
    async def _render(prepared: PreparedMessage, rcpt: str, policy: Policy) -> Copy:
        if prepared.size > _THREAD_RENDER_BYTES:
            return await asyncio.to_thread(prepared.render, rcpt, policy)
        return prepared.render(rcpt, policy)

    async def _failed_attempt(self, entry: QueueEntry, exc: BaseException) -> None:
        """An attempt raised: count it; retry with backoff, or set the message aside."""
        if self._entries.get(entry.queue_id) is not entry:
            return  # deleted meanwhile
        entry.failures += 1
        now = time.time()
        env = entry.envelope
        expired = self.retry.expired(env.received_at, now)
        if entry.failures < self.max_failures and not expired:
            entry.next_attempt = self.retry.next_attempt(entry.failures, env.received_at, now)
            entry.state = "deferred"
            try:
                await self.spool.record_failure(entry, repr(exc)[:300])
            except Exception:
                log.exception("could not journal the failure of %s", entry.queue_id)
            if entry.queue_id in self._again and not self._stopping:
                entry.next_attempt = now  # a retry asked for while the attempt ran
            event("attempt_failed", logging.ERROR, queue_id=env.queue_id,
                  failures=entry.failures, error=repr(exc)[:300],
                  next_attempt=_iso(entry.next_attempt))
            self._push(entry)
            return
        reason = "queue lifetime expired" if expired else f"{entry.failures} failed attempts"
        MESSAGES_QUARANTINED.labels("expired" if expired else "failures").inc()
        result = Result(Outcome.PERMANENT, 554,
                        f"554 5.3.0 message could not be processed ({reason}): "
                        f"{repr(exc)[:200]}", "5.3.0", "beacon-proxy")
        try:
            data = await self.spool.read_data(entry)
        except Exception:
            data = b""
        pending = [_Pending(i, result) for i in entry.pending()]
        try:
            if pending:
                await self._bounce(entry, data, pending, entry.attempts + 1, expired=False)
        finally:
            self._entries.pop(entry.queue_id, None)
            await self.spool.quarantine(entry.queue_id, f"set aside: {reason}: {exc!r}")

    async def _attempt(self, entry: QueueEntry, courier: Courier) -> None:
        attempt_started = time.time()
        self._forget_waits(entry.queue_id)
        data = await self._load(entry)
        if data is None:
            return
        env = entry.envelope
        prepared: PreparedMessage | None = None  # analysed when a copy is first needed
        pending = entry.pending()
        failed: list[_Pending] = []
        deferred: list[_Pending] = []
        waits: list[Wait] = []
        tried = held = 0  # copies handed to the courier; copies held (not waiting)
        attempt = entry.attempts + 1
        unjournaled: tuple[int, str] | None = None  # the last delivery, see below
        # Recipients of ``pending`` not yet final: ``entry.pending()`` after each copy
        # without its scan of every recipient (1000 recipients: a million checks).
        unfinished = len(pending)
        decisions, site_down = await self._decisions(entry, pending)
        store_down = site_down is not None
        lanes = self._lanes_for(entry, pending, decisions, len(data), store_down)

        async def send(i: int, courier: Courier, others: Callable[[], bool] = _alone) -> bool:
            """Decide, render and send recipient ``i``'s copy (or defer it).  False when
            no session could be had on ``courier`` (refused, a 421 greeting: an
            upstream's limit on connections per client, say) while ``others()`` says
            another lane's connection may still work: nothing is recorded, and the copy,
            certainly not sent, goes on another lane."""
            nonlocal prepared, tried, held, unfinished, unjournaled, site_down
            rcpt = entry.recipients[i]
            if site_down is not None:
                deferred.append(_Pending(i, site_down))
                return True
            decision = decisions.get(rcpt.address, Decision.REFUSED)
            if decision.suppressed:
                await self._suppress(entry, i, decision)
                unfinished -= 1
                return True
            policy = policy_of(decision)
            if prepared is None:
                prepared = await self.rewrite.prepare(env, data)
            copy = await self._render(prepared, rcpt.address, policy)
            if copy.held is not None and copy.wait is not None:
                waits.append(copy.wait)
                deferred.append(_Pending(i, Result(
                    Outcome.TEMPORARY, 451, f"451 4.7.0 copy waiting: {copy.held}"[:500],
                    "4.7.0", "beacon-proxy")))
                event("waiting", queue_id=env.queue_id, message_id=env.message_id,
                      recipient=rcpt.address, policy=policy.value, reason=copy.held,
                      until=_iso(copy.wait.until), **copy.report)
                return True
            if copy.held is not None:
                held += 1
                deferred.append(_Pending(i, Result(
                    Outcome.TEMPORARY, 451, f"451 4.7.0 copy held: {copy.held}"[:500], "4.7.0",
                    "beacon-proxy")))
                event("held", logging.WARNING, queue_id=env.queue_id,
                      message_id=env.message_id, recipient=rcpt.address, policy=policy.value,
                      reason=copy.held, **copy.report)
                return True
            started = time.monotonic()
            result = await courier.deliver(
                env.sender, rcpt.address, copy.data,
                smtputf8=env.smtputf8, body_type=env.body_type, crlf=copy.crlf, dots=copy.dots,
            )
            if result.session and others():
                return False
            DELIVERY_SECONDS.observe(time.monotonic() - started)
            tried += 1
            if result.outcome is Outcome.DELIVERED:
                rcpt.state, rcpt.reply = "delivered", result.reply
                unfinished -= 1
                if unfinished or lanes > 1:  # written by the journal's thread; no hop per copy
                    self.spool.record_soon(env.queue_id, i, "delivered", result.reply)
                else:
                    # Every recipient is final: the message is removed next, with no
                    # await in between, and the unlink protects this outcome as the
                    # journal line would have (one hop and one journal file fewer).
                    # (Not with lanes: their extra connections close in between.)
                    unjournaled = (i, result.reply)
                child(DELIVERIES, "delivered").inc()
                if listened():  # else not even the keywords are gathered
                    self._log_recipient("delivered", entry, i, result, attempt,
                                        policy=policy.value, size=len(copy.data),
                                        **copy.report)
            elif result.outcome is Outcome.PERMANENT:
                failed.append(_Pending(i, result))
            else:
                deferred.append(_Pending(i, result))
                if _site_failure(result):
                    site_down = result
            return True

        async def prepare() -> None:
            nonlocal prepared
            prepared = await self.rewrite.prepare(env, data)

        if lanes == 1:
            for i in pending:
                if self._stopping or entry.deleted:
                    break
                await send(i, courier)
        else:  # once, before the lanes (each would prepare the message)
            await self._in_lanes(entry, pending, lanes, courier, prepare, send)
        if entry.deleted:
            return  # an operator removed it meanwhile: its files are gone
        if tried or held or store_down:
            # A held copy is retried like a 4xx (docs/flow.md), with its backoff: not
            # counted, a message whose copies are all held came back every retry_min
            # for the whole queue lifetime, its attempt logged as 1 each time.  So is
            # a failed consent lookup (the store's recovery brings it back sooner).  A
            # copy that waits for its campaign is no attempt: its wake or wait ends it.
            entry.attempts += 1
        now = time.time()
        entry.last_attempt = now
        if deferred and not self._stopping and self.retry.expired(env.received_at, now):
            failed.extend(deferred)
            deferred = []
            expired = True
        else:
            expired = False
        if failed:
            await self._bounce(entry, data, failed, attempt, expired=expired)
        for d in deferred:
            rcpt = entry.recipients[d.index]
            rcpt.state, rcpt.reply = "deferred", d.result.reply
            await self.spool.record(env.queue_id, d.index, "deferred", d.result.reply)
        if entry.pending():
            entry.next_attempt = (
                now if self._stopping
                else self.retry.next_attempt(entry.attempts, env.received_at, now)
            )
            if store_down:  # due again when the store is back, or at its backoff
                waits.append(Wait(entry.next_attempt, _STORE_BACK))
            if waits and not self._stopping:
                if any(self._woken.get(w.key, 0.0) >= attempt_started for w in waits):
                    entry.next_attempt = now  # woken while this attempt ran
                else:
                    self._note_waits(entry, waits)
            if entry.queue_id in self._again and not self._stopping:
                entry.next_attempt = now  # made due again during this attempt: journaled so
            entry.state = "deferred"
            await self.spool.finish_attempt(entry)
            if entry.queue_id in self._again and not self._stopping:
                entry.next_attempt = time.time()  # ... or while it journaled its end
            for d in deferred:
                DELIVERIES.labels("deferred").inc()
                self._log_recipient("deferred", entry, d.index, d.result, attempt,
                                    next_attempt=_iso(entry.next_attempt))
            self._push(entry)
        else:
            # Done by the journal's thread after this message's lines, not waited for
            # (no hop back to the loop), and logged there (removed) once done; if the
            # unlink fails it journals the last delivery and logs remove_failed, and
            # the next start removes the message.
            self.spool.remove_soon(env.queue_id, unjournaled)
            self._entries.pop(env.queue_id, None)

    def _lanes_for(self, entry: QueueEntry, pending: Sequence[int],
                   decisions: Mapping[str, Decision], size: int, store_down: bool) -> int:
        """How many connections this attempt's copies go out on: 1, or with many copies
        to send, one for each ``LANE_RECIPIENTS`` of them, as far as the scheduler's
        spare connections (``lanes``) reach; those beyond the first are reserved here,
        before anything awaits (:meth:`_in_lanes` gives them back).  Not for a message
        rendered in a thread (two lanes would render in two threads at once)."""
        if (self._spare <= 0 or store_down or size > _THREAD_RENDER_BYTES
                or len(pending) < 2 * LANE_RECIPIENTS):
            return 1
        to_send = sum(1 for i in pending if not decisions.get(
            entry.recipients[i].address, Decision.REFUSED).suppressed)
        lanes = max(1, min(1 + self._spare, to_send // LANE_RECIPIENTS))
        self._spare -= lanes - 1
        return lanes

    async def _in_lanes(self, entry: QueueEntry, pending: Sequence[int], lanes: int,
                        courier: Courier, prepare: Callable[[], Awaitable[None]],
                        send: Callable[[int, Courier, Callable[[], bool]], Awaitable[bool]]
                        ) -> None:
        """Prepare the message, then send ``pending`` over ``lanes`` connections at once:
        the worker's courier and ``lanes - 1`` more (reserved by :meth:`_lanes_for`),
        opened for this attempt; each is given back once closed.  Each lane takes the
        next recipient when it is free, so a slow copy holds up one lane.

        A lane that gets no session (its connection refused, a 421 greeting: an
        upstream's limit on connections per client, which may refuse the worker's own
        connection as well as an extra one) drops out and gives its copy back, as long
        as another lane's connection has not failed so; the last one's failure is the
        upstream's and defers what no lane has sent (as any other failure of the site
        does, on any lane).  A lane that raises stops every lane from taking more, lets
        the copies in flight end (an upstream that took one must see it journaled, not
        sent again), then the error is raised."""
        unopened = lanes - 1
        extra: list[Courier] = []
        try:
            await prepare()
            while unopened:
                extra.append(self.couriers())
                unopened -= 1
            couriers = [courier, *extra]
            refused: set[int] = set()  # couriers (by place) that got no session
            todo = collections.deque(pending)  # each recipient is taken by one lane
            errors: list[BaseException] = []

            async def lane(at: int) -> None:
                def others() -> bool:
                    return len(refused | {at}) < len(couriers)

                try:
                    while todo and not (errors or self._stopping or entry.deleted):
                        i = todo.popleft()
                        if not await send(i, couriers[at], others):
                            refused.add(at)
                            todo.appendleft(i)
                            return
                except BaseException as exc:  # the others stop taking more (see above)
                    errors.append(exc)

            await asyncio.gather(*(lane(at) for at in range(len(couriers))))
            if errors:
                raise errors[0]
            # A copy given back after the other lanes had found nothing left to take:
            # a connection that did not fail sends it (another failure there is the
            # upstream's: no lane is left to give it to).
            alive = next(c for at, c in enumerate(couriers) if at not in refused)
            while todo and not (self._stopping or entry.deleted):
                await send(todo.popleft(), alive, _alone)
        finally:
            self._spare += unopened
            if extra:
                await asyncio.gather(*(self._give_back(c) for c in extra))

    async def _give_back(self, courier: Courier) -> None:
        """Close an extra lane's connection, then count it spare again."""
        try:
            await courier.close()
        except Exception as exc:
            log.debug("closing a lane's connection failed: %r", exc)
        finally:
            self._spare += 1

    async def _decisions(self, entry: QueueEntry, pending: list[int]
                         ) -> tuple[Mapping[str, Decision], Result | None]:
        """Every pending recipient's decision, in one lookup; a failed lookup defers all."""
        failures = self._store_failures  # a success says the store is back only when no
        try:                              # lookup failed while this one ran
            found = await self.consent.decisions(
                [entry.recipients[i].address for i in pending], entry.envelope.list_id)
        except Exception as exc:  # never guess consent: try again later
            log.debug("consent lookup for %s failed: %s", entry.queue_id, exc)
            self._store_failures += 1
            if self._store_down_since is None:  # once per outage; each deferral is logged
                self._store_down_since = time.time()
                event("consent_store_down", logging.ERROR, queue_id=entry.queue_id,
                      error=f"{type(exc).__name__}: {exc}"[:300])
            return {}, Result(Outcome.TEMPORARY, 451,
                              f"451 4.3.0 consent lookup failed: {str(exc)[:200]}", "4.3.0",
                              "consent-store")
        if self._store_down_since is not None and failures == self._store_failures:
            self._store_back()
        return found, None

    def _store_back(self) -> None:
        """A lookup succeeded after one failed: make the messages the outage deferred
        due now, unless a recovery did so less than ``retry_min`` ago (a flapping
        store: they keep their backoff)."""
        assert self._store_down_since is not None
        now = time.time()
        down = now - self._store_down_since
        self._store_down_since = None
        woken = 0
        if now >= self._store_next_wake:
            self._store_next_wake = now + self.retry.retry_min
            woken = self.wake(_STORE_BACK)
        event("consent_store_back", down_seconds=round(down, 3), woken=woken)

    async def _suppress(self, entry: QueueEntry, index: int, decision: Decision) -> None:
        """Delivery suspended for this recipient: final, nothing sent, no bounce.  The
        log says which suppression matched: ``scope`` ``global`` (every list) or
        ``list`` (the message's ``list_id``)."""
        env, rcpt = entry.envelope, entry.recipients[index]
        rcpt.state, rcpt.reply = "suppressed", "delivery suspended by the recipient"
        self.spool.record_soon(env.queue_id, index, "suppressed", rcpt.reply)
        DELIVERIES.labels("suppressed").inc()
        event("suppressed", queue_id=env.queue_id, message_id=env.message_id,
              sender=env.sender, recipient=rcpt.address, list_id=env.list_id,
              scope="global" if decision is Decision.SUPPRESSED else "list")

    async def _bounce(self, entry: QueueEntry, data: bytes, failed: Sequence[_Pending],
                      attempt: int, *, expired: bool) -> None:
        env = entry.envelope
        now = time.time()
        failures = [
            Failure(
                recipient=entry.recipients[f.index].address,
                action="failed",
                status=("4.4.7" if expired and f.result.outcome is Outcome.TEMPORARY
                        else f.result.status or "5.0.0"),
                diagnostic=(f"delivery time expired; last reply: {f.result.reply}"
                            if expired and f.result.outcome is Outcome.TEMPORARY
                            else f.result.reply),
                remote_mta=f.result.remote,
                last_attempt=now,
            )
            for f in failed
        ]
        dsn_id: str | None = None
        if needs_bounce(env):
            dsn_id = new_queue_id()
            dsn = build_dsn(env, failures, data, reporting_mta=self.hostname, now=now)
            dsn_env = Envelope(
                queue_id=dsn_id,
                sender="",
                recipients=(env.sender,),
                received_at=now,
                client_address="127.0.0.1",
                client_helo=self.hostname,
                protocol="local",
                message_id=message_id(dsn),
                size=len(dsn),
                smtputf8=not env.sender.isascii(),
                body_type="8BITMIME",
                bounce_of=env.queue_id,
            )
            await self.enqueue(dsn_env, dsn)
        for f, failure in zip(failed, failures, strict=True):
            rcpt = entry.recipients[f.index]
            rcpt.state, rcpt.reply = "bounced", failure.diagnostic
            await self.spool.record(env.queue_id, f.index, "bounced", failure.diagnostic)
            DELIVERIES.labels("bounced").inc()
            self._log_recipient("bounced", entry, f.index, f.result, attempt, status=failure.status,
                                expired=expired, dsn_queue_id=dsn_id)
        if dsn_id is None:
            event("bounce_dropped", logging.WARNING, queue_id=env.queue_id,
                  reason="null envelope sender: no one to notify",
                  recipients=len(failures))

    def _log_recipient(self, name: str, entry: QueueEntry, index: int, result: Result,
                       attempt: int, **extra: object) -> None:
        if not listened():  # nobody would see it: build none of its fields
            return
        env = entry.envelope
        event(
            name,
            queue_id=env.queue_id,
            message_id=env.message_id,
            sender=env.sender,
            recipient=entry.recipients[index].address,
            relay=result.remote,
            reply=result.reply,
            attempt=attempt,
            delay=round(time.time() - env.received_at, 3),
            **extra,
        )
