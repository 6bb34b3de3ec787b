"""Message analysis in worker processes, each job with a CPU budget.

:meth:`Engine.analyse <beacon_proxy.rewrite.engine.Engine.analyse>` is pure
CPU, most of it inside C regular-expression calls that hold the GIL: a thread
would neither free the event loop nor stop when asked.  :class:`AnalysisPool`
runs it in ``N`` worker processes instead, so the relay's loop only moves
bytes, and a job that overruns its budget is ended the only sure way, by
SIGKILL, and its worker replaced::

    pool = AnalysisPool(2)
    await pool.start()
    try:
        analysis = await pool.analyse(data, budget=5.0)
    except AnalysisTimeout:
        ...  # deliver untouched, or defer
    finally:
        await pool.close()

Workers are started with the ``forkserver`` method (``spawn`` on request,
never ``fork``: the relay runs threads and an event loop, which a forked
child would inherit half-locked).  Each builds its analyser once - by
default ``Engine(load_rules(rules))`` - and then serves one job at a time
over its own socket pair: the parent sends a length and the message bytes
(no pickling, sent straight from the caller's ``bytes``), the worker answers
with a status, a length and a pickled :class:`Analysis` that leaves out the
message bytes, which the parent has already and puts back.  Every wait in
the parent is a non-blocking socket operation of the event loop.  A worker
whose reply is in goes at once to the job waiting longest, which sends its
message before the caller of the finished job goes on (that caller then
renders its copies: the worker would otherwise wait through them).

Failures, all :class:`AnalysisError`:

* :class:`AnalysisTimeout`: the job used ``budget`` CPU seconds, or ran
  :data:`WALL_FACTOR` times as long in wall time, without a result; the
  worker was killed and is being replaced;
* :class:`AnalysisCrashed`: the worker died (a signal, the OOM killer, a
  ``MemoryError``, which ends the worker as its state is then suspect);
* :class:`AnalysisFailed`: ``analyse`` raised; the original ``repr`` is
  kept and the worker goes on serving;
* :class:`PoolClosed`: :meth:`AnalysisPool.close` was called.

The budget is the worker's CPU time (user and system, ``/proc/<pid>/stat``)
from when it takes the job (waiting for a free worker does not count) until
the whole result is in: the analysis and pickling its result.  On a busy
machine a worker gets less than a core, and a wall-time budget would end
sound analyses there first (each then takes the fail-closed fallback); a CPU
budget ends the same work everywhere.  A worker that uses no CPU and sends
nothing (stopped, starved) is ended after :data:`WALL_FACTOR` budgets of
wall time.  Where ``/proc`` cannot be read, the budget is wall time.  The
pool reads the worker's CPU only when a budget's worth of wall time has
passed (its CPU cannot have run faster), so a job that ends sooner costs one
read of ``/proc`` at its start.  A large result is unpickled in a thread, so
that the loop keeps getting turns meanwhile.

Workers ignore SIGINT and SIGTERM: the relay handles those and shuts the pool
down itself.  A pool that is not closed has its workers killed when the
interpreter exits.  As always with ``forkserver`` and ``spawn``, each worker
imports the main module again: a script that starts a pool needs the
``if __name__ == "__main__":`` guard (``python -m beacon_proxy`` and the
``beacon-proxy`` command are fine).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import pickle
import resource
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Literal, Protocol

from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.rules import load_rules

__all__ = [
    "INLINE_BYTES",
    "WALL_FACTOR",
    "Analyser",
    "AnalysisCrashed",
    "AnalysisError",
    "AnalysisFailed",
    "AnalysisPool",
    "AnalysisTimeout",
    "PoolClosed",
    "default_engine",
]

_log = logging.getLogger(__name__)

_JOB = struct.Struct("!Q")  # parent -> worker: message length, then the message
_REPLY = struct.Struct("!cQ")  # worker -> parent: status, payload length, then the payload
_READY = b"R"  # the analyser is built; no payload
_RESULT = b"A"  # a pickled Analysis with the message bytes left out
_RESULT_FULL = b"B"  # a pickled Analysis, message bytes included
_ERROR = b"E"  # the repr of an exception, UTF-8
_EXIT_MEMORY = 3  # a worker's exit status after a MemoryError
_SOCKET_BUFFER = 1 << 20
_JOIN_BELOW = 256 << 10  # a message or result up to this size is sent with its header
_UNPICKLE_IN_THREAD = 1 << 20  # result bytes from which unpickling leaves the loop's thread
_RETRY_MAX = 30.0  # seconds between attempts to start a replacement worker, at most

INLINE_BYTES = 2048
"""Messages up to this size the relay analyses in its own process, not in the pool.

