"""The spool's log: new messages appended to a segment file, fsynced in groups.

Why: a queue file per message cost the relay a file creation, an ``fdatasync``, a
rename, a share of a directory ``fsync`` and an unlink for every message, most of
them in the kernel, and a thread hop each way (``bench/spool.py``: 0.55 CPU ms a
message, a quarter of the relay's).  Nearly every message is delivered at its first
attempt, seconds after it arrived, so its queue file lived for nothing but a crash.
Here a new message is one record appended to the current *segment*
(``log/<seq>.seg``) by one thread of its own, which writes every record handed over
meanwhile with one ``writev`` and makes them durable with one ``fdatasync``: a group
commit.  The puts of a batch are answered together (one wake-up of the event loop),
and only then may the SMTP side answer ``250``.

A segment starts with ``BEACONS1 <nonce>``, 16 random bytes in hex; a record::

    BEACONL1 <nonce> <queue id> <envelope length> <data length> <body crc> <header crc>\\n
    <envelope JSON>\\n<message data>\\n

The body CRC (CRC-32, 8 hex digits) covers the envelope, its newline and the data;
the header CRC the header line before it.  A record that a crash cut short, or
whose blocks never reached the disk, is told apart from a whole one (a file system
may keep a new size before the data it covers), and a damaged id or length from
either.  Only a header carrying the segment's nonce starts a record, so a message
cannot smuggle a record of its own into the log: a reader skips its data by length,
and one that lost its place looks for the nonce, which never leaves the spool.
Reading a segment stops at its first record that is not whole: everything after it
is the torn tail of a batch that was never acknowledged (a batch's records are
written in one go, and the thread starts a new segment after any write or sync that
failed) -- unless that record's header line is whole but not a valid header of the
segment, or it has all its bytes and only its body CRC is wrong: damage, which no
crash leaves, kept in ``corrupt/`` like a damaged stretch followed by whole records.

A message leaves the log when the scheduler is done with it: finished (delivered,
bounced, suppressed), or still pending after its first attempt, when
:class:`~beacon_proxy.spool.queue.Spool` writes it out as an ordinary queue file
(``active/`` or ``deferred/``, durably) before it lets go of the record.  Letting
go (:meth:`SegmentLog.forget`) appends the queue id to the segment's ``.done`` file
(not fsynced: a crash that loses the line redelivers, the window a queue file's
unfsynced unlink had); for a message with no journal the spool has this thread do
it (:meth:`SegmentLog.call_soon`), after the batch it is taken with.  The record it
lets go of was durable before its message was acknowledged, so no order with the
batch matters; a crash before the line is written leaves the record live (a
redelivery, as above).  A segment that is no longer the one written to and holds no
live record is removed, its ``.seg`` first, then its ``.done``.  The thread starts a
new segment when the current one is full (:data:`SEGMENT_BYTES`), or when it holds
nothing live and is a sixteenth full, so a quiet relay does not keep delivered mail
on disk.

Recovery (:func:`live_records`) reads every segment with its ``.done`` file; the
spool writes each live record out as a queue file and then removes the segments,
so the rest of the spool, and the command line, mostly see queue files.  A relay
that runs keeps its live records' places in memory; the command line, which reads
the spool without its lock, finds them by reading the segments
(:func:`live_records` too; a record being written is not whole yet and is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from beacon_proxy.log import event
from beacon_proxy.spool.fileio import fsync_dir, write_all

__all__ = [
    "SEGMENT_BYTES",
    "LogRecord",
    "SegmentLog",
    "answer_soon",
    "count_live",
    "live_records",
    "make_directory",
    "mark_done",
    "orphan_done_files",
    "read_envelope",
    "read_record",
    "record_bytes",
    "remove_segment",
    "segments",
    "take_all",
]

SEGMENT_MAGIC = b"BEACONS1"
RECORD_MAGIC = b"BEACONL1"
_NONCE_BYTES = 16  # hex digits: 32
#: A segment is retired once it holds this many bytes (its records stay until done).
SEGMENT_BYTES = 32 << 20
_SUFFIX = ".seg"
_DONE = ".done"
_HEADER_MAX = 160  # a record's header line is shorter than this

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """Where a message's record is: its segment and the envelope's and data's places."""

    queue_id: str
    segment: Path
    offset: int  # of the envelope
    envelope_len: int
    data_len: int

    @property
    def data_offset(self) -> int:
        return self.offset + self.envelope_len + 1


