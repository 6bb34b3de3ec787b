"""Several relay worker processes (``[smtp] workers = N``, N > 1): a supervisor and N workers.

    supervisor (beacon-proxy serve)
      binds the SMTP listening sockets, holds the spool root's lock, runs the web
      listeners (/o/, /u/, /api/, /metrics summed over the workers, /healthz,
      /readyz: ready when every worker is started) and the forwarders
      |-- worker 0 (beacon-proxy serve --worker 0 ...): accepts SMTP on the inherited
      |   sockets, owns <spool>/parts/0, delivers; analysis processes of its own
      |-- worker 1 ...

Workers are spawned fresh (``sys.executable -m beacon_proxy serve --worker I``: a new
interpreter, never a fork of a process that runs an event loop) with the listening
sockets passed as inherited descriptors (``pass_fds``): every worker accepts from the
same kernel queue, one connection each time it is ready (``smtpd.server``'s shared
listener: a burst spreads over the workers), which also works for port 0 and lets no
other process bind the port the way ``SO_REUSEPORT`` would.  Each worker has a socket
pair to the supervisor (its *channel*): the worker says ``ready`` once started and
answers ``metrics`` with its registry's text; the end of the channel (the supervisor
is gone) stops the worker, and so does ``PR_SET_PDEATHSIG`` (SIGTERM when the
supervisor dies, ``kill -9`` included): no worker outlives its supervisor.

A started worker takes no connection until the supervisor says ``go``: when every
worker has started, and at once for a worker started again while the others take
connections; after :data:`GO_WAIT` seconds without it (a sibling that does not start),
it takes them alone.  The worker ready first took every connection waiting or opened
while the others still started: an MTA's connections, opened together after a restart
and kept for minutes (Postfix reuses one for up to 300 s), stayed on one core.

A worker that dies is started again after a bounded backoff (:data:`BACKOFF_MIN`
doubling to :data:`BACKOFF_MAX`; ``worker_exited`` and ``worker_started`` events); it
recovers its part of the spool as a restarted relay does.  SIGTERM/SIGINT stop the
workers (each within ``[smtp] shutdown_timeout``, as a single relay stops), then
the supervisor; SIGHUP reloads the supervisor and is passed on to every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from beacon_proxy.app import Relay, Role
from beacon_proxy.config import Config
from beacon_proxy.log import event
from beacon_proxy.metrics import REGISTRY
from beacon_proxy.smtpd.server import LISTEN_BACKLOG
from beacon_proxy.spool.log import count_live
from beacon_proxy.spool.parts import all_roots

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "GO_WAIT", "Supervisor", "bind_listeners",
           "die_with_parent", "merge_metrics", "run_supervisor", "run_worker"]

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5  # seconds before a dead worker is started again, doubling per quick death
BACKOFF_MAX = 30.0
_STABLE = 60.0  # a worker that ran this long before it died is restarted after BACKOFF_MIN
#: Seconds a started worker waits for the supervisor's ``go`` (every worker started)
#: before it takes SMTP connections alone.
GO_WAIT = 10.0
_METRICS_TIMEOUT = 5.0
_QUEUE_REUSE = 1.0  # seconds a counted queue size is reused (for /healthz)
_PR_SET_PDEATHSIG = 1


# -- the channel: b"<kind> <length>\n" then <length> bytes --------------------------------

async def _send(writer: asyncio.StreamWriter, kind: str, payload: bytes = b"") -> None:
    writer.write(b"%s %d\n" % (kind.encode("ascii"), len(payload)) + payload)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    """The next frame, or None at the end of the channel."""
    try:
        line = await reader.readline()
        if not line:
            return None
        kind, _, size = line.decode("ascii").strip().partition(" ")
        return kind, await reader.readexactly(int(size))
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return None


# -- metrics -------------------------------------------------------------------------------

def merge_metrics(pages: Iterable[str]) -> bytes:
    """Prometheus text pages (one per process) as one page: every sample summed over the
    pages (counters, gauges, histogram buckets, counts and sums); ``_created`` samples
    keep the earliest time."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for page in pages:
        for family in text_string_to_metric_families(page):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if sample.name.endswith("_created"):
                    merged[key] = min(merged.get(key, sample.value), sample.value)
                else:
                    merged[key] = merged.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


