"""An open-loop HTTP load generator: a fixed request rate, latency from the schedule.

A closed-loop client (send, wait for the answer, send the next) slows down
with the server and so hides exactly the stalls a latency goal is about
("coordinated omission").  Here request ``i`` is *due* at ``start + i / rate``
whatever happened before, and its latency runs from that due time to the last
byte of the response body: a request that waited for a free connection, or
behind a stalled one, is charged for the wait.

Requests go over a bounded pool of keep-alive connections
(``aiohttp.TCPConnector(limit=...)``).  One Python process may not sustain
the rate on a small machine, so the schedule can be split over several
processes (:func:`run_load`, ``clients``): process ``k`` sends requests
``k, k + clients, ...`` of the same schedule, and the results are merged.
``CLOCK_MONOTONIC`` is one clock for every process on Linux, so all of them
share one ``start``.

Everything is bounded: ``count`` requests at most, none started after the
schedule's end plus ``grace``, each with a ``timeout``; what is still running
then is cancelled and counted as an error.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess

import aiohttp

__all__ = ["LoadResult", "LoadSpec", "percentile", "run_load"]

_START_MARGIN = 0.5  # seconds between "every client is ready" and the first due time


@dataclass(frozen=True)
class LoadSpec:
    """One phase of load: ``count`` GETs at ``rate`` per second, cycling over ``urls``."""

    urls: Sequence[str]
    rate: float
    count: int
    connections: int = 64  # keep-alive connections per client process
    timeout: float = 10.0  # per request, seconds
    grace: float = 5.0  # seconds after the schedule's end before nothing new starts
    user_agent: str = "beacon-bench/1"
    expect_prefix: bytes = b""  # a 200 body must start with this (b"" = anything)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("LoadSpec: no URLs")
        if self.rate <= 0 or self.count < 1 or self.connections < 1 or self.timeout <= 0:
            raise ValueError("LoadSpec: rate, count, connections and timeout must be positive")


@dataclass
class LoadResult:
    """What one phase measured (merged over client processes)."""

    latencies: list[float] = field(default_factory=list)  # seconds, completed requests only
    lags: list[float] = field(default_factory=list)  # actual send - due time, per request
    service: list[float] = field(default_factory=list)  # actual send to end of body
    dues: list[float] = field(default_factory=list)  # due times, in step with latencies
    statuses: Counter[int] = field(default_factory=Counter)
    bad_bodies: int = 0  # 200s whose body did not start with expect_prefix
    errors: Counter[str] = field(default_factory=Counter)  # exception name -> count
    sent: int = 0
    first_due: float = math.inf
    last_sent: float = 0.0  # monotonic time the last request was handed to the client
    last_done: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the load generator itself used (all processes)

    def merge(self, other: LoadResult) -> None:
        self.latencies += other.latencies
        self.lags += other.lags
        self.service += other.service
        self.dues += other.dues
        self.statuses += other.statuses
        self.bad_bodies += other.bad_bodies
        self.errors += other.errors
        self.sent += other.sent
        self.first_due = min(self.first_due, other.first_due)
        self.last_sent = max(self.last_sent, other.last_sent)
        self.last_done = max(self.last_done, other.last_done)
        self.client_cpu += other.client_cpu

    @property
    def send_rate(self) -> float:
        """Requests per second actually handed out (the offered load achieved)."""
        span = self.last_sent - self.first_due
        return self.sent / span if self.sent > 1 and span > 0 else 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def non_200(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 200)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of an ascending sequence; nan if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    >>> percentile([1.0, 2.0, 3.0, 4.0], 99)
    4.0
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _drive(spec: LoadSpec, start: float, first: int, step: int) -> LoadResult:
    """Send requests ``first, first + step, ...`` of the schedule that begins at ``start``."""
    res = LoadResult()
    interval = 1.0 / spec.rate
    deadline = start + spec.count * interval + spec.grace
    connector = aiohttp.TCPConnector(limit=spec.connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    tasks: set[asyncio.Task[None]] = set()

    async def one(url: str, due: float) -> None:
        sent = time.monotonic()
        res.lags.append(sent - due)
        try:
            async with session.get(url, allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            res.errors[type(exc).__name__] += 1
            return
        done = time.monotonic()
        res.latencies.append(done - due)
        res.service.append(done - sent)
        res.dues.append(due)
        res.last_done = max(res.last_done, done)
        res.statuses[status] += 1
        if status == 200 and not body.startswith(spec.expect_prefix):
            res.bad_bodies += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"User-Agent": spec.user_agent}) as session:
        i = first
        res.first_due = start + i * interval
        while i < spec.count:
            now = time.monotonic()
            if now > deadline:
                break
            while i < spec.count and start + i * interval <= now:
                task = asyncio.create_task(one(spec.urls[i % len(spec.urls)],
                                               start + i * interval))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                res.sent += 1
                res.last_sent = now
                i += step
            if i < spec.count:
                await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=spec.timeout + spec.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                res.errors["unfinished"] += len(pending)
    unsent = len(range(i, spec.count, step))
    if unsent:
        res.errors["not sent"] = unsent
    return res


def _client(spec: LoadSpec, start: float, first: int, step: int) -> LoadResult:
    """One client's share of the schedule, in this process."""
    cpu0 = time.process_time()
    res = asyncio.run(_drive(spec, start, first, step))
    res.client_cpu = time.process_time() - cpu0
    return res


def _child(spec: LoadSpec, first: int, step: int, conn: Connection) -> None:
    """A client process: say it is ready, receive the start time, run, send the result."""
    conn.send("ready")
    start: float = conn.recv()
    conn.send(_client(spec, start, first, step))
    conn.close()


def _receive(conn: Connection, timeout: float, what: str) -> object:
    if not conn.poll(timeout):
        raise TimeoutError(f"load client: no {what} within {timeout:.0f} s")
    return conn.recv()


def run_load(spec: LoadSpec, clients: int = 1) -> LoadResult:
    """Run one phase and return the merged result; ``clients`` > 1 uses that many processes.

    Client processes are started (``spawn``) and report ready before the
    schedule's start is fixed, so their start-up is never charged as latency.
    """
    if clients < 1:
        raise ValueError("clients must be >= 1")
    if clients == 1:
        return _client(spec, time.monotonic() + _START_MARGIN, 0, 1)
    ctx = multiprocessing.get_context("spawn")
    procs: list[tuple[SpawnProcess, Connection]] = []
    try:
        for k in range(clients):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(spec, k, clients, theirs), daemon=True)
            proc.start()
            theirs.close()
            procs.append((proc, ours))
        for _, conn in procs:
            _receive(conn, 60, "ready signal")
        start = time.monotonic() + _START_MARGIN
        for _, conn in procs:
            conn.send(start)
        merged = LoadResult()
        limit = _START_MARGIN + spec.count / spec.rate + 2 * (spec.timeout + spec.grace) + 30
        for _, conn in procs:
            part = _receive(conn, limit, "result")
            assert isinstance(part, LoadResult)
            merged.merge(part)
        return merged
    finally:
        for proc, conn in procs:
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
