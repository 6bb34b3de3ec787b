"""Server-side forwards: a recipient's one-click unsubscribe and, by consent, opens.

The relay replaces a sender's ``List-Unsubscribe`` with its own link, so the
sender's list would never learn of an unsubscribe made through the proxy.
:class:`OneClickForwarder` closes that gap: when the web side has suspended
a list through an unsubscribe token whose claims carry the sender's RFC 8058
URL (``Claims.forward``), it queues a forward in the consent store (durable:
it survives a crash and is shared by every node) and a worker sends the
one-click POST (RFC 8058 section 3.1)::

    POST <url>
    Content-Type: multipart/form-data; boundary=...
    User-Agent: beacon-proxy/0.1.0 (one-click forwarder)

    --...
    Content-Disposition: form-data; name="List-Unsubscribe"

    One-Click
    --...--

Outcomes, by the sender's answer (redirects are never followed: only the URL
in the token is ever contacted):

* 2xx -> done;
* 3xx -> done, counted as ``redirect``: RFC 8058 forbids the redirect, but the
  server did receive the POST, and asking again would get the same answer for
  the whole lifetime; the status is logged for whoever reads the numbers;
* 408, 429, 5xx, timeouts, connection and TLS errors -> retried with
  exponential backoff (:func:`backoff`: ``retry_min`` doubling up to
  ``retry_max``, plus up to 20 % jitter on top, so failures spread out also
  at the cap), or later if the server's ``Retry-After`` asks so (at most
  ``retry_max``),
  until ``lifetime`` after the forward was queued (Gmail and Yahoo expect an
  unsubscribe within two days), then ``expired``;
* any other 4xx, a URL that :func:`~.forwardhttp.check_url` refuses, a host
  without a public address -> failed at once.

Finished jobs stay in the store for ``keep`` seconds (30 days) for
``beacon-proxy events forwards``, then the worker deletes them: they hold
the recipient's address and the sender's URL for that recipient.

Each attempt is one ``forward`` event in the log with the URL's host only (its
path usually carries the sender's subscriber id) and no recipient address, and
is counted in ``beacon_proxy_forwards_total{kind="one-click"}``.

:class:`OpenForwarder` sends a consenting recipient's open on to the tracker
URL the pixel replaced (``[policy] forward_opens``): best effort, from a
bounded in-memory queue (dropped and counted when full), a plain GET that
carries nothing of the recipient (no address, no user agent, no cookies).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import heapq
import logging
import math
import random
import secrets
import ssl as _ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
from yarl import URL

from beacon_proxy.consent.model import ForwardJob, StoreError, utcnow
from beacon_proxy.consent.store import ForwardQueue
from beacon_proxy.deliver.forwardhttp import (
    RefusedAddress,
    RefusedURL,
    check_url,
    host_of,
    new_session,
)
from beacon_proxy.log import event
from beacon_proxy.metrics import FORWARDS
from beacon_proxy.tokens import Claims

__all__ = ["OneClickForwarder", "OpenForwarder", "Verdict", "backoff", "one_click_body",
           "retry_after", "verdict"]

log = logging.getLogger(__name__)

ONE_CLICK = "one-click"
OPEN = "open"
_MAX_DUE = 10_000  # retry times remembered for an early wake-up; beyond, the poll finds them
_PRUNE_EVERY = 3600.0  # seconds between deletions of old finished jobs


class Verdict(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


def verdict(status: int) -> Verdict:
    """What an HTTP status means for a one-click forward (see the module docstring)."""
    if 200 <= status < 400:
        return Verdict.DONE
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    if 400 <= status < 500:
        return Verdict.FAILED
    return Verdict.RETRY  # 1xx or nonsense: the server is confused, maybe for now


def backoff(attempts: int, retry_min: float, retry_max: float, jitter: float = 0.2) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (1-based).

    ``retry_min * 2**(attempts - 1)``, at most ``retry_max``, plus a random
    ``0..jitter`` fraction of that on top (added, not clamped into the bounds,
    so jobs failing together do not retry in lockstep at the cap).

    >>> 60 <= backoff(1, 60, 3600) <= 72, 3600 <= backoff(30, 60, 3600) <= 4320
    (True, True)
    """
    base = min(retry_max, retry_min * 2.0 ** min(max(attempts - 1, 0), 40))
    return base * (1 + random.uniform(0, jitter))


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP date).

    >>> retry_after("120", datetime(2026, 12, 3, tzinfo=UTC))
    120.0
    >>> retry_after("Thu, 03 Dec 2026 00:01:00 GMT", datetime(2026, 12, 3, tzinfo=UTC))
    60.0
    >>> retry_after("soon", datetime(2026, 12, 3, tzinfo=UTC)) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit() and len(value) <= 10:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def one_click_body(boundary: str) -> bytes:
    """The RFC 8058 one-click body as ``multipart/form-data`` with this boundary."""
    return (f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
            "\r\n"
            "One-Click\r\n"
            f"--{boundary}--\r\n").encode("ascii")