The round trip costs more than their analysis (``bench/pool.py``: 0.12 ms
for a 2 KB plain-text message analysed in 0.01-0.03 ms).  The bound is the
event loop's: the dearest 2 KB we could craft (a run of ``<``; deep MIME
nesting, hundreds of parts or images: ``tests/rewrite/hostile.py``) holds the
loop 1.3 ms, under the relay's 2 ms bound for a stall; at 4 KB a run of ``<``
takes 2.6 ms.  The analysis is linear in the message
(``tests/rewrite/test_linear.py``), so no small message can run long; larger
ones keep the pool and its budget.
"""


class AnalysisError(Exception):
    """Analysis in the pool did not produce a result."""


class AnalysisTimeout(AnalysisError):
    """The job exceeded its budget; its worker was killed and is being replaced."""


class AnalysisCrashed(AnalysisError):
    """The worker died during the job; it is being replaced."""


class AnalysisFailed(AnalysisError):
    """``analyse`` raised in the worker; the message holds the original exception's repr."""


class PoolClosed(AnalysisError):
    """The pool is closed (or was closed while the job waited or ran)."""


class Analyser(Protocol):
    """What a worker runs: :class:`~beacon_proxy.rewrite.engine.Engine` or a test double."""

    def analyse(self, data: bytes) -> Analysis: ...


def default_engine(rules: str | Path | None = None, allow: tuple[str, ...] = (),
                   text: str | None = None) -> Engine:
    """The analyser a worker builds by default: the engine with these tracker rules
    (``allow``: URL prefixes no rule may match; ``text``: the rules file's text, read
    once by the parent - see :func:`load_rules`)."""
    return Engine(load_rules(rules, allow=allow, text=text))


