"""The durable on-disk queue.

Layout under the spool directory (queue state is a directory; a message
moves between states by ``rename``)::

    log/        <n>.seg: new messages, one record each, group-committed; <n>.done:
                the ids let go of (see :mod:`beacon_proxy.spool.log`)
    tmp/        queue files being written; never acknowledged, removed on start
    active/     committed messages waiting for (or in) a delivery attempt
    deferred/   messages waiting for their next retry time
    journal/    <id>.log: per-recipient outcomes and attempt records
    corrupt/    items that could not be read, kept for a human to look at
    control/    operator requests for the running relay (``retry.<id>``,
                ``delete.<id>``), written by ``beacon-proxy queue``
    lock        the running relay's pid, under an exclusive ``flock``
                (:meth:`Spool.lock`): one relay per spool

A new message goes to the log (:mod:`beacon_proxy.spool.log`): one record appended
and made durable with the others of its batch, by the log's own thread; the SMTP
side answers ``250`` after that.  It becomes a queue file only if it is still
queued after its first attempt (:meth:`Spool.finish_attempt` writes it out, then
lets go of the record), at recovery (every live record is written out), or when a
worker adopts another's part; with ``Spool(..., log=False)`` every new message is
a queue file from the start, as follows.

A queue file is ``MAGIC <envelope length> <data length>\\n``, the envelope as
JSON, ``\\n``, then the message exactly as received.  :meth:`Spool.put`
writes it to ``tmp/``, ``fdatasync``\\ s it (the data and the size, all a
reader needs), renames it into ``active/`` and then waits for an ``fsync`` of
``active/`` that *started after* its rename -- all four in one job on the
puts' own threads, one hop from the event loop and back -- and only when that
job has returned may the SMTP side answer ``250``.  That directory fsync is a
group commit run by the waiting threads themselves (:class:`_DirSync`, leader
and followers): concurrent puts share one, so under load a message costs one
data sync and a fraction of a directory sync instead of two syncs (a leader
first gathers the puts already writing, so that its sync covers them too).  A put
cancelled while its job runs is not acknowledged; its job still finishes, and
a message it renamed into ``active/`` is recovered at the next start.

The journal is append-only, one JSON object per line: ``{"r": index, "s":
state, "reply": ..., "t": time}`` for a recipient's outcome, ``{"a":
attempts, "next": time, "t": time}`` at the end of a delivery attempt and
``{"f": failures, "next": time, "error": ..., "t": time}`` after an attempt
that raised.  A
recipient recorded ``delivered``/``bounced``/``suppressed`` is never tried
again, also after a crash: each outcome is written (not yet fsynced) as soon
as it is known -- handed to the journal's own writer thread
(:meth:`Spool.record_soon`, :class:`_JournalWriter`: no thread-pool hop per
recipient, which cost a 1000-recipient message 1000 hops), which writes it at
once, in order -- and the journal is fsynced at the end of every attempt that
leaves the message queued (:meth:`Spool.finish_attempt`,
:meth:`Spool.record_failure`, which first wait until every line handed over
before them is written).  An attempt that makes every recipient final
is not fsynced at all: :meth:`Spool.remove` unlinks the queue file first and
the journal second (if it may exist: :meth:`Spool._remove_sync`), so
whatever part of that a crash undoes, recovery finds
either nothing (done) or the queue file with the outcomes that reached the
disk, and retries the rest: a redelivery at worst, never a loss.  The removal
itself is handed to the journal's writer thread (:meth:`Spool.remove_soon`),
behind the message's lines, and not waited for -- or, for a message with no
journal line (nearly all: one recipient, delivered at the first attempt), to the
log's thread (:meth:`SegmentLog.call_soon`), which is awake for the puts anyway:
a crash before the thread does it is the same case (the queue file, or the
record, is still there).  The thread logs
``removed`` once the files are gone; a failed unlink journals the delivery the
removal stood for, is logged (``remove_failed``, and no ``removed``), and leaves
the finished message for the next start to remove.  The window
is that of an at-least-once MTA such as Postfix: a *process* crash retries
a delivered recipient only if it falls between the upstream's ``250`` and
the journal write (or the unlink) that follows it (both done by the writer
thread, or by the log's after the batch it is writing: a wait for the GIL, or
for that batch's ``fdatasync``, a few milliseconds, in which the delivery
worker may already send the next copies); an *operating-system*
crash or power loss can also retry the recipients delivered since the
journal's last fsync (in this attempt, or all of them when the message was
being removed).  A torn last line (a crash mid-write) is ignored.

All file I/O runs in threads, never on the event loop: puts in their own pool
(each holds its thread through the directory sync), reads and attempt ends in
another, journal lines and removals in the journal's writer thread (removals of
messages with no journal in the log's).  The
synchronous ``*_sync`` readers serve the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from beacon_proxy.log import event
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.spool.fileio import claim_name, fsync_dir, write_all
from beacon_proxy.spool.log import (
    LogRecord,
    SegmentLog,
    answer_soon,
    live_records,
    make_directory,
    mark_done,
    orphan_done_files,
    read_envelope,
    read_record,
    remove_segment,
    segments,
    take_all,
)

__all__ = [
    "FINAL_STATES",
    "QueueEntry",
    "RecipientStatus",
    "Spool",
    "SpoolCorruptError",
    "SpoolInUse",
    "fsync_dir",
]

MAGIC = b"BEACONQ1"
FINAL_STATES = frozenset({"delivered", "bounced", "suppressed"})
RecipientState = Literal["pending", "deferred", "delivered", "bounced", "suppressed"]
QueueState = Literal["active", "deferred"]
_STATES: tuple[QueueState, ...] = ("active", "deferred")
_DONE = "all recipients done"  # why a finished message is removed (the removed event)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class SpoolCorruptError(Exception):
    """A queue file or journal cannot be read back."""


class SpoolInUse(OSError):
    """Another process (a relay) holds the spool's lock."""