def _describe(exc: BaseException, url: URL) -> str:
    """A short description of a failed request, naming the URL by its host only."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientResponseError):  # its text would show the whole URL
        text = f"{type(exc).__name__}: {exc.status}, {exc.message}"
    elif isinstance(exc, aiohttp.ClientSSLError):
        text = f"TLS: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    for spelling in {str(url), url.human_repr()}:
        text = text.replace(spelling, f"<{url.host}>")
    return text


def _refused_address(exc: BaseException) -> RefusedAddress | None:
    """The resolver's refusal inside a connection error, if that is what it was."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error,
                                                                    RefusedAddress):
        return exc.os_error
    return None


class OneClickForwarder:
    """Forwards one-click unsubscribes to the senders' own URLs, from the store's queue.

    ``suspended`` is the web side's ``on_suspended`` callback.  ``start`` runs
    a worker that claims due jobs (``batch`` at a time, ``concurrency`` in
    flight), at once when one is queued here, when a retry of this node is
    due, and every ``poll`` seconds for jobs queued by other nodes or left
    by a previous run.  ``clock`` is the time source of the queue's
    timestamps, the lifetime and ``keep`` (tests move it).
    """

    def __init__(self, store: ForwardQueue, *, timeout: float = 10.0, retry_min: float = 60.0,
                 retry_max: float = 3600.0, lifetime: float = 2 * 86400,
                 ssl: _ssl.SSLContext | None = None, batch: int = 20, concurrency: int = 4,
                 poll: float = 30.0, keep: float = 30 * 86400, allow_http: bool = False,
                 allow_private: bool = False, clock: Callable[[], datetime] = utcnow) -> None:
        if not timeout > 0 or not poll > 0 or not lifetime > 0 or not keep > 0:
            raise ValueError("timeout, poll, lifetime and keep must be positive")
        if not 0 < retry_min <= retry_max:
            raise ValueError("expected 0 < retry_min <= retry_max")
        if not 1 <= batch <= 1000 or concurrency < 1:
            raise ValueError("batch must be 1..1000 and concurrency at least 1")
        self._store = store
        self._timeout = timeout
        self._retry_min, self._retry_max = retry_min, retry_max
        self._lifetime = timedelta(seconds=lifetime)
        self._ssl = ssl
        self._batch = batch
        self._concurrency = concurrency
        self._poll = poll
        self._keep = timedelta(seconds=keep)
        self._pruned: datetime | None = None
        self._schemes = frozenset({"https", "http"} if allow_http else {"https"})
        self._allow_private = allow_private
        self._clock = clock
        # A claim must outlast the slowest batch, so no other node takes a job in flight.
        self.lease = timeout * math.ceil(batch / concurrency) + 30.0
        self._wake = asyncio.Event()
        self._due: list[datetime] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- the web side's callback -------------------------------------------

    async def suspended(self, claims: Claims) -> None:
        """Queue a forward to ``claims.forward`` (durably), then wake the worker.

        Nothing happens without a forward URL; a URL this forwarder would not
        contact, or claims the store refuses, are logged and counted as
        ``refused``, not queued (the suspension stands either way).  A store
        failure (:class:`~beacon_proxy.consent.model.StoreError`) propagates:
        the caller may answer with an error so that the one-click is sent
        again (suspending and queueing are idempotent).
        """
        if not claims.forward:
            return
        host = host_of(claims.forward)
        try:
            check_url(claims.forward, schemes=self._schemes, allow_private=self._allow_private)
            job_id = await self._store.queue_forward(claims.forward, address=claims.recipient,
                                                     list_id=claims.list_id, at=self._clock())
        except ValueError as exc:  # RefusedURL, or a bad address, list or URL for the store
            FORWARDS.labels(ONE_CLICK, "refused").inc()
            error = (str(exc) if isinstance(exc, RefusedURL)  # the others may show the address
                     else f"the store refused the claims: {type(exc).__name__}")
            event("forward", logging.WARNING, kind=ONE_CLICK, host=host, result="refused",
                  error=error)
            return
        FORWARDS.labels(ONE_CLICK, "queued").inc()
        event("forward_queued", kind=ONE_CLICK, job=job_id, host=host)
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start the worker (it sends what is already due at once)."""
        if self._task is not None:
            raise RuntimeError("the one-click forwarder is already running")
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="one-click-forwarder")

    async def stop(self, grace: float = 5.0) -> None:
        """Let attempts in flight finish for up to ``grace`` seconds, then cancel.

        A job cut off here stays pending and is sent again when its lease ends.
        Also closes the HTTP client that :meth:`run_once` alone may have opened.
        """
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> OneClickForwarder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the worker ------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch of due jobs and attempt each; how many were claimed."""
        jobs = await self._store.claim_forwards(self._batch, self.lease, now=self._clock())
        if not jobs:
            return 0
        gate = asyncio.Semaphore(self._concurrency)

        async def one(job: ForwardJob) -> None:
            async with gate:
                await self._attempt_guarded(job)

        await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self.run_once()
            except StoreError as exc:  # the database is away: try again at the next poll
                event("forward_store_error", logging.WARNING, kind=ONE_CLICK, error=str(exc))
                claimed = 0
            except Exception:  # a bug: keep the worker alive, at the poll's pace
                log.exception("the one-click forwarder's claim failed")
                claimed = 0
            await self._prune()
            if claimed < self._batch and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_wait()):
                        await self._wake.wait()

    async def _prune(self) -> None:
        """Delete finished jobs older than ``keep``, at most once every hour."""
        now = self._clock()
        if self._pruned is not None and (now - self._pruned).total_seconds() < _PRUNE_EVERY:
            return
        self._pruned = now
        try:
            removed = await self._store.prune_forwards(now - self._keep)
        except StoreError as exc:
            event("forward_store_error", logging.WARNING, kind=ONE_CLICK, error=str(exc))
            return
        if removed:
            event("forwards_pruned", kind=ONE_CLICK, removed=removed)

    def _idle_wait(self) -> float:
        now = self._clock()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        if not self._due:
            return self._poll
        return min(self._poll, max(0.0, (self._due[0] - now).total_seconds()))

    async def _attempt_guarded(self, job: ForwardJob) -> None:
        try:
            await self._attempt(job)
        except StoreError as exc:  # the outcome is lost: the job is due again after its lease
            event("forward_store_error", logging.WARNING, kind=ONE_CLICK, job=job.id,
                  error=str(exc))
        except Exception as exc:  # a bug must not make a job loop: give it up, visibly
            log.exception("one-click forward %s failed unexpectedly", job.id)
            with contextlib.suppress(StoreError):
                await self._store.forward_failed(job.id, error=f"internal error: {exc!r}",
                                                 at=self._clock())
            FORWARDS.labels(ONE_CLICK, "failed").inc()

    async def _attempt(self, job: ForwardJob) -> None:
        host = host_of(job.url)
        status: int | None = None
        try:
            url = check_url(job.url, schemes=self._schemes, allow_private=self._allow_private)
        except RefusedURL as exc:
            await self._finish(job, host, "refused", f"refused: {exc}", status)
            return
        wait: float | None = None
        try:
            status, wait = await self._post(url)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = _refused_address(exc)
            if refused is not None:
                await self._finish(job, host, "refused", f"refused: {refused.strerror}", status)
                return
            result, error = Verdict.RETRY, _describe(exc, url)
        else:
            result, error = verdict(status), f"HTTP {status}"
        if result is Verdict.DONE:
            done = "redirect" if status is not None and status >= 300 else "done"
            await self._store.forward_done(job.id, at=self._clock())
            self._record(job, host, done, status, None)
        elif result is Verdict.FAILED:
            await self._finish(job, host, "failed", error, status)
        else:
            await self._again(job, host, error, status, wait)

    async def _again(self, job: ForwardJob, host: str, error: str, status: int | None,
                     wait: float | None) -> None:
        """Schedule the next attempt (not before ``wait`` seconds), or give up at the lifetime."""
        now = self._clock()
        expires = job.created_at + self._lifetime
        if now >= expires:
            await self._finish(job, host, "expired",
                               f"gave up after {job.attempts} attempts: {error}", status)
            return
        delay = backoff(job.attempts, self._retry_min, self._retry_max)
        if wait is not None:  # the server's Retry-After, within our bounds
            delay = max(delay, min(wait, self._retry_max))
        when = min(now + timedelta(seconds=delay), expires)  # the last try is at the lifetime
        await self._store.forward_retry(job.id, error=error, next_at=when)
        if len(self._due) < _MAX_DUE:
            heapq.heappush(self._due, when)
        self._record(job, host, "retry", status, error)

    async def _finish(self, job: ForwardJob, host: str, result: str, error: str,
                      status: int | None) -> None:
        await self._store.forward_failed(job.id, error=error, at=self._clock())
        self._record(job, host, result, status, error)

    def _record(self, job: ForwardJob, host: str, result: str, status: int | None,
                error: str | None) -> None:
        FORWARDS.labels(ONE_CLICK, result).inc()
        level = logging.INFO if result in ("done", "retry") else logging.WARNING
        event("forward", level, kind=ONE_CLICK, job=job.id, host=host, attempt=job.attempts,
              result=result, status=status, error=error)

    async def _post(self, url: URL) -> tuple[int, float | None]:
        """The answer's status, and the wait its ``Retry-After`` asks for (if any)."""
        if self._session is None:  # made on first use, so run_once works without start
            self._session = new_session(role="one-click forwarder", timeout=self._timeout,
                                        ssl=self._ssl, allow_private=self._allow_private,
                                        limit=self._concurrency)
        session = self._session
        boundary = secrets.token_hex(16)
        async with session.post(
            url, data=one_click_body(boundary), allow_redirects=False,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        ) as resp:
            # The body is not read: closing drops the connection.
            return resp.status, retry_after(resp.headers.get("Retry-After"), self._clock())