# -- the worker process ---------------------------------------------------------


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or None at end of input (the parent closed the pool)."""
    chunks = [b""]
    while size:
        chunk = sock.recv(size, socket.MSG_WAITALL)  # one allocation for a whole message
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return chunks[-1] if len(chunks) <= 2 else b"".join(chunks)


def _reply(sock: socket.socket, status: bytes, payload: bytes = b"") -> None:
    header = _REPLY.pack(status, len(payload))
    if len(payload) <= _JOIN_BELOW:
        sock.sendall(header + payload)  # one system call
    else:
        sock.sendall(header)
        sock.sendall(payload)


class _Unpicklable(Exception):
    """The analysis could not be pickled (its ``__cause__`` says why)."""


def _dump(analysis: Analysis, data: bytes) -> tuple[bytes, bytes]:
    """The result to send: without the message bytes when they are the ones received."""
    status = _RESULT_FULL
    if analysis.data is data and analysis.tree.data is data:
        status = _RESULT
        analysis = replace(analysis, data=b"", tree=replace(analysis.tree, data=b""))
    try:
        return status, pickle.dumps(analysis, pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        raise
    except Exception as exc:
        raise _Unpicklable from exc


def _serve(sock: socket.socket, factory: Callable[[], Analyser],
           memory_limit: int | None = None) -> None:
    """A worker's life: build the analyser, then answer jobs until the parent hangs up.

    ``memory_limit``: bytes of address space (``RLIMIT_AS``); past it an allocation
    raises MemoryError, which ends the worker (:class:`AnalysisCrashed`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if memory_limit is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with sock:
        try:
            analyser = factory()
        except BaseException as exc:
            _reply(sock, _ERROR, _text(repr(exc)))
            return
        _reply(sock, _READY)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the parent left
            _serve_jobs(sock, analyser)


def _serve_jobs(sock: socket.socket, analyser: Analyser) -> None:
    while True:
        header = _recv_exactly(sock, _JOB.size)
        data = None if header is None else _recv_exactly(sock, _JOB.unpack(header)[0])
        if data is None:
            return
        try:
            status, payload = _dump(analyser.analyse(data), data)
        except MemoryError:
            os._exit(_EXIT_MEMORY)  # nothing in this process can be trusted now
        except _Unpicklable as exc:
            status, payload = _ERROR, _text(f"cannot pickle the analysis: {exc.__cause__!r}")
        except Exception as exc:
            status, payload = _ERROR, _text(repr(exc))
        del data
        _reply(sock, status, payload)


def _text(message: str) -> bytes:
    return message.encode("utf-8", "backslashreplace")


# -- the parent -------------------------------------------------------------------


class _Gone(Exception):
    """The worker's socket reached end of input: the worker died."""


@dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    sock: socket.socket
    pid: int
    gone: bool = False  # its socket reached end of input: it died (or is dying)
    discarded: bool = False


def _kill_all(live: dict[int, BaseProcess]) -> None:
    """At interpreter exit (or when an unclosed pool is collected): kill what is left.

    Runs before ``multiprocessing`` joins its children at exit, which would
    otherwise wait forever for workers that ignore SIGTERM.
    """
    for pid in list(live):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _kill(worker: _Worker) -> None:
    """SIGKILL the worker, unless it is known to have died.

    By pid rather than ``Process.kill()``, which does nothing once the fork
    server has gone (it then reports every worker as ended, alive or not).
    """
    if worker.gone:
        with contextlib.suppress(OSError, ValueError):
            worker.process.kill()  # only if still running: its pid may be free for reuse
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(worker.pid, signal.SIGKILL)


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode == _EXIT_MEMORY:
        return "out of memory (MemoryError: its memory limit, or the machine's)"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


#: A job that uses no CPU is ended after this many budgets of wall time.
WALL_FACTOR = 4.0
_MIN_WAIT = 0.01  # seconds between reads of a worker's CPU, at least
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """The CPU seconds (user + system) process ``pid`` has used, or None where
    ``/proc/<pid>/stat`` cannot be read (another system, the process gone)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)  # a few hundred bytes; no buffered file object per job
    except OSError:
        return None
    finally:
        os.close(fd)
    # After the command name, which may hold spaces and parentheses: state is field 3,
    # utime and stime fields 14 and 15.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (IndexError, ValueError):
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AnalysisPool:
    """``workers`` processes running :meth:`Engine.analyse`, one job each at a time.

    ``rules``: the tracker rules file for the default engine (the packaged
    rules when None).  ``engine_factory``: instead, a picklable callable (a
    module-level function, or a ``functools.partial`` of one) that each worker
    calls once to build its analyser - the test hook.  ``start_method``:
    ``"forkserver"`` (default) or ``"spawn"``.  ``start_timeout``: seconds a
    new worker may take to build its analyser.  ``stop_timeout``: seconds
    :meth:`close` gives an idle worker to exit before killing it.  ``wall_factor``:
    a job is ended after this many budgets of wall time whatever CPU it used.
    ``memory_limit``: each worker's address space in bytes (None: unlimited); a job
    that needs more ends its worker, as a MemoryError does (:class:`AnalysisCrashed`).
    """

    def __init__(self, workers: int | None = None, *, rules: str | Path | None = None,
                 engine_factory: Callable[[], Analyser] | None = None,
                 start_method: Literal["forkserver", "spawn"] = "forkserver",
                 start_timeout: float = 60.0, stop_timeout: float = 5.0,
                 wall_factor: float = WALL_FACTOR, memory_limit: int | None = None) -> None:
        if memory_limit is not None and memory_limit <= 0:
            raise ValueError(f"memory_limit must be positive, not {memory_limit!r}")
        self._memory_limit = memory_limit
        if not wall_factor >= 1:
            raise ValueError(f"wall_factor must be at least 1, not {wall_factor!r}")
        self._wall_factor = wall_factor
        if workers is None:
            workers = min(2, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError("an analysis pool needs at least one worker")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start method {start_method!r}: use 'forkserver' or 'spawn' "
                             "(a forked child inherits the relay's threads' locks)")
        if engine_factory is not None and rules is not None:
            raise ValueError("give the rules path or an engine factory, not both")
        self.size = workers
        self._factory: Callable[[], Analyser] = (
            engine_factory or functools.partial(default_engine, rules))
        self._context: ForkServerContext | SpawnContext = (
            multiprocessing.get_context("spawn") if start_method == "spawn"
            else multiprocessing.get_context("forkserver"))
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._started = False
        self._closed = False
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._quiet: asyncio.Event | None = None  # set while no job runs
        self._spawners: set[asyncio.Task[None]] = set()
        self._reapers: dict[int, asyncio.Task[int | None]] = {}  # by pid
        self._live: dict[int, BaseProcess] = {}  # every worker process not yet reaped
        self._finalizer = Finalize(self, _kill_all, args=(self._live,), exitpriority=10)

    # -- state ------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (idle, busy, and ones being killed)."""
        return sorted(self._live)

    @property
    def busy(self) -> int:
        """Jobs running now (at most ``size``)."""
        return len(self._busy)

    @property
    def waiting(self) -> int:
        """Callers waiting for a free worker."""
        return sum(not f.done() for f in self._waiters)

    @property
    def closed(self) -> bool:
        return self._closed

    def _closing(self) -> bool:  # for mypy: self._closed may change across an await
        return self._closed

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and wait until each has built its analyser.

        Raises :class:`AnalysisError` (and leaves no process behind) when a
        worker cannot start, e.g. because the rules do not load.
        """
        if self._started:
            raise RuntimeError("the analysis pool was already started")
        self._started = True
        self._quiet = asyncio.Event()
        self._quiet.set()
        results = await asyncio.gather(*(self._spawn() for _ in range(self.size)),
                                       return_exceptions=True)
        workers = [r for r in results if isinstance(r, _Worker)]
        errors = [r for r in results if not isinstance(r, _Worker)]
        if errors:
            for worker in workers:
                self._discard(worker, kill=True)
            await self._await_reapers()
            self._closed = True
            error = errors[0]
            if not isinstance(error, Exception):
                raise error  # CancelledError, KeyboardInterrupt
            if isinstance(error, AnalysisError):
                raise error
            raise AnalysisError(f"cannot start an analysis worker: {error!r}") from error
        for worker in workers:
            self._put(worker)  # to callers that came during start(), if any

    async def close(self) -> None:
        """Stop the workers; no process is left behind.

        Idle workers exit on their own (killed after ``stop_timeout``); running
        jobs are killed and raise :class:`PoolClosed`, as do callers waiting
        for a worker and any later :meth:`analyse`.  Safe to call twice.
        """
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("the analysis pool was closed"))
        self._waiters.clear()
        for task in list(self._spawners):
            task.cancel()
        while self._spawners:
            await asyncio.gather(*self._spawners, return_exceptions=True)
        idle, self._idle = self._idle, []
        for worker in idle:
            self._discard(worker, kill=False)
        for worker in list(self._busy):
            _kill(worker)  # its analyse() reads the end of input and cleans up
        if self._quiet is not None:
            await self._quiet.wait()
        await self._await_reapers()
        self._finalizer.cancel()

    async def __aenter__(self) -> AnalysisPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- jobs -----------------------------------------------------------------------

    async def analyse(self, data: bytes, *, budget: float) -> Analysis:
        """The analysis of ``data``, computed in a worker within ``budget`` CPU seconds.

        Waits (without blocking the loop) while all workers are busy; the budget
        counts the worker's CPU from when it takes the job until its result is in,
        and at most :data:`WALL_FACTOR` times as much wall time (``math.inf``: no
        limit).  If the calling task is cancelled, the job is abandoned and
        its worker killed and replaced.  Raises the :class:`AnalysisError` s of
        the module docstring.
        """
        if not budget > 0:
            raise ValueError(f"budget must be positive, not {budget!r}")
        if not self._started:
            raise RuntimeError("the analysis pool is not started")
        worker = await self._acquire()
        assert self._quiet is not None
        self._busy.add(worker)
        self._quiet.clear()
        healthy = False
        try:
            try:
                status, payload = await self._within(worker, data, budget)
            except TimeoutError as exc:
                if self._closed:
                    raise PoolClosed("the analysis pool was closed") from None
                raise AnalysisTimeout(
                    f"analysis of a {len(data)}-byte message {exc.args[0]} (budget "
                    f"{budget:g} CPU s); worker {worker.pid} killed") from None
            except (_Gone, OSError) as exc:
                exitcode = await self._reaped(worker)
                if self._closed:
                    raise PoolClosed("the analysis pool was closed") from None
                raise AnalysisCrashed(
                    f"analysis worker {worker.pid} died ({_describe(exitcode)}) "
                    f"on a {len(data)}-byte message") from exc
            healthy = True
            # The worker is free once its whole reply is in.  The job waiting for it is
            # handed it now and given the loop's turn to send it, before this result is
            # read and its copies are rendered in this task (a new message's: ~2 ms),
            # which the worker would otherwise wait through (bench/personal_relay.py).
            if self._release(worker, healthy):
                await asyncio.sleep(0)
            if status == _ERROR:
                raise AnalysisFailed(bytes(payload).decode("utf-8", "replace"))
            try:
                analysis = await _unpickle(payload)
            except Exception as exc:
                raise AnalysisFailed(f"cannot read the worker's result: {exc!r}") from exc
            if not isinstance(analysis, Analysis):
                raise AnalysisFailed(f"the worker returned {type(analysis).__name__}")
            if status == _RESULT:
                analysis = replace(analysis, data=data, tree=replace(analysis.tree, data=data))
            return analysis
        finally:
            if not healthy:  # (a healthy one was released above, once its reply was in)
                self._release(worker, healthy)

    def _release(self, worker: _Worker, healthy: bool) -> bool:
        """A job is over: a healthy worker serves the next, any other is replaced.  True
        when a waiting job was handed the worker."""
        assert self._quiet is not None
        self._busy.discard(worker)
        if not self._busy:
            self._quiet.set()
        if healthy and not self._closed:
            return self._put(worker)
        self._discard(worker, kill=True)
        if not self._closed:
            self._replenish()
        return False

    async def _within(self, worker: _Worker, data: bytes, budget: float
                      ) -> tuple[bytes, bytearray]:
        """The job's reply, unless the worker uses ``budget`` CPU seconds first (or
        ``wall_factor`` times that in wall time): TimeoutError saying which."""
        # Sent now, while this task runs (what the socket's buffer takes): a task's first
        # step waits for the loop's next turn, and the task that handed this worker over
        # runs on until it awaits (see analyse()).
        rest = self._sent_now(worker, data)
        if math.isinf(budget):
            return await self._job(worker, rest)
        loop = asyncio.get_running_loop()
        job = asyncio.ensure_future(self._job(worker, rest))
        start, cpu0 = loop.time(), _cpu_seconds(worker.pid)
        wall_end = start + budget * self._wall_factor
        wait = budget  # its CPU cannot run ahead of the clock: nothing to read sooner
        try:
            while True:
                done, _ = await asyncio.wait((job,), timeout=wait)
                if done:
                    return job.result()
                cpu = _cpu_seconds(worker.pid)
                used = loop.time() - start if cpu is None or cpu0 is None else cpu - cpu0
                if used >= budget:
                    raise TimeoutError(f"used {used:.2f} CPU s")
                if loop.time() >= wall_end:
                    raise TimeoutError(f"ran {loop.time() - start:.1f} s with "
                                       f"{used:.2f} CPU s")
                wait = min(max(budget - used, _MIN_WAIT), max(wall_end - loop.time(), 0.0))
        finally:
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)

    @staticmethod
    def _sent_now(worker: _Worker, data: bytes) -> list[bytes]:
        """What is left to send of the job ``data`` (its length, then the bytes) after
        sending what the socket takes now; a large message is left whole (sent from the
        caller's bytes, no copy, by :meth:`_job`, its budget counting)."""
        if len(data) > _JOIN_BELOW:
            return [_JOB.pack(len(data)), data]
        message = _JOB.pack(len(data)) + data
        try:
            sent = worker.sock.send(message)
        except (BlockingIOError, InterruptedError):
            sent = 0
        return [message[sent:]] if sent < len(message) else []

    async def _job(self, worker: _Worker, rest: list[bytes]) -> tuple[bytes, bytearray]:
        """The rest of a job (:meth:`_sent_now`), then its reply."""
        loop = asyncio.get_running_loop()
        for piece in rest:
            await loop.sock_sendall(worker.sock, piece)
        return await self._reply(worker)

    @staticmethod
    async def _reply(worker: _Worker) -> tuple[bytes, bytearray]:
        loop = asyncio.get_running_loop()
        header = await _recv_into(loop, worker.sock, bytearray(_REPLY.size))
        status, size = _REPLY.unpack(header)
        return status, await _recv_into(loop, worker.sock, bytearray(size))

    # -- workers --------------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise PoolClosed("the analysis pool is closed")
        if self._idle and not self._waiters:
            return self._idle.pop()
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._put(waiter.result())  # handed a worker just as the caller gave up
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _put(self, worker: _Worker) -> bool:
        """A free worker: to the first caller still waiting (True), else to the idle
        list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return True
        self._idle.append(worker)
        return False

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair()
        for sock in (parent, child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        process = self._context.Process(
            target=_serve, args=(child, self._factory, self._memory_limit),
            name="beacon-proxy-analysis", daemon=False)
        try:
            process.start()  # a short round trip to the fork server; the worker starts later
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # the worker has its own copy: its death is our end of input
        assert process.pid is not None
        parent.setblocking(False)
        worker = _Worker(process, parent, process.pid)
        self._live[worker.pid] = process
        try:
            async with asyncio.timeout(self._start_timeout):
                status, payload = await self._reply(worker)
        except BaseException as exc:
            exitcode = None
            if isinstance(exc, _Gone | OSError):
                exitcode = await self._reaped(worker)
            else:
                self._discard(worker, kill=True)
            if isinstance(exc, TimeoutError):
                raise AnalysisError(f"analysis worker {worker.pid} did not start within "
                                    f"{self._start_timeout:g} s") from None
            if isinstance(exc, _Gone | OSError):
                raise AnalysisError(f"analysis worker {worker.pid} died while starting "
                                    f"({_describe(exitcode)})") from exc
            raise
        if status != _READY:
            self._discard(worker, kill=True)
            raise AnalysisError(f"analysis worker cannot build its analyser: "
                                f"{bytes(payload).decode('utf-8', 'replace')}")
        return worker

    def _replenish(self) -> None:
        """Start a worker in place of a discarded one, retrying until it works."""
        task = asyncio.get_running_loop().create_task(self._replace_worker())
        self._spawners.add(task)
        task.add_done_callback(self._spawners.discard)

    async def _replace_worker(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                worker = await self._spawn()
            except Exception as exc:  # e.g. out of processes: keep trying, the pool stays small
                _log.error("cannot start an analysis worker, retrying in %g s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            if self._closing():  # close() came while the worker started
                self._discard(worker, kill=False)
            else:
                self._put(worker)
            return

    def _discard(self, worker: _Worker, *, kill: bool) -> None:
        """Stop using ``worker``: kill it (or let it exit on end of input) and reap it."""
        if worker.discarded:
            return
        worker.discarded = True
        if kill:
            _kill(worker)
        worker.sock.close()  # an idle worker reads end of input and exits
        task = asyncio.get_running_loop().create_task(self._reap(worker))
        self._reapers[worker.pid] = task
        task.add_done_callback(lambda _: self._reapers.pop(worker.pid, None))

    async def _reaped(self, worker: _Worker) -> int | None:
        """The exit code of a worker that has died or is dying (killed to be sure)."""
        worker.gone = True
        self._discard(worker, kill=True)
        task = self._reapers.get(worker.pid)
        if task is None:  # already reaped
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None

    async def _reap(self, worker: _Worker) -> int | None:
        """Wait (without blocking) until the worker has exited, kill it if it lingers."""
        process = worker.process
        try:
            if not await _exited(process, self._stop_timeout):
                _kill(worker)
                await _exited(process, None)
            process.join()
            exitcode = process.exitcode
            process.close()
            return exitcode
        finally:
            self._live.pop(worker.pid, None)

    async def _await_reapers(self) -> None:
        while self._reapers:
            await asyncio.gather(*self._reapers.values(), return_exceptions=True)


async def _unpickle(payload: bytearray) -> object:
    """The worker's result; a large one is unpickled in a thread.

    Unpickling holds the GIL but runs Python code (``NamedTuple.__new__``,
    dataclass ``__setstate__``), so the loop's thread gets its turn every
    switch interval (5 ms) instead of waiting for the whole result (tens of
    milliseconds for a 10 MB message).
    """
    if len(payload) < _UNPICKLE_IN_THREAD:
        return pickle.loads(payload)  # noqa: S301 - our own worker's output
    return await asyncio.get_running_loop().run_in_executor(None, pickle.loads, payload)


async def _recv_into(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     buffer: bytearray) -> bytearray:
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            raise _Gone
        got += n
    return buffer


async def _exited(process: BaseProcess, timeout: float | None) -> bool:
    """Whether the process ended within ``timeout`` seconds (its sentinel became readable)."""
    if process.exitcode is not None:
        return True
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    sentinel = process.sentinel
    loop.add_reader(sentinel, _wake, ready)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sentinel)
    return True