@dataclass(slots=True)
class RecipientStatus:
    address: str
    state: RecipientState = "pending"
    reply: str = ""
    updated: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(slots=True)
class QueueEntry:
    """A queued message's envelope and delivery state (not its bytes)."""

    envelope: Envelope
    recipients: list[RecipientStatus]
    state: QueueState = "active"
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float | None = None
    size_on_disk: int = 0
    failures: int = 0  # attempts that raised (journaled), see Scheduler.max_failures
    deleted: bool = False  # removed by an operator while in memory

    @property
    def queue_id(self) -> str:
        return self.envelope.queue_id

    def pending(self) -> list[int]:
        return [i for i, r in enumerate(self.recipients) if not r.final]

    @classmethod
    def new(cls, envelope: Envelope) -> QueueEntry:
        return cls(envelope, [RecipientStatus(a) for a in envelope.recipients])


class _DirSync:
    """Group commit of one directory's ``fsync``, in the spool's threads.

    :meth:`sync` returns once an ``fsync`` of the directory that *started after
    the call* has completed, so every rename its thread did before the call is
    durable.  Leader and followers: a caller that finds no sync running runs one
    itself (the leader) for everybody waiting; a caller arriving while a sync runs
    waits for the next one (which started after it arrived: the running one may not
    cover its rename), whose leader is one of the callers waiting for it.  Syncs are
    numbered in the order they start and never overlap, so "a sync numbered at least
    ``started + 1`` at the time of the call has succeeded" is exactly the promise.
    N concurrent puts cost about one directory sync per sync duration instead of N;
    a failed sync fails every caller counting on it (their messages are not
    acknowledged), and the next caller syncs again.

    Gathering: a leader first waits for the puts that are between the start of
    their write and their rename at that moment (:meth:`writing`, :meth:`written`),
    so that one sync covers their renames too; callers arriving meanwhile join it
    (it has not started, so it follows their renames).  Without it a put's sync
    began as soon as its own rename ended, while the next put was still in its
    ``fdatasync``: at a few hundred messages a second nearly every put paid a
    directory sync of its own (``bench/spool.py``, 2 sessions: 1.00 directory sync
    per message, 0.50 with gathering).  The wait is bounded without a timer: only
    puts already writing are waited for (never one that starts later), each ends
    its write with a rename or an error (:meth:`written` runs however it ends), and
    their writes do not wait for anything the leader holds.  It costs the leader's
    put at most the rest of one other put's write; under load the puts finish
    sooner, as their syncs no longer queue behind each other.

    Why in the threads: the put's thread job waits here after its rename, so the
    event loop sees one completion per put (one hand-off) instead of a hop for the
    write and a second, shared one for the sync.  ``on_wait`` (tests only) is called,
    under the lock, with the number of callers waiting for a sync to end;
    ``on_gather`` (tests only) with the number of writes a leader waits for.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cond = threading.Condition(threading.Lock())
        self._started = 0  # number of the last sync started
        self._ended = 0  # number of the last sync ended (they run one at a time)
        self._succeeded = 0  # number of the last sync that succeeded
        self._error: BaseException | None = None  # of the last sync that failed
        self._running = False
        self._gathering = False  # the leader of sync number _started waits for writers
        self._writers: set[int] = set()  # tickets of the puts between write and rename
        self._tickets = 0
        self._waiting = 0
        self.on_wait: Callable[[int], None] | None = None
        self.on_gather: Callable[[int], None] | None = None

    def writing(self) -> int:
        """Note a put that starts its write (its rename comes next); returns its ticket
        for :meth:`written`, which must follow however the write ends."""
        with self._cond:
            self._tickets += 1
            self._writers.add(self._tickets)
            return self._tickets

    def written(self, ticket: int) -> None:
        with self._cond:
            self._writers.discard(ticket)
            if self._gathering:
                self._cond.notify_all()

    def sync(self) -> None:
        with self._cond:
            # A running sync may have started before the rename; one still gathering
            # has not started: it covers the rename.
            needed = self._started if self._gathering else self._started + 1
            while self._running and self._ended < needed:
                self._waiting += 1
                if self.on_wait is not None:
                    self.on_wait(self._waiting)
                self._cond.wait()
                self._waiting -= 1
            if self._ended >= needed:  # another caller led a sync that covers this one
                if self._succeeded >= needed:
                    return
                assert self._error is not None
                raise self._error
            self._running = True  # none runs, none that counts has ended: lead one
            self._started += 1
            number = self._started
            # Gather: wait for the puts already writing (never for later ones, nor for
            # a timer) so that their renames share this sync.
            pending = set(self._writers)
            if pending:
                self._gathering = True
                if self.on_gather is not None:
                    self.on_gather(len(pending))
                while not pending.isdisjoint(self._writers):
                    self._cond.wait()
                self._gathering = False
        error: BaseException | None = None
        try:
            fsync_dir(self._path)
        except BaseException as exc:
            error = exc
        with self._cond:
            self._running = False
            self._ended = number
            if error is None:
                self._succeeded = number
            else:
                self._error = error
            self._cond.notify_all()
        if error is not None:
            raise error


_Answer = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
# A wait for the lines of one journal (None: for everything handed over before it).
_Barrier = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", str | None]


@dataclass(slots=True)
class _Removal:
    """A finished message to remove, after the lines handed over before it."""

    queue_id: str
    last: tuple[int, str] | None  # an unjournaled delivery, journaled if the unlink fails
    done: _Answer | None  # who waits for it (None: nobody; a failure is logged)
    reason: str  # why it leaves the queue: the ``removed`` event's, once it has


class _JournalWriter:
    """Journal outcome lines, appended in order by a thread of its own, and the
    removals of finished messages after them.

    Why: a delivery worker used to hop to the thread pool and wait for every
    recipient's line (about 0.1 ms of CPU per copy, most of it the hop: a future,
    a thread wake-up, a wake-up of the event loop), 1000 hops for a message to
    1000 recipients.  :meth:`put` only queues the line (no future, no wake-up of
    the loop); the thread wakes, takes every line queued meanwhile and writes each
    journal's lines with one ``write``.  :meth:`flushed` waits until every line
    queued before it is written (one hop, per attempt rather than per copy) and
    raises the first write error of that journal since the last wait; with no line
    handed over since its last wait (a 1-recipient message, whose last outcome the
    scheduler leaves to the unlink) it returns at once: 0.6 us instead of a 35-40 us
    round trip through the thread and back to the loop.

    :meth:`remove` queues a message's removal behind its lines: this thread writes
    them first, so no barrier (a round trip through the loop) is needed before the
    unlink, and nothing comes back to the loop unless somebody waits
    (:meth:`Spool.remove`, :meth:`settled`).
    """

    def __init__(self, append: Callable[[str, bytes], None],
                 remove: Callable[[str, tuple[int, str] | None], None]) -> None:
        self._append = append
        self._remove = remove
        self._queue: queue.SimpleQueue[tuple[str, bytes] | _Barrier | _Removal | None] = (
            queue.SimpleQueue())
        self._errors: dict[str, BaseException] = {}  # journal -> first failed write
        # journals with lines put since their last wait (the event loop's only: put and
        # flushed run there); a wait for any other has nothing to wait for and no new error
        self._unflushed: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="spool-journal", daemon=True)
        self._thread.start()

    def put(self, queue_id: str, payload: bytes) -> None:
        self._unflushed.add(queue_id)
        self._queue.put((queue_id, payload))

    def remove(self, queue_id: str, last: tuple[int, str] | None,
               done: _Answer | None, reason: str) -> None:
        """Remove ``queue_id``'s files once the lines handed over before are written."""
        self._unflushed.discard(queue_id)  # its lines go before the removal, in order
        self._queue.put(_Removal(queue_id, last, done, reason))

    async def flushed(self, queue_id: str | None) -> None:
        """Wait for the lines of ``queue_id`` handed over before (``None``: for every
        line and removal handed over before)."""
        if queue_id is not None:
            if queue_id not in self._unflushed:
                return  # no line since the last wait (a 1-recipient message's removal)
            self._unflushed.discard(queue_id)  # lines put from now on need a wait of their own
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((loop, done, queue_id))
        await done

    def close(self) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            items = take_all(self._queue)
            lines: dict[str, list[bytes]] = {}  # per journal, in order
            for item in items:
                if isinstance(item, _Removal):
                    self._removal(item, lines.pop(item.queue_id, None))
                elif item is None or len(item) == 3:
                    self._write(lines)
                    lines = {}
                    if item is None:
                        return
                    loop, done, queue_id = item
                    error = None if queue_id is None else self._errors.pop(queue_id, None)
                    _answer((loop, done), error)
                else:
                    lines.setdefault(item[0], []).append(item[1])
            self._write(lines)

    def _write(self, lines: dict[str, list[bytes]]) -> None:
        for queue_id, payloads in lines.items():
            try:
                self._append(queue_id, b"".join(payloads))
            except Exception as exc:
                self._errors.setdefault(queue_id, exc)

    def _removal(self, item: _Removal, payloads: list[bytes] | None) -> None:
        """Write the message's last lines, then remove it (:func:`_remove_and_tell`).  A
        failed line no longer matters once the message is gone."""
        if payloads:
            self._write({item.queue_id: payloads})
        self._errors.pop(item.queue_id, None)
        _remove_and_tell(self._remove, item)

    def has_lines(self, queue_id: str) -> bool:
        """Whether lines of ``queue_id`` were handed over and not waited for (the event
        loop's view: put and flushed run there), so may not be written yet."""
        return queue_id in self._unflushed