def record_bytes(nonce: bytes, queue_id: str, envelope: bytes, data: bytes) -> list[bytes]:
    """A record as the parts to write (the CRCs computed here: call it off the loop)."""
    crc = zlib.crc32(data, zlib.crc32(b"\n", zlib.crc32(envelope)))
    head = b"%s %s %s %d %d %08x" % (RECORD_MAGIC, nonce, queue_id.encode("ascii"),
                                     len(envelope), len(data), crc)
    return [b"%s %08x\n" % (head, zlib.crc32(head)), envelope, b"\n", data, b"\n"]


def _parse_header(line: bytes, nonce: bytes) -> tuple[str, int, int, int] | None:
    """A header line's id, lengths and body CRC; None unless it is whole and this
    segment's.  Its last field is the CRC of the line before it: a damaged id or
    length is told from a cut write (a cut header has no newline yet)."""
    parts = line.split(b" ")
    if (len(parts) != 7 or parts[0] != RECORD_MAGIC or parts[1] != nonce
            or not parts[2].isalnum() or not parts[3].isdigit() or not parts[4].isdigit()
            or len(parts[5]) != 8 or len(parts[6]) != 8):
        return None
    try:
        crc, own = int(parts[5], 16), int(parts[6], 16)
    except ValueError:
        return None
    if zlib.crc32(line[:-9]) != own:
        return None
    return parts[2].decode("ascii"), int(parts[3]), int(parts[4]), crc


def _segment_header(nonce: bytes) -> bytes:
    return b"%s %s\n" % (SEGMENT_MAGIC, nonce)


def _segment_nonce(line: bytes) -> bytes | None:
    """The nonce of a segment's first line (without its newline), None if it is none."""
    head = line.split(b" ")
    if len(head) != 2 or head[0] != SEGMENT_MAGIC or len(head[1]) != 2 * _NONCE_BYTES:
        return None
    return head[1]


def _records(path: Path, bad: list[tuple[Path, int, int]] | None = None) -> Iterator[LogRecord]:
    """The whole records of one segment, in order.

    A stretch that is not a whole record (a torn batch, or damage) is skipped to the
    next line that starts a whole record; if one follows, the stretch was not the
    torn tail of the last batch, and it is reported in ``bad`` (segment, offset,
    length) for the caller to keep.  A torn tail, never acknowledged, is dropped."""
    raw = path.read_bytes()
    end = len(raw)
    first = raw.find(b"\n", 0, _HEADER_MAX)
    nonce = _segment_nonce(raw[:first]) if first >= 0 else None
    if nonce is None:
        if end > first + 1 > 0 and bad is not None:  # records, perhaps, but unreadable
            bad.append((path, 0, end))
        return
    # Not anchored at a line start: the newline before a header ends the record
    # before it, and damage there must not cost the (whole) record that follows.
    resync = RECORD_MAGIC + b" " + nonce + b" "
    offset = first + 1
    bad_start: int | None = None
    while offset < end:
        record = _record_at(raw, offset, path, nonce)
        if record is None:
            # Only a header with this segment's nonce starts a record: a message's data
            # cannot forge one (the nonce never leaves the spool).
            if bad_start is None:
                bad_start = offset
            nxt = raw.find(resync, offset + 1)
            offset = end if nxt < 0 else nxt
            continue
        if bad_start is not None:
            if bad is not None:
                bad.append((path, bad_start, offset - bad_start))
            bad_start = None
        yield record
        offset = record.data_offset + record.data_len + 1
    if bad_start is not None:
        if _damaged(raw, bad_start, nonce):
            # Not what a crash leaves (a cut write is a prefix of the right bytes, or
            # a size kept without its data: zeros), but acknowledged records damaged
            # since (or, after a power loss, a batch whose blocks reached the disk
            # out of order).  Kept for a human, as a damaged queue file is, rather
            # than dropped without a word.
            if bad is not None:
                bad.append((path, bad_start, end - bad_start))
        else:
            log.debug("segment %s: %d bytes from offset %d are a torn tail (ignored)",
                      path, end - bad_start, bad_start)