# -- the supervisor ------------------------------------------------------------------------

def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address it names, as asyncio binds),
    inheritable, for the workers to accept on."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Port 0: every address on the one port the first one got.
            sock.bind((address[0], port, *address[2:]))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            port = port or int(sock.getsockname()[1])
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    going: bool = False  # told "go" since it last started: it takes connections
    started_at: float = 0.0
    quick_deaths: int = 0
    replies: deque[asyncio.Future[bytes]] = field(default_factory=deque)


class Supervisor:
    """Starts, watches and stops the worker processes of one relay (module docstring)."""

    def __init__(self, cfg: Config, count: int) -> None:
        self.cfg = cfg
        self.count = count
        self.socks = bind_listeners(cfg.smtp.listen.host, cfg.smtp.listen.port)
        self.relay = Relay(cfg, Role(count=count, metrics=self.metrics,
                                     workers_up=self.workers_up, queue_size=self.queue_size))
        self.workers = [_Worker(i) for i in range(count)]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._accepting = False  # every worker has started once: "go" at once from then
        self._queue: tuple[float, int] | None = None

    # -- what the web side asks ------------------------------------------------

    def workers_up(self) -> int:
        return sum(1 for w in self.workers
                   if w.ready and w.proc is not None and w.proc.returncode is None)

    def queue_size(self) -> int:
        """Messages in every part of the spool (counted at most once a second)."""
        now = time.monotonic()
        if self._queue is None or now - self._queue[0] >= _QUEUE_REUSE:
            total = 0
            for root in all_roots(self.cfg.spool.path):
                for state in ("active", "deferred"):
                    with contextlib.suppress(OSError):
                        total += len(os.listdir(root / state))
                with contextlib.suppress(OSError):
                    total += count_live(root / "log")  # first attempts, not yet files
            self._queue = (now, total)
        return self._queue[1]

    async def metrics(self) -> bytes:
        """``/metrics``: this process's registry and every started worker's, summed."""
        pages = [generate_latest(REGISTRY).decode()]
        asks = [self._ask_metrics(w) for w in self.workers if w.ready]
        for reply in await asyncio.gather(*asks, return_exceptions=True):
            if isinstance(reply, bytes):
                pages.append(reply.decode())
        return await asyncio.to_thread(merge_metrics, pages)

    async def _ask_metrics(self, worker: _Worker) -> bytes:
        if worker.writer is None:
            raise ConnectionError("no channel")
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.replies.append(reply)
        await _send(worker.writer, "metrics")
        async with asyncio.timeout(_METRICS_TIMEOUT):
            return await reply

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.relay.start()
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._keep(worker),
                                                   name=f"worker-{worker.index}"))

    def reload(self) -> None:
        """SIGHUP: reload this process, then pass the signal on to every worker."""
        self.relay.reload()
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        """Stop every worker (SIGTERM; each stops as a single relay does, and is killed
        if it has not within twice ``shutdown_timeout`` and 15 s), then this process."""
        self._stopping = True
        self.relay.mark_stopping()  # /readyz says "stopping" at once
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        bound = 2 * self.cfg.smtp.shutdown_timeout + 15
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=bound)
            for proc in procs:
                if proc.returncode is None:
                    log.warning("worker pid %d did not stop within %g s: killed", proc.pid, bound)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late, timeout=10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self.socks:
            sock.close()
        await self.relay.stop()

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker for ever: start it, and start it again when it dies."""
        while True:
            if self._stopping:
                return
            await self._spawn(worker)
            assert worker.proc is not None
            channel = asyncio.create_task(self._listen(worker))
            code = await worker.proc.wait()
            channel.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel
            worker.ready = worker.going = False
            for reply in worker.replies:
                if not reply.done():
                    reply.set_exception(ConnectionError("worker exited"))
            worker.replies.clear()
            if worker.writer is not None:
                worker.writer.close()
                worker.writer = None
            if self._stopping:
                return  # type: ignore[unreachable]  # (mypy narrows the flag above)
            ran = time.monotonic() - worker.started_at
            worker.quick_deaths = 0 if ran >= _STABLE else worker.quick_deaths + 1
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(worker.quick_deaths - 1, 0))
            event("worker_exited", logging.ERROR, worker_index=worker.index,
                  pid=worker.proc.pid, code=code if code >= 0 else None,
                  signal=signal.Signals(-code).name if code < 0 else None,
                  ran=round(ran, 3), restart_in=delay)
            await asyncio.sleep(delay)

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair()
        try:
            fds = [s.fileno() for s in self.socks]
            args = [sys.executable, "-m", "beacon_proxy", "serve",
                    "--worker", str(worker.index), "--workers", str(self.count),
                    "--listen-fds", ",".join(map(str, fds)), "--channel", str(child.fileno()),
                    "--supervisor-pid", str(os.getpid())]
            if self.cfg.source is not None:
                args += ["--config", str(self.cfg.source)]
            worker.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=(*fds, child.fileno()), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        worker.reader, worker.writer = await asyncio.open_connection(sock=parent)
        worker.started_at = time.monotonic()
        event("worker_started", worker_index=worker.index, pid=worker.proc.pid)

    async def _listen(self, worker: _Worker) -> None:
        assert worker.reader is not None
        while (frame := await _receive(worker.reader)) is not None:
            kind, payload = frame
            if kind == "ready":
                worker.ready = True
                await self._go()
            elif kind == "metrics" and worker.replies:
                reply = worker.replies.popleft()
                if not reply.done():
                    reply.set_result(payload)

    async def _go(self) -> None:
        """Tell every started worker not yet told to take connections, once every
        worker has started (from then on, a worker as soon as it has)."""
        if not (self._accepting or all(w.ready for w in self.workers)):
            return
        self._accepting = True
        for worker in self.workers:
            if worker.ready and not worker.going and worker.writer is not None:
                worker.going = True
                with contextlib.suppress(ConnectionError):  # it died: started again
                    await _send(worker.writer, "go")


async def run_supervisor(cfg: Config, count: int) -> None:
    """``beacon-proxy serve`` with ``count`` workers: until SIGTERM or SIGINT."""
    supervisor = Supervisor(cfg, count)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    try:
        try:
            await supervisor.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await supervisor.stop()
            raise
        await stopped.wait()
        await supervisor.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


# -- a worker --------------------------------------------------------------------------------

def die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux ``PR_SET_PDEATHSIG``); if the
    parent is already gone, now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def run_worker(cfg: Config, index: int, count: int, listen_fds: Sequence[int],
                     channel_fd: int) -> None:
    """One worker process: until SIGTERM, SIGINT or the end of its channel."""
    socks = tuple(socket.socket(fileno=fd) for fd in listen_fds)
    relay = Relay(cfg, Role(count=count, worker=index, socks=socks))
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd))
    stopped = asyncio.Event()

    loop = asyncio.get_running_loop()
    held: list[asyncio.TimerHandle] = []  # GO_WAIT's timer while no "go" came
    started = 0.0

    def accept(alone: bool) -> None:
        """Take SMTP connections: told "go" (every worker started), or alone."""
        if not held:
            return  # already taking them
        held.pop().cancel()
        relay.smtpd.accept()
        event("accepting", logging.WARNING if alone else logging.INFO, worker_index=index,
              alone=alone, waited=round(loop.time() - started, 3))

    async def serve_channel() -> None:
        while (frame := await _receive(reader)) is not None:
            if frame[0] == "metrics":
                await _send(writer, "metrics", generate_latest(REGISTRY))
            elif frame[0] == "go":
                accept(alone=False)
        stopped.set()  # the supervisor is gone

    async def start() -> None:
        nonlocal started
        await relay.start()
        started = loop.time()
        held.append(loop.call_later(GO_WAIT, accept, True))
        await _send(writer, "ready")

    async def stop() -> None:
        await relay.stop()
        writer.close()

    channel = asyncio.create_task(serve_channel(), name="channel")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload)
    try:
        try:
            await start()
        except BaseException:
            with contextlib.suppress(Exception):
                await relay.stop()
            raise
        await stopped.wait()
        await stop()
    finally:
        for timer in held:
            timer.cancel()
        channel.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await channel
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