class OpenForwarder:
    """Sends consenting recipients' opens on to the original trackers, best effort.

    ``opened`` is the web side's ``on_open`` callback: it never blocks and
    never fails; at most ``max_pending`` opens wait, more are dropped and
    counted.  ``concurrency`` workers send a GET each, read at most
    ``max_body`` bytes of the answer and close the connection.
    """

    def __init__(self, *, concurrency: int = 4, max_pending: int = 1000, timeout: float = 5.0,
                 ssl: _ssl.SSLContext | None = None, allow_private: bool = False,
                 max_body: int = 4096) -> None:
        if concurrency < 1 or max_pending < 1 or not timeout > 0 or max_body < 0:
            raise ValueError("concurrency, max_pending and timeout must be positive")
        self._concurrency = concurrency
        self._timeout = timeout
        self._ssl = ssl
        self._allow_private = allow_private
        self._max_body = max_body
        self._queue: asyncio.Queue[URL] = asyncio.Queue(max_pending)
        self._session: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    def opened(self, claims: Claims) -> None:
        """Queue a GET of ``claims.forward`` (nothing without one; dropped when full)."""
        if not claims.forward:
            return
        try:
            url = check_url(claims.forward, schemes=("http", "https"),
                            allow_private=self._allow_private)
        except RefusedURL as exc:
            FORWARDS.labels(OPEN, "refused").inc()
            event("forward", logging.DEBUG, kind=OPEN, host=host_of(claims.forward),
                  result="refused", error=str(exc))
            return
        try:
            self._queue.put_nowait(url)
        except asyncio.QueueFull:
            FORWARDS.labels(OPEN, "dropped").inc()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._workers:
            raise RuntimeError("the open forwarder is already running")
        self._session = new_session(role="open forwarder", timeout=self._timeout, ssl=self._ssl,
                                    allow_private=self._allow_private, limit=self._concurrency)
        self._workers = [asyncio.create_task(self._work(), name=f"open-forwarder-{n}")
                         for n in range(self._concurrency)]

    async def join(self) -> None:
        """Wait until every queued open has been sent or has failed (for tests, shutdown)."""
        await self._queue.join()

    async def stop(self) -> None:
        """Stop at once; opens still queued are dropped (and counted)."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        if left:
            FORWARDS.labels(OPEN, "dropped").inc(left)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> OpenForwarder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _work(self) -> None:
        while True:
            url = await self._queue.get()
            try:
                await self._send(url)
            except Exception:  # best effort: one bad answer must not stop the worker
                log.exception("open forward to %s failed unexpectedly", url.host)
                FORWARDS.labels(OPEN, "error").inc()
            finally:
                self._queue.task_done()

    async def _send(self, url: URL) -> None:
        session = self._session
        if session is None:
            raise RuntimeError("the open forwarder is not running")
        status: int | None = None
        try:
            async with session.get(url, allow_redirects=False) as resp:
                status = resp.status
                if self._max_body:
                    await resp.content.read(self._max_body)
                resp.close()  # the rest of the body is never read
            result, error = ("sent" if status < 400 else "rejected"), None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            result, error = "error", _describe(exc, url)
        FORWARDS.labels(OPEN, result).inc()
        event("forward", logging.DEBUG, kind=OPEN, host=url.host, result=result, status=status,
              error=error)