def _answer(waiter: _Answer, error: BaseException | None) -> None:
    loop, done = waiter
    answer_soon(loop, [done], error)


def _remove_and_tell(remove: Callable[[str, tuple[int, str] | None], None],
                     item: _Removal) -> None:
    """Remove a finished message and log ``removed`` (here, once it is gone: logged when
    handed over, it told of a removal that might still fail, or never happen if the
    process died first).  A failed removal is answered to whoever waits for it, else
    logged (the message stays queued: see :meth:`Spool.remove_soon`).  Run by the
    journal's thread, or by the log's for a message with no journal (see there)."""
    try:
        remove(item.queue_id, item.last)
    except Exception as exc:
        if item.done is not None:
            _answer(item.done, exc)
        else:
            event("remove_failed", logging.ERROR, queue_id=item.queue_id,
                  error=f"{type(exc).__name__}: {exc}",
                  kept="until the next start, which finishes it")
        return
    event("removed", queue_id=item.queue_id, reason=item.reason)
    if item.done is not None:
        _answer(item.done, None)


#: One encoder for every journal line (``json.dumps`` with options builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _line(line: dict[str, Any]) -> bytes:
    """One journal line."""
    return _JSON.encode(line).encode() + b"\n"


def _keep(directory: Path, stem: str, chunk: bytes) -> Path:
    """Write ``chunk`` durably to a new file ``<stem>[-n].log`` of ``directory``.

    Never over an existing one: segments are numbered from 1 again after a recovery
    removed them all (and each part numbers its own), so a later damaged stretch can
    have the name of one kept before.  Synced before the segment that held it goes."""

    def create(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, [chunk])
            os.fdatasync(fd)
        finally:
            os.close(fd)

    return claim_name(directory, f"{stem}.log", "", create)


