"""The spool of a relay with several worker processes: one part per worker.

With ``[smtp] workers = N`` (N > 1) worker ``i`` owns ``<spool>/parts/<i>/``, an
ordinary :class:`~beacon_proxy.spool.queue.Spool` root with its own ``lock``,
queue folders and journal; the spool root keeps ``token.secret`` and the
supervisor's ``lock`` (one relay per spool).  With one process the root itself
is the queue, as it always was.

No message is stranded when N changes: before it recovers its part, a worker
**adopts** what no running worker owns any more (:func:`sources_for`):

* worker ``i`` of ``N`` adopts every part ``j >= N`` with ``j % N == i`` (left by an
  earlier, larger N), and worker 0 also the root's own queue (the single-process
  layout);
* a single-process relay adopts every part.

Adopting a message (:func:`adopt`) first writes the source's log out as queue
files (:meth:`~beacon_proxy.spool.queue.Spool.settle_log_sync`, as recovery would),
then moves each without ever having it in no part and without losing its journal:
the journal is hard-linked into the new part, the queue file renamed (the commit
point: ``rename`` is atomic), then the old journal link removed.  A crash at any
step leaves the message in exactly one part with its journal (a journal link
without its queue file is an orphan that recovery removes).  Requests in
``control/`` and items in ``corrupt/`` move with it; files in ``tmp/`` were never
acknowledged and are removed, as recovery would.  The source part is locked while
it is adopted (a worker of an earlier run may still be finishing; :func:`lock_within`
waits for it).

An operator's request about one message (:func:`leave_request`: the command line's and
the console's retry and delete) goes to the part that holds it; a worker starting
meanwhile may adopt the message, and a request written into its old part after
adoption moved the requests would wait there for the next start, so the request
follows the message.  A message deleted while it is adopted is skipped.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Literal

from beacon_proxy.log import event
from beacon_proxy.spool.fileio import claim_name
from beacon_proxy.spool.queue import QueueEntry, Spool, SpoolInUse, fsync_dir

__all__ = ["PARTS", "adopt", "all_roots", "leave_request", "lock_within", "owner_of",
           "part_root", "sources_for"]

PARTS = "parts"
_QUEUE_DIRS = ("active", "deferred")


def part_root(root: Path, index: int) -> Path:
    """The root of worker ``index``'s part of the spool at ``root``."""
    return root / PARTS / str(index)


def _part_indexes(root: Path) -> list[int]:
    try:
        names = os.listdir(root / PARTS)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isdigit() and (root / PARTS / n).is_dir())


def sources_for(root: Path, index: int | None, count: int) -> list[Path]:
    """The spool roots that the owner of ``index`` of ``count`` (None: a single-process
    relay, which owns the root) adopts at start."""
    if index is None:
        return [part_root(root, j) for j in _part_indexes(root)]
    out = [part_root(root, j) for j in _part_indexes(root) if j >= count and j % count == index]
    if index == 0:
        out.insert(0, root)
    return out


def all_roots(root: Path) -> list[Path]:
    """Every spool root that may hold messages: the root, then each part."""
    return [root, *(part_root(root, j) for j in _part_indexes(root))]


def owner_of(root: Path, queue_id: str) -> tuple[Spool, QueueEntry] | None:
    """The part (as a :class:`Spool`) that holds ``queue_id``, with its entry; None when
    no part holds it."""
    for r in all_roots(root):
        spool = Spool(r)
        entry = spool.find_sync(queue_id)
        if entry is not None:
            return spool, entry
    return None


#: How often a request follows a message that moved while it was written: a message
#: moves once per worker start, so more means parts changing faster than a request.
_FOLLOW = 4


def leave_request(root: Path, action: Literal["retry", "delete"], queue_id: str) -> bool:
    """An operator's ``retry`` or ``delete`` of ``queue_id``, left with the part that
    holds it (``delete`` also removes it there now, so the running worker only has to
    forget it); False when no part holds it.

    After writing, the part is checked again: if the message moved meanwhile (adopted
    by a worker that started), the request is taken back and made again where it is
    now, instead of waiting in a part no worker owns until the next start."""
    for _ in range(_FOLLOW):
        found = owner_of(root, queue_id)
        if found is None:
            return False
        spool = found[0]
        if action == "delete":
            if spool.delete_sync(queue_id):
                spool.request_sync("delete", queue_id)  # so the running worker forgets it
                return True
            continue  # moved (or finished) between the look-up and the removal
        spool.request_sync("retry", queue_id)
        if spool.find_sync(queue_id) is not None:
            return True
        spool.withdraw_sync("retry", queue_id)
    return False


def lock_within(spool: Spool, timeout: float) -> None:
    """:meth:`Spool.lock`, waiting up to ``timeout`` seconds for a holder to let go (a
    worker of an earlier run still stopping); then :class:`SpoolInUse`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            spool.lock()
            return
        except SpoolInUse:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def adopt(into: Path, source: Path) -> int:
    """Move every message (with its journal), request and corrupt item from the spool
    root ``source`` into the spool root ``into``; returns how many messages moved.
    The caller holds ``into``'s lock; ``source``'s lock is taken here (unless ``source``
    is the spool root, whose lock the supervisor holds for the whole relay)."""
    if not any((source / d).is_dir() for d in (*_QUEUE_DIRS, "log")):
        return 0
    src_spool = Spool(source)
    if source not in (into, into.parent.parent):  # a part: lock it while adopting
        lock_within(src_spool, 60.0)
    try:
        moved = _adopt_locked(into, source)
    finally:
        src_spool.unlock()
    if moved:
        event("spool_adopted", source=str(source), into=str(into), messages=moved)
    return moved


def _adopt_locked(into: Path, source: Path) -> int:
    for d in (*_QUEUE_DIRS, "journal", "control", "corrupt", "tmp"):
        (into / d).mkdir(parents=True, exist_ok=True)
    Spool(source).settle_log_sync()  # its log's live messages become queue files, moved below
    moved = 0
    for state in _QUEUE_DIRS:
        try:
            names = sorted(os.listdir(source / state))
        except FileNotFoundError:
            continue
        for name in names:
            journal = source / "journal" / f"{name}.log"
            target_journal = into / "journal" / f"{name}.log"
            target_journal.unlink(missing_ok=True)  # a link from a crashed adoption
            with contextlib.suppress(FileNotFoundError):  # none, or deleted meanwhile
                os.link(journal, target_journal)
            try:
                os.rename(source / state / name, into / state / name)  # the commit point
            except FileNotFoundError:  # an operator deleted it meanwhile (or it moved on)
                target_journal.unlink(missing_ok=True)
                continue
            journal.unlink(missing_ok=True)
            moved += 1
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(source / "control"):
            os.replace(source / "control" / name, into / "control" / name)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(source / "corrupt"):
            _move_aside(source / "corrupt" / name, into / "corrupt")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(source / "tmp"):
            (source / "tmp" / name).unlink(missing_ok=True)  # never acknowledged
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(source / "journal"):  # their messages finished earlier
            (source / "journal" / name).unlink(missing_ok=True)
    if moved:
        for d in (*_QUEUE_DIRS, "journal"):
            fsync_dir(into / d)
    return moved


def _move_aside(src: Path, directory: Path) -> None:
    """Move a corrupt item into ``directory`` without replacing one kept there: the
    damaged stretches of logs are named by segment number and offset, and every part
    numbers its segments from 1 (a link first, so a crash leaves it in one place or
    both, never in neither)."""
    claim_name(directory, src.name, "moved", lambda target: os.link(src, target))
    src.unlink()