def _damaged(raw: bytes, offset: int, nonce: bytes) -> bool:
    """Whether the stretch from ``offset`` (where a record should start) to the end is
    damage rather than a torn tail: its header line is whole and no header of this
    segment (a damaged header, or the segment's own nonce damaged), or the record has
    all its bytes, its newlines in place, and only its CRC is wrong."""
    eol = raw.find(b"\n", offset, offset + _HEADER_MAX)
    if eol < 0 or b"\0" in raw[offset:eol]:
        return False  # the header itself cut short
    parsed = _parse_header(raw[offset:eol], nonce)
    return parsed is None or _framed(raw, eol + 1, parsed[1], parsed[2])


def _framed(raw: bytes, start: int, env_len: int, data_len: int) -> bool:
    """Whether a record's envelope and data from ``start`` are all there, each with
    its newline in place (what a cut write cannot have)."""
    stop = start + env_len + 1 + data_len
    return (stop < len(raw) and raw[start + env_len:start + env_len + 1] == b"\n"
            and raw[stop:stop + 1] == b"\n")


def _record_at(raw: bytes, offset: int, path: Path, nonce: bytes) -> LogRecord | None:
    eol = raw.find(b"\n", offset, offset + _HEADER_MAX)
    if eol < 0:
        return None
    parsed = _parse_header(raw[offset:eol], nonce)
    if parsed is None:
        return None
    queue_id, env_len, data_len, crc = parsed
    start = eol + 1
    stop = start + env_len + 1 + data_len
    if (not _framed(raw, start, env_len, data_len)
            or zlib.crc32(memoryview(raw)[start:stop]) != crc):
        return None
    return LogRecord(queue_id, path, start, env_len, data_len)


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem, dot, suffix = name.partition(".")
        if "." + suffix == _SUFFIX and dot and stem.isdigit():
            found.append((int(stem), directory / name))
    return sorted(found)


def _done_ids(segment: Path) -> set[str]:
    try:
        raw = segment.with_suffix(_DONE).read_bytes()
    except FileNotFoundError:
        return set()
    return {line.decode("ascii", "replace") for line in raw.split(b"\n") if line}


def live_records(directory: Path, bad: list[tuple[Path, int, int]] | None = None,
                 skip: Iterable[Path] = ()) -> list[LogRecord]:
    """Every whole record that is not done, of every segment in ``directory`` but
    ``skip``, oldest first (damaged stretches that are not a torn tail go to ``bad``)."""
    out: list[LogRecord] = []
    skipped = set(skip)
    for _, path in segments(directory):
        if path in skipped:
            continue
        try:
            done = _done_ids(path)
            out.extend(r for r in _records(path, bad) if r.queue_id not in done)
        except FileNotFoundError:
            continue  # removed meanwhile: all of it was done
    return out