def _header(envelope_json: bytes, data_len: int) -> bytes:
    return MAGIC + b" %d %d\n" % (len(envelope_json), data_len)


def _parse_header(line: bytes) -> tuple[int, int]:
    parts = line.rstrip(b"\n").split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit() or not parts[2].isdigit():
        raise SpoolCorruptError("bad queue file header")
    return int(parts[1]), int(parts[2])


class Spool:
    """A directory of queue files.  Create, :meth:`open`, then use."""

    def __init__(self, root: Path, *, threads: int = 4, put_threads: int = 16,
                 log: bool = True) -> None:
        """``log``: new messages go to the group-committed log (:mod:`.log`); False
        writes a queue file per message (the tests of that path)."""
        self.root = root
        self.tmp = root / "tmp"
        self.journal = root / "journal"
        self.corrupt = root / "corrupt"
        self.control = root / "control"
        self._executor: ThreadPoolExecutor | None = None
        # Puts have threads of their own: each holds its thread through the group
        # commit's directory sync, which must not make reads, journal fsyncs or
        # quarantines wait (nor they the puts).  Sized for the SMTP sessions that hand
        # a message over at once; more just queue, each still sharing a sync.
        self._put_executor: ThreadPoolExecutor | None = None
        self._threads = threads
        self._put_threads = put_threads
        self._lock_fd: int | None = None
        self._active_sync = _DirSync(root / "active")
        self._journal_writer: _JournalWriter | None = None
        # Messages whose journal may exist (see _remove_sync): lines appended by this
        # process, or journals found by recover().  Complete only after recover():
        # before it (the command line, a spool not recovered) every removal unlinks.
        self._journaled: set[str] = set()
        self._journals_known = False
        # The log of new messages (None: a queue file each).  Its places in memory are
        # the truth for the relay that holds the lock; a reader (the command line, the
        # console) finds live records by reading the segments (_scan).
        self._lane = SegmentLog(root / "log") if log else None
        self._scanned: dict[str, LogRecord] = {}  # a reader's last reading of the log

    # -- set-up -----------------------------------------------------------

    def open(self) -> None:
        """Create the directories (synchronously, at start-up)."""
        for d in (self.tmp, self.journal, self.corrupt, self.control,
                  *(self.root / s for s in _STATES)):
            d.mkdir(parents=True, exist_ok=True)
        if self._lane is not None:  # here, so that an unusable spool is found at start
            make_directory(self._lane.directory)  # its name durable in the spool
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="spool")
            self._put_executor = ThreadPoolExecutor(self._put_threads,
                                                    thread_name_prefix="spool-put")
            self._journal_writer = _JournalWriter(self._append_bytes, self._remove_now)

    def lock(self) -> None:
        """Take the spool for this process, or raise :class:`SpoolInUse` naming the pid
        of the process that has it.

        Two relays on one spool would deliver each other's messages twice, so
        the relay takes an exclusive ``flock`` on ``lock`` before it recovers
        the queue; the kernel releases it when the process ends, however it
        ends (``kill -9`` included), so a stale lock cannot block a restart.
        The command line (``beacon-proxy queue``) reads the spool without it.
        """
        if self._lock_fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SpoolInUse(f"the spool {self.root} is in use by another beacon-proxy "
                             f"(pid {holder})") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release :meth:`lock` (the file stays: it is empty of meaning without the lock)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        if self._journal_writer is not None:
            self._journal_writer.close()  # its removals let go of log records
            self._journal_writer = None
        if self._lane is not None:
            self._lane.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._put_executor is not None:
            self._put_executor.shutdown(wait=True)
            self._put_executor = None

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        assert self._executor is not None, "Spool.open() was not called"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))


    def _path(self, state: QueueState, queue_id: str) -> Path:
        return self.root / state / queue_id

    def _journal_path(self, queue_id: str) -> Path:
        return self.journal / f"{queue_id}.log"

    # -- writing ----------------------------------------------------------

    async def put(self, envelope: Envelope, data: bytes) -> None:
        """Store a new message durably.  Returns only after its data and its directory
        entry are on disk (``fdatasync`` of the file, then a group ``fsync`` of
        ``active/`` that started after the rename), or, with the log, after its record
        and every record written with it are (one ``fdatasync`` for them all)."""
        assert self._put_executor is not None, "Spool.open() was not called"
        if self._lane is not None:
            # ASCII only: a record's header is ASCII (str.isalnum() alone takes letters
            # and digits of any script, which then failed a whole batch of puts).
            if not (envelope.queue_id.isascii() and envelope.queue_id.isalnum()):
                raise ValueError(f"bad queue id {envelope.queue_id!r}")
            self._lane.start()
            await self._lane.append(envelope.queue_id, envelope.to_json(), data)
            return
        await asyncio.get_running_loop().run_in_executor(
            self._put_executor, self._put_sync, envelope, data)

    def _put_sync(self, envelope: Envelope, data: bytes) -> None:
        """The whole put in one thread job: write, ``fdatasync``, rename, then the group
        commit of ``active/`` (:class:`_DirSync`).  Cancelling the awaiting put does
        not stop the job: a message renamed into ``active/`` is then recovered at the
        next start (not acknowledged: at worst a duplicate if the client sends it again)."""
        ticket = self._active_sync.writing()
        try:
            self._write_sync(envelope, data)
        finally:
            self._active_sync.written(ticket)
        self._active_sync.sync()

    def _write_sync(self, envelope: Envelope, data: bytes) -> None:
        """Write, ``fdatasync`` and rename into ``active/`` (not yet durable there)."""
        if not envelope.queue_id.isalnum():
            raise ValueError(f"bad queue id {envelope.queue_id!r}")
        self._write_file(envelope.queue_id, envelope.to_json(), data, self.root / "active")

    def _write_file(self, queue_id: str, env: bytes, data: bytes, into: Path) -> None:
        """Write a queue file in ``tmp/``, ``fdatasync`` it and rename it into ``into``
        (its name not yet durable there: the caller syncs the directory)."""
        tmp = self.tmp / queue_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, [_header(env, len(data)), env, b"\n", data])
            os.fdatasync(fd)
            os.rename(tmp, into / queue_id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def _write_out(self, record: LogRecord, into: Path) -> None:
        """A log record as a durable queue file in ``into`` (``active/``, ``deferred/``
        or ``corrupt/``): written, synced, renamed, the directory synced."""
        env, data = read_record(record)
        self._write_file(record.queue_id, env, data, into)
        fsync_dir(into)

    async def record(self, queue_id: str, index: int, state: RecipientState, reply: str) -> None:
        """Append one recipient's outcome to the journal (written, not yet fsynced)."""
        self.record_soon(queue_id, index, state, reply)
        await self._flushed(queue_id)

    def record_soon(self, queue_id: str, index: int, state: RecipientState, reply: str) -> None:
        """Hand one recipient's outcome to the journal's writer thread, which writes it
        (not fsynced) at once, in order, without waiting for it (:class:`_JournalWriter`).
        :meth:`finish_attempt`, :meth:`record_failure`, :meth:`remove` and
        :meth:`quarantine` first wait for every line handed over before them, and
        raise a failed write of that journal."""
        assert self._journal_writer is not None, "Spool.open() was not called"
        line = {"r": index, "s": state, "reply": reply, "t": round(time.time(), 3)}
        self._journal_writer.put(queue_id, _line(line))

    async def _flushed(self, queue_id: str) -> None:
        assert self._journal_writer is not None, "Spool.open() was not called"
        await self._journal_writer.flushed(queue_id)

    async def finish_attempt(self, entry: QueueEntry) -> None:
        """Journal the end of an attempt (fsynced) and file the entry by its state."""
        await self._flushed(entry.queue_id)
        line = {"a": entry.attempts, "next": round(entry.next_attempt, 3),
                "t": round(time.time(), 3)}
        await self._run(self._finish_sync, entry.queue_id, line, entry.state)

    async def record_failure(self, entry: QueueEntry, error: str) -> None:
        """Journal an attempt that raised (fsynced) and file the entry as deferred.
        A failed write of an earlier line is not raised here: this line's fsync
        stands for the attempt, and the outcomes are still in memory."""
        with contextlib.suppress(Exception):
            await self._flushed(entry.queue_id)
        line = {"f": entry.failures, "next": round(entry.next_attempt, 3), "error": error,
                "t": round(time.time(), 3)}
        await self._run(self._finish_sync, entry.queue_id, line, entry.state)

    def _append(self, queue_id: str, lines: list[dict[str, Any]], sync: bool) -> None:
        self._append_bytes(queue_id, b"".join(_line(line) for line in lines), sync)

    def _append_bytes(self, queue_id: str, payload: bytes, sync: bool = False) -> None:
        self._journaled.add(queue_id)  # before the file can exist
        fd = os.open(self._journal_path(queue_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, payload)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _finish_sync(self, queue_id: str, line: dict[str, Any], state: QueueState) -> None:
        self._append(queue_id, [line], True)
        record = self._lane.find(queue_id) if self._lane is not None else None
        if record is not None:
            # Still queued after its first attempt: a queue file from now on (durable
            # before the record is let go of), so that the log holds short lives only.
            assert self._lane is not None
            self._write_out(record, self.root / state)
            if not self._lane.forget(queue_id):
                # Let go of meanwhile: an operator's delete (taken by this relay while
                # the file was written), which found no file to remove yet.
                self._path(state, queue_id).unlink(missing_ok=True)
            return
        other: QueueState = "deferred" if state == "active" else "active"
        src = self._path(other, queue_id)
        if src.exists():
            os.rename(src, self._path(state, queue_id))

    async def remove(self, queue_id: str, *, reason: str = _DONE) -> None:
        """Forget a finished message, and wait until it is done (raising a failed
        unlink): :meth:`remove_soon`, waited for."""
        assert self._journal_writer is not None, "Spool.open() was not called"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._journal_writer.remove(queue_id, None, (loop, done), reason)
        await done

    def remove_soon(self, queue_id: str, last: tuple[int, str] | None = None, *,
                    reason: str = _DONE) -> None:
        """Forget a finished message: the queue file first, then its journal, done by
        the journal's writer thread after the lines handed over before (so no line is
        written after the unlink to leave an orphan journal), without waiting for it.

        Nothing is fsynced: a crash that undoes the unlinks (or comes before the
        thread does them) brings the message back with the outcomes its journal
        kept, and the rest is retried (see the module's docstring for the window).
        ``last`` is the delivery (recipient index, reply) that made the message
        finished, not journaled (the removal stands for it): if the queue file
        cannot be unlinked, the thread journals it (so the recipient is not sent it
        again) and logs ``remove_failed``; the message then stays on disk, finished,
        until the next start removes it.  Once the files are gone the thread logs
        ``removed`` with ``reason``.  :meth:`settled` waits for removals handed over;
        :meth:`close` does them all."""
        assert self._journal_writer is not None, "Spool.open() was not called"
        if (self._lane is not None and self._journals_known and queue_id not in self._journaled
                and not self._journal_writer.has_lines(queue_id)
                and self._lane.call_soon(functools.partial(
                    _remove_and_tell, self._remove_now, _Removal(queue_id, last, None, reason)))):
            # No journal (nearly every message: one recipient, delivered at its first
            # attempt, a record in the log): its removal is a ``.done`` line, which
            # the log's thread appends after its current batch -- awake for the puts
            # anyway under load, where the journal's thread was woken (and the GIL
            # handed over) for each message.  No line of the message waits on the
            # journal's thread, so none can be written after the removal; the crash
            # cases are those of the journal's thread (a removal not done yet leaves
            # the record live: a redelivery at worst).
            return
        self._journal_writer.remove(queue_id, last, None, reason)

    async def settled(self) -> None:
        """Wait until every line and removal handed over before is done (tests, and
        anything that reads the spool's files after the scheduler let a message go)."""
        assert self._journal_writer is not None, "Spool.open() was not called"
        await self._journal_writer.flushed(None)
        if self._lane is not None:
            await self._lane.flushed()  # removals handed to the log's thread

    def _remove_now(self, queue_id: str, last: tuple[int, str] | None) -> None:
        """:meth:`_remove_sync`, keeping ``last`` in the journal when it fails."""
        try:
            self._remove_sync(queue_id)
        except BaseException:
            if last is not None:
                line = {"r": last[0], "s": "delivered", "reply": last[1],
                        "t": round(time.time(), 3)}
                with contextlib.suppress(Exception):  # the removal's error is the one told
                    self._append_bytes(queue_id, _line(line))
            raise

    def _remove_sync(self, queue_id: str) -> None:
        """Unlink the queue file, then the journal -- only if one may exist.

        Most messages never get a journal (one recipient, delivered at the first
        attempt: the removal stands for the outcome), and an unlink that fails with
        ``ENOENT`` still costs a path lookup in the kernel.  After :meth:`recover`
        the spool knows every journal that can exist: one found at recovery (of a
        live message; orphans are unlinked there) or one this process appended to
        (noted before the file is opened, so a journal created by a write that then
        failed is known too).  Nothing else creates journals in a spool this process
        has locked (adoption runs before recovery; the command line only leaves
        requests).  Crash cases are those of an unconditional unlink: the set is only
        memory, so a crash loses it and the next start rebuilds it from the disk; and
        should a journal ever be left behind, it is an orphan, which recovery removes
        (its message is gone), so a skipped unlink can never resurrect a message nor
        lose an outcome.
        """
        if self._lane is None or not self._lane.forget(queue_id):  # a log record: let go
            for state in _STATES:  # a message is in one state only (it moves by rename)
                try:
                    os.unlink(self._path(state, queue_id))
                    break
                except FileNotFoundError:
                    continue
        if queue_id in self._journaled or not self._journals_known:
            self._journal_path(queue_id).unlink(missing_ok=True)
            self._journaled.discard(queue_id)

    async def quarantine(self, queue_id: str, reason: str) -> None:
        """Move an unreadable item to ``corrupt/`` and log why."""
        with contextlib.suppress(Exception):
            await self._flushed(queue_id)  # its lines go with it
        await self._run(self._quarantine_sync, queue_id, reason)

    def _quarantine_sync(self, queue_id: str, reason: str) -> None:
        record = self._lane.find(queue_id) if self._lane is not None else None
        if record is not None:  # kept in the log (for the next start) if this fails
            assert self._lane is not None
            self._write_out(record, self.corrupt)
            self._lane.forget(queue_id)
        for src in (*(self._path(s, queue_id) for s in _STATES), self._journal_path(queue_id)):
            if src.exists():
                os.replace(src, self.corrupt / src.name)
        self._journaled.discard(queue_id)
        event("corrupt", logging.ERROR, queue_id=queue_id, reason=reason,
              moved_to=str(self.corrupt))

    # -- operator requests ---------------------------------------------------

    def request_sync(self, action: Literal["retry", "delete"], queue_id: str) -> None:
        """Leave a request for the running relay (picked up within a second, or at start)."""
        if action not in ("retry", "delete") or not (queue_id.isalnum() or queue_id == "ALL"):
            raise ValueError(f"bad request {action} {queue_id!r}")
        self.control.mkdir(parents=True, exist_ok=True)
        (self.control / f"{action}.{queue_id}").touch()

    def withdraw_sync(self, action: Literal["retry", "delete"], queue_id: str) -> None:
        """Take back a request not yet picked up (it went to the wrong part)."""
        (self.control / f"{action}.{queue_id}").unlink(missing_ok=True)

    async def take_requests(self) -> list[tuple[str, str]]:
        """The pending operator requests; each is handed out once."""
        return await self._run(self._take_requests_sync)

    def _take_requests_sync(self) -> list[tuple[str, str]]:
        try:
            names = sorted(os.listdir(self.control))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            action, _, queue_id = name.partition(".")
            valid = action in ("retry", "delete") and queue_id.isalnum()
            if valid and action == "delete" and not self._reader:
                # The command line removed what it found, but a message in the log is
                # only marked done on disk (this process still holds its record, and
                # its segment), and one written out meanwhile was looked for before
                # its file existed: remove it here, for good.  If that fails the
                # request stays, to be tried again (the scheduler forgets it anyway).
                try:
                    self._remove_sync(queue_id)
                except OSError as exc:
                    event("remove_failed", logging.ERROR, queue_id=queue_id,
                          error=f"{type(exc).__name__}: {exc}",
                          kept="the delete request, tried again")
                    out.append((action, queue_id))
                    continue
            (self.control / name).unlink(missing_ok=True)
            if valid:
                out.append((action, queue_id))
        return out

    def delete_sync(self, queue_id: str) -> bool:
        """Remove a message and its journal now; False when it is not queued."""
        record = self._record(queue_id, fresh=True)  # the segments read once
        in_files = any(self._path(s, queue_id).exists() for s in _STATES)
        self._remove_sync(queue_id)
        if record is not None and not in_files and self._reader:
            mark_done(record)  # the command line's delete of a message in the log
        return in_files or record is not None

    # -- the log, as the relay (memory) or a reader (the disk) sees it -------

    @property
    def _reader(self) -> bool:
        """Not the relay (which holds the lock and knows its log's records)."""
        return self._lock_fd is None

    def _rescan(self) -> dict[str, LogRecord]:
        """A reader's reading of the log's live records, kept for its look-ups."""
        assert self._lane is not None
        self._scanned = {r.queue_id: r for r in live_records(self._lane.directory)}
        return self._scanned

    def _record(self, queue_id: str, *, fresh: bool = False) -> LogRecord | None:
        """Where ``queue_id`` is in the log: the relay's memory, or for a reader the
        segments read again (``fresh``) or as its listing (:meth:`ids_sync`) read them."""
        if self._lane is None:
            return None
        if not self._reader:
            return self._lane.find(queue_id)
        return (self._rescan() if fresh else self._scanned).get(queue_id)

    def settle_log_sync(self) -> int:
        """Write every live record of the log on disk out as a queue file in ``active/``
        (durably), then remove the segments; returns how many were written.  Recovery's
        first step, and adoption's (for a part no worker owns); damaged records that are
        not a torn tail are kept in ``corrupt/``."""
        if self._lane is None:
            directory = self.root / "log"
            owned: set[Path] = set()
        else:
            directory = self._lane.directory
            owned = self._lane.owned()
        found = [path for _, path in segments(directory) if path not in owned]
        if not found:
            return 0
        self.tmp.mkdir(parents=True, exist_ok=True)
        bad: list[tuple[Path, int, int]] = []
        records = live_records(directory, bad, skip=owned)
        active = self.root / "active"
        written = 0
        for record in records:
            if any(self._path(s, record.queue_id).exists() for s in _STATES):
                continue  # written out before a crash, which came before it was let go of
            env, data = read_record(record)
            # A write-out that a crash cut short left tmp/<id> (never renamed, never
            # counted on); adoption settles a part before it empties that part's tmp/.
            (self.tmp / record.queue_id).unlink(missing_ok=True)
            self._write_file(record.queue_id, env, data, active)
            written += 1
        for path, offset, length in bad:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read(length)
            self.corrupt.mkdir(parents=True, exist_ok=True)
            kept = _keep(self.corrupt, f"{path.stem}-{offset}", chunk)
            event("corrupt", logging.ERROR, queue_id="", segment=str(path), offset=offset,
                  length=length, reason="damaged log record", moved_to=str(kept))
        if written:
            fsync_dir(active)
        if bad:
            fsync_dir(self.corrupt)
        for path in found:
            remove_segment(path)
        for path in orphan_done_files(directory):
            path.unlink(missing_ok=True)
        return written

    # -- reading ----------------------------------------------------------

    async def read_data(self, entry: QueueEntry) -> bytes:
        """The message bytes as received.  Raises :class:`SpoolCorruptError`."""
        return await self._run(self._read_data_sync, entry.state, entry.queue_id)

    def _read_data_sync(self, state: QueueState, queue_id: str) -> bytes:
        record = self._lane.find(queue_id) if self._lane is not None else None
        if record is None:
            try:
                return self._read_file_data(state, queue_id)
            except FileNotFoundError:
                record = self._record(queue_id, fresh=True) if self._reader else None
                if record is None:
                    raise
        try:
            return read_record(record)[1]
        except FileNotFoundError:
            raise
        except (OSError, EOFError) as exc:
            raise SpoolCorruptError(f"cannot read the log record: {exc}") from None

    def _read_file_data(self, state: QueueState, queue_id: str) -> bytes:
        try:
            with self._path(state, queue_id).open("rb") as fh:
                env_len, data_len = _parse_header(fh.readline(64))
                fh.seek(env_len + 1, os.SEEK_CUR)
                data = fh.read(data_len + 1)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SpoolCorruptError(f"cannot read queue file: {exc.strerror}") from None
        if len(data) != data_len:
            raise SpoolCorruptError(f"queue file holds {len(data)} bytes, header says {data_len}")
        return data

    async def recover(self) -> list[QueueEntry]:
        """Start-up: clean ``tmp/``, drop orphan journals, load every entry.

        Items that cannot be read are moved to ``corrupt/`` with a log line.
        """
        return await self._run(self._recover_sync)

    def _recover_sync(self) -> list[QueueEntry]:
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)  # never acknowledged
        self.settle_log_sync()  # the log's live records become queue files
        entries: list[QueueEntry] = []
        live: set[str] = set()
        for queue_id, state in self._ids():
            try:
                entries.append(self._load_sync(state, queue_id))
                live.add(queue_id)
            except (SpoolCorruptError, ValueError, UnicodeDecodeError) as exc:
                self._quarantine_sync(queue_id, str(exc))
        for journal in self.journal.iterdir():
            name = journal.name.removesuffix(".log")
            if name not in live:
                journal.unlink(missing_ok=True)  # its message finished before a crash
            else:
                self._journaled.add(name)
        self._journals_known = True  # see _remove_sync
        return entries

    def _ids(self) -> Iterator[tuple[str, QueueState]]:
        # The log first, then the folders: a message leaves the log by being written
        # out as a queue file first and let go of second, so a reader that looks in
        # this order sees it in one or the other (the other order could miss it in
        # both, and a delete or retry then found "not queued").
        in_log: list[str] = []
        if self._lane is not None:
            in_log = list(self._rescan()) if self._reader else self._lane.ids()
        files: set[str] = set()
        for state in _STATES:
            for path in sorted((self.root / state).iterdir()):
                files.add(path.name)
                yield path.name, state
        for queue_id in in_log:  # in the log: active (its first attempt)
            if queue_id not in files:
                yield queue_id, "active"

    def _load_sync(self, state: QueueState, queue_id: str) -> QueueEntry:
        path = self._path(state, queue_id)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            record = self._record(queue_id)
            if record is None:
                raise
            return self._entry(queue_id, read_envelope(record), "active",
                               record.envelope_len + record.data_len)
        with fh:
            env_len, data_len = _parse_header(fh.readline(64))
            raw = fh.read(env_len + 1)
            size = os.fstat(fh.fileno()).st_size
        if len(raw) != env_len + 1 or raw[-1:] != b"\n":
            raise SpoolCorruptError("truncated envelope")
        expected = len(_header(raw[:-1], data_len)) + env_len + 1 + data_len
        if size != expected:
            raise SpoolCorruptError(f"queue file is {size} bytes, expected {expected}")
        return self._entry(queue_id, raw[:-1], state, size)

    def _entry(self, queue_id: str, env: bytes, state: QueueState, size: int) -> QueueEntry:
        envelope = Envelope.from_json(env)
        if envelope.queue_id != queue_id:
            raise SpoolCorruptError(f"queue file names id {envelope.queue_id!r}")
        entry = QueueEntry.new(envelope)
        entry.state = state
        entry.size_on_disk = size
        entry.next_attempt = envelope.received_at
        self._replay_journal(entry)
        return entry

    def _replay_journal(self, entry: QueueEntry) -> None:
        try:
            raw = self._journal_path(entry.queue_id).read_bytes()
        except FileNotFoundError:
            return
        lines = raw.split(b"\n")
        for lineno, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                rec = json.loads(line)
                if "r" in rec:
                    status = entry.recipients[int(rec["r"])]
                    if not status.final:  # a final state is never undone
                        status.state = rec["s"]
                        status.reply = str(rec.get("reply", ""))
                        status.updated = float(rec.get("t", 0))
                elif "a" in rec:
                    entry.attempts = int(rec["a"])
                    entry.next_attempt = float(rec["next"])
                    entry.last_attempt = float(rec.get("t", 0)) or None
                elif "f" in rec:
                    entry.failures = int(rec["f"])
                    entry.next_attempt = float(rec["next"])
            except (ValueError, KeyError, IndexError, TypeError):
                if lineno == len(lines):  # torn last write: the crash we recover from
                    continue
                log.warning("queue %s: journal line %d unreadable, ignored",
                            entry.queue_id, lineno)

    # -- synchronous readers for the command line ---------------------------

    def list_sync(self) -> list[QueueEntry]:
        return self.load_some_sync(self.ids_sync())

    def ids_sync(self) -> list[tuple[str, QueueState]]:
        """Every queued message's id and state, by state then id (oldest first): names
        only, no file is read (a view of a big queue loads only what it shows)."""
        return list(self._ids())

    def load_some_sync(self, ids: Iterable[tuple[str, QueueState]]) -> list[QueueEntry]:
        """The entries of ``ids`` (from :meth:`ids_sync`) that are still queued and readable."""
        entries = []
        for queue_id, state in ids:
            try:
                entries.append(self._load_sync(state, queue_id))
            except (FileNotFoundError, SpoolCorruptError, ValueError, UnicodeDecodeError):
                continue  # finished or moved meanwhile, or corrupt: not listed
        return entries

    def find_sync(self, queue_id: str) -> QueueEntry | None:
        in_log = self._record(queue_id, fresh=True) is not None  # first: see _ids
        for _ in range(2):
            for state in _STATES:
                if self._path(state, queue_id).exists():
                    try:
                        return self._load_sync(state, queue_id)
                    except FileNotFoundError:
                        return None
            if not in_log:
                return None
            with contextlib.suppress(FileNotFoundError):  # let go of meanwhile
                return self._load_sync("active", queue_id)
            in_log = False  # its segment is gone: written out (look again) or done
        return None

    def read_data_sync(self, entry: QueueEntry) -> bytes:
        return self._read_data_sync(entry.state, entry.queue_id)