def count_live(directory: Path) -> int:
    """How many records in ``directory``'s segments are not done, cheaply: headers
    only (one ``pread`` a record, no CRC), for a gauge read once a second."""
    total = 0
    for _, path in segments(directory):
        try:
            done = _done_ids(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            head = os.pread(fd, _HEADER_MAX, 0)
            eol = head.find(b"\n")
            nonce = _segment_nonce(head[:eol]) if eol > 0 else None
            offset = eol + 1
            while nonce is not None and eol > 0:
                chunk = os.pread(fd, _HEADER_MAX, offset)
                eol = chunk.find(b"\n")
                parsed = _parse_header(chunk[:eol], nonce) if eol > 0 else None
                if parsed is None:
                    break
                total += parsed[0] not in done
                offset += eol + 1 + parsed[1] + 1 + parsed[2] + 1
        finally:
            os.close(fd)
    return total


def _pread(path: Path, length: int, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def read_record(record: LogRecord) -> tuple[bytes, bytes]:
    """A record's envelope JSON and data (``FileNotFoundError`` once its segment is gone)."""
    raw = _pread(record.segment, record.envelope_len + 1 + record.data_len, record.offset)
    if len(raw) != record.envelope_len + 1 + record.data_len:
        raise EOFError(f"segment {record.segment} ends inside the record of {record.queue_id}")
    return raw[:record.envelope_len], raw[record.envelope_len + 1:]


def read_envelope(record: LogRecord) -> bytes:
    """A record's envelope JSON (``FileNotFoundError`` once its segment is gone)."""
    return _pread(record.segment, record.envelope_len, record.offset)


def mark_done(record: LogRecord) -> None:
    """Let go of a record from outside the relay (the command line's ``delete``)."""
    _append(record.segment.with_suffix(_DONE), record.queue_id.encode("ascii") + b"\n")


def _append(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def remove_segment(path: Path) -> None:
    """Remove a segment whose live records were written out: ``.seg``, then ``.done``."""
    path.unlink(missing_ok=True)
    path.with_suffix(_DONE).unlink(missing_ok=True)


def orphan_done_files(directory: Path) -> list[Path]:
    """``.done`` files without their segment (a command-line delete that raced the
    segment's removal): nothing refers to them."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [directory / n for n in names
            if n.endswith(_DONE) and not (directory / n).with_suffix(_SUFFIX).exists()]


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    fd: int
    nonce: bytes
    size: int = 0
    live: int = 0
    retired: bool = False
    done_fd: int | None = None
    inode: tuple[int, int] = (0, 0)  # (st_ino, st_dev) of the file fd writes to


_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", str, bytes, bytes]
#: A job for the thread, run after the batch it was taken with (:meth:`SegmentLog.call_soon`).
_Call = Callable[[], None]


class SegmentLog:
    """The group-committed log of a spool's new messages (see the module's docstring).

    :meth:`append` and :meth:`call_soon` from the event loop; :meth:`forget` and
    :meth:`find` from any thread (one lock guards the places and the live counts).
    ``on_sync`` (tests only) is called by the thread after each ``fdatasync`` with
    the number of records it made durable."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._records: dict[str, tuple[_Segment, LogRecord]] = {}
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._last_seq = 0
        self._doomed: list[Path] = []  # segments let go of, to unlink (list ops are atomic)
        self._closing = False  # close() has queued its stop: appends are refused
        self._queue: queue.SimpleQueue[_Item | _Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.on_sync: Callable[[int], None] | None = None

    def start(self) -> None:
        """Start the writing thread (after recovery: the first segment it creates
        numbers after every segment on disk)."""
        if self._thread is None:
            self._closing = False
            make_directory(self.directory)
            self._thread = threading.Thread(target=self._run, name="spool-log", daemon=True)
            self._thread.start()

    async def append(self, queue_id: str, envelope: bytes, data: bytes) -> None:
        """Append a message; returns once its record is on disk."""
        assert self._thread is not None, "SegmentLog.start() was not called"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:  # never behind close()'s stop, where no thread would answer it
            if self._closing:
                raise OSError(errno.ESHUTDOWN, "the spool's log is closed")
            self._queue.put((loop, done, queue_id, envelope, data))
        await done

    def call_soon(self, job: _Call) -> bool:
        """Have the thread run ``job`` after the records handed over with it are
        written (the spool's removals of log-backed messages without a journal: the
        thread is often awake for a batch anyway, where the journal's thread had to be
        woken for each).  False, and nothing queued, when no thread will run it (not
        started, or closing): the caller does the job another way.  A job that raises
        is logged; the thread goes on."""
        with self._lock:  # never behind close()'s stop (see append)
            if self._closing or self._thread is None:
                return False
            self._queue.put(job)
        return True

    async def flushed(self) -> None:
        """Wait until every job handed over before (:meth:`call_soon`) has run."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self.call_soon(lambda: answer_soon(loop, [done], None)):
            await done

    def find(self, queue_id: str) -> LogRecord | None:
        with self._lock:
            found = self._records.get(queue_id)
        return None if found is None else found[1]

    def forget(self, queue_id: str) -> bool:
        """Let go of a message's record: note it done, and remove its segment once
        nothing in it is live.  False when the message is not in the log."""
        with self._lock:
            found = self._records.pop(queue_id, None)
            if found is None:
                return False
            segment = found[0]
            segment.live -= 1
            if segment.done_fd is None:
                segment.done_fd = os.open(segment.path.with_suffix(_DONE),
                                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                          0o600)
            os.write(segment.done_fd, queue_id.encode("ascii") + b"\n")
            if segment.retired and segment.live == 0:
                self._remove(segment)
        self._reap()
        return True

    def live(self) -> int:
        with self._lock:
            return len(self._records)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._records)

    def owned(self) -> set[Path]:
        """The segments this log writes or wrote (recovery leaves them alone)."""
        with self._lock:
            return {s.path for s in self._segments.values()}

    def close(self) -> None:
        """Write what is queued, end the thread, and remove the current segment when
        nothing in it is live (else it stays for the next start's recovery)."""
        if self._thread is not None:
            with self._lock:  # an append after this is refused (see append)
                self._closing = True
                self._queue.put(None)
            self._thread.join()
            self._thread = None
        with self._lock:
            for segment in list(self._segments.values()):
                if segment.live == 0:
                    self._remove(segment)
                else:
                    self._close_fds(segment)
            self._segments.clear()
            self._current = None
        self._reap()

    # -- the writing thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            items = take_all(self._queue)
            stop = items[-1] is None  # the last item (append and call_soon refuse any after it)
            batch: list[_Item] = []
            jobs: list[_Call] = []
            for item in items:
                if isinstance(item, tuple):
                    batch.append(item)
                elif item is not None:
                    jobs.append(item)
            if batch:
                self._commit(batch)
            for job in jobs:  # after the batch's puts are answered: they wait, jobs do not
                try:
                    job()
                except Exception:
                    log.exception("a job of the spool's log thread failed")
            if stop:
                return

    def _commit(self, items: list[_Item]) -> None:
        batch: list[_Item] = []
        taken: set[str] = set()
        with self._lock:
            for item in items:  # an id already in the log is refused, as a queue file's is
                if item[2] in self._records or item[2] in taken:
                    _reply([item], FileExistsError(f"queue id {item[2]} is already queued"))
                else:
                    taken.add(item[2])
                    batch.append(item)
        if not batch:
            return
        error: BaseException | None = None
        try:
            segment = self._segment()
            parts = []
            for item in list(batch):  # a put that cannot be a record fails alone
                try:
                    parts.append(record_bytes(segment.nonce, item[2], item[3], item[4]))
                except (UnicodeError, ValueError) as exc:
                    batch.remove(item)
                    _reply([item], ValueError(f"bad queue id {item[2]!r}: {exc}"))
            start = segment.size
            write_all(segment.fd, [p for record in parts for p in record])
            os.fdatasync(segment.fd)
        except BaseException as exc:  # every put of the batch gets it
            error = exc
            self._retire_current()  # what follows goes to a new segment
        else:
            with self._lock:
                offset = start
                for item, record in zip(batch, parts, strict=True):
                    queue_id = item[2]
                    header = len(record[0])
                    self._records[queue_id] = (segment, LogRecord(
                        queue_id, segment.path, offset + header, len(item[3]), len(item[4])))
                    offset += header + len(item[3]) + len(item[4]) + 2
                segment.live += len(batch)
                segment.size = offset
            if self.on_sync is not None:
                self.on_sync(len(batch))
        _reply(batch, error)

    def _segment(self) -> _Segment:
        """The segment to write to: the current one, or a new one (its name durable)."""
        with self._lock:
            current = self._current
            if current is not None and (
                    current.size >= self.segment_bytes
                    or (current.live == 0 and current.size >= self.segment_bytes // 16)
                    or not _same_file(current)):
                self._retire(current)
                current = None
        self._reap()
        if current is not None:
            return current
        make_directory(self.directory)
        # Never a number used before: not one on disk (a start's leftovers, a segment
        # being unlinked), nor one this log removed (a command line's late ``.done``).
        seq = max([s for s, _ in segments(self.directory)] + [self._last_seq]) + 1
        self._last_seq = seq
        path = self.directory / f"{seq:012d}{_SUFFIX}"
        nonce = os.urandom(_NONCE_BYTES).hex().encode("ascii")
        header = _segment_header(nonce)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            write_all(fd, [header])  # made durable by the first batch's fdatasync
            fsync_dir(self.directory)
            made = os.fstat(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        segment = _Segment(seq, path, fd, nonce, size=len(header),
                           inode=(made.st_ino, made.st_dev))
        with self._lock:
            self._segments[seq] = segment
            self._current = segment
        return segment

    def _retire_current(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
        self._reap()

    def _retire(self, segment: _Segment) -> None:
        """No more records go to ``segment`` (the lock is held)."""
        segment.retired = True
        if self._current is segment:
            self._current = None
        if segment.live == 0:
            self._remove(segment)

    def _remove(self, segment: _Segment) -> None:
        """Let go of a segment with nothing live in it (the lock is held); its files
        are unlinked by :meth:`_reap`, after the lock (freeing 32 MB of blocks takes the
        kernel a while, which the log's thread must not wait for under the lock)."""
        self._close_fds(segment)
        self._segments.pop(segment.seq, None)
        if self._current is segment:
            self._current = None
        self._doomed.append(segment.path)

    def _reap(self) -> None:
        """Unlink the segments let go of (each ``.seg`` before its ``.done``)."""
        while self._doomed:
            try:
                path = self._doomed.pop()
            except IndexError:  # another thread took the last one
                return
            try:
                remove_segment(path)
            except OSError as exc:  # left for the next start, which removes it
                event("segment_remove_failed", logging.ERROR, segment=str(path),
                      error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _close_fds(segment: _Segment) -> None:
        for fd in (segment.fd, segment.done_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        segment.fd = -1
        segment.done_fd = None


def take_all(from_queue: queue.SimpleQueue[T]) -> list[T]:
    """Wait for an item, then take every item queued meanwhile (a thread's batch)."""
    items = [from_queue.get()]
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(from_queue.get_nowait())
    return items


def make_directory(directory: Path) -> None:
    """Make ``directory`` if it is missing, its name durable: a segment's
    ``fsync_dir`` makes the segment's name durable in ``log/``, not ``log/``'s own
    name in the spool (a new spool's first put, or a new ``log/`` after an operator
    moved the old one aside), which a power loss could otherwise take with it."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir(exist_ok=True)
    fsync_dir(directory.parent)


def _same_file(segment: _Segment) -> bool:
    """Whether the segment's path still names the file written to: an operator who
    moved ``log/`` aside (and made a new one) gets the next records in the new one,
    where recovery looks, not in the moved-away folder (one ``stat`` a batch; the
    file's own inode was taken when it was made: an ``fstat`` a batch, and its
    hand-off of the GIL, cost as much again)."""
    try:
        by_path = os.stat(segment.path)
    except FileNotFoundError:
        return False
    return (by_path.st_ino, by_path.st_dev) == segment.inode


def _reply(batch: list[_Item], error: BaseException | None) -> None:
    """Answer a batch's puts: one wake-up of each event loop for them all."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, done, *_ in batch:
        by_loop.setdefault(loop, []).append(done)
    for loop, futures in by_loop.items():
        answer_soon(loop, futures, error)


def answer_soon(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[None]],
                error: BaseException | None) -> None:
    """From a spool thread: settle ``futures`` of ``loop`` (with ``error``, if any),
    in one callback on that loop; nothing when the loop is closed (nobody waits)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_answer, futures, error)


def _answer(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in futures:
        if done.done():
            continue  # its waiter was cancelled
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
