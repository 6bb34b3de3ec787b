"""The SQLite backend: the embedded default, one file in WAL mode.

Two connections, each with its own thread (aiosqlite), so no database call
blocks the event loop:

* a **writer**: one write transaction at a time (``BEGIN IMMEDIATE``, an
  asyncio lock inside the process, SQLite's lock between processes, waiting
  up to ``busy_timeout`` for another process such as ``consent import``);
* a **reader** in autocommit mode: lookups never wait for a write in progress
  and see every committed change (WAL).

and a third, plain ``sqlite3`` connection used **on the event loop** (the
*loop connection*), read-only (``query_only``) and in autocommit mode:

* ``PRAGMA data_version`` for the decision cache (:mod:`.cache`): a few
  microseconds, it changes when any other connection commits -- another
  process, or this process's writer (a connection's own commits do not
  change it; this one never writes).  When it cannot be read (the file is
  busy), the lookup bypasses the cache.
* the relay's decision lookup of up to :data:`LOOP_READ_MAX` addresses (a
  message's recipients), and its read of at most that many rows of the change
  log (a longer log, e.g. after a bulk change, is read in the thread): reads of
  ~10 µs a key, where the hop to the reader's thread and back (a queue, a
  semaphore, the GIL handed over twice, ``call_soon_threadsafe``) costs
  ~50 µs of CPU.

  It is as fresh as the reader: each statement is its own read transaction
  (autocommit, the cursor closed at once), which in WAL mode sees every
  commit made before it starts, by any process; the decision version comes
  in the same statement, so the cache stays exact (:mod:`.sqlstore`).  It
  never waits on a lock: ``busy_timeout`` is 0, and a statement that fails
  there (``SQLITE_BUSY``/``SQLITE_LOCKED``: another process recovering the
  WAL after a crash or holding the file in exclusive locking mode, a
  database not in WAL mode during a write) runs again on the reader's
  thread, which waits as every read did before.  (What it cannot avoid is
  SQLite's own short retry of a WAL read whose read-mark another connection
  is moving at that instant -- microseconds, as on the thread.)  Larger
  lookups (a list send) go to the thread straight away, so the loop is held
  well under a millisecond.  :data:`LOOP_READS` counts where they ran.  Only
  reads move here: nothing about how a change is written, and so nothing
  the spool's durability rests on, differs.

``synchronous = FULL``: a committed change survives a power cut.  Times are
stored as fixed-width ISO 8601 text, lists are passed to queries as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Final

import aiosqlite

from beacon_proxy.consent.cache import DEFAULT_CACHE_SIZE, LOOP_READS, CacheMode
from beacon_proxy.consent.model import StoreError, StoreUnavailable, iso
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.queries import split_sqlite_script
from beacon_proxy.consent.sqlbase import LOOP_READ_MAX, Conn, Row
from beacon_proxy.consent.sqlstore import SqlStore

__all__ = ["BUSY_TIMEOUT_MS", "LOOP_READ_MAX", "SqliteStore"]

BUSY_TIMEOUT_MS = 10_000
#: The most addresses (change log rows) a decision lookup reads on the event loop (more:
#: on the reader's thread).  A lookup of 32 holds the loop ~0.4 ms (address parsing and
#: hashing included, which stay on the loop anyway); past that the thread's fixed
#: ~0.05-0.1 ms is under 15 % of it (docs/performance.md, "Decisions read on the loop").


#: ``json.dumps(value, ensure_ascii=False)`` without building an encoder per call (a
#: lookup passes two lists: ~0.7 us each).
_JSON = json.JSONEncoder(ensure_ascii=False).encode
#: One string as ``_JSON`` writes it (the C ``encode_basestring``: quotes and escapes).
_JSON_STR: Final = json.encoder.encode_basestring


def _json_list(value: list[Any] | tuple[Any, ...]) -> str:
    """``_JSON(value)``; a list of strings (a lookup's keys and hashes) is written by
    joining its encoded strings with the encoder's ``", "``, the same text without
    the encoder's set-up per call (2 us of a lookup's two lists)."""
    if all(type(v) is str for v in value):
        return "[" + ", ".join(map(_JSON_STR, value)) + "]"
    return _JSON(value)


def _arg(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list | tuple):
        return _json_list(value)
    if isinstance(value, bool):
        return int(value)
    return value


#: The names of the numbered placeholders ``?1``, ``?2``, ... as sqlite3 looks them up in a
#: mapping (their text after the ``?``).
_PARAM_NAMES: Final = tuple(str(n) for n in range(1, 33))


def _args(args: Sequence[object]) -> dict[str, object]:
    """A query's arguments by the names of its numbered placeholders (``?1`` is ``"1"``).

    The queries number their placeholders (one argument can appear twice), which
    sqlite3 counts as named: bound from a sequence, Python 3.12 and 3.13 warn
    (``DeprecationWarning``) and 3.14 refuses; from a mapping every version binds them.
    """
    if len(args) > len(_PARAM_NAMES):
        raise ValueError(f"{len(args)} query arguments; at most {len(_PARAM_NAMES)}")
    return dict(zip(_PARAM_NAMES, map(_arg, args), strict=False))


def _error(exc: sqlite3.Error) -> StoreError:
    return StoreError(f"SQLite: {exc}")


class _Conn:
    def __init__(self, db: aiosqlite.Connection, queries: dict[str, str]) -> None:
        self._db = db
        self._q = queries

    async def fetch(self, query: str, *args: object) -> list[Row]:
        try:
            rows = await self._db.execute_fetchall(self._q[query], _args(args))
        except sqlite3.Error as exc:
            raise _error(exc) from exc
        return [dict(r) for r in rows]

    async def execute(self, query: str, *args: object) -> int:
        try:
            async with self._db.execute(self._q[query], _args(args)) as cur:
                return max(cur.rowcount, 0)
        except sqlite3.Error as exc:
            raise _error(exc) from exc

    async def executemany(self, query: str, rows: Sequence[Sequence[object]]) -> None:
        try:
            await self._db.executemany(self._q[query], [_args(r) for r in rows])
        except sqlite3.Error as exc:
            raise _error(exc) from exc

    async def script(self, sql: str) -> None:
        try:
            for statement in split_sqlite_script(sql):
                await self._db.execute(statement)
        except sqlite3.Error as exc:
            raise _error(exc) from exc


class _LoopConn(_Conn):
    """Reads on the loop connection first; a statement that fails there (busy,
    locked: it never waits) runs again on the reader's thread.  Writes are not
    for it (the store hands it out for lookups only): they go to the reader."""

    def __init__(self, db: aiosqlite.Connection, queries: dict[str, str],
                 loop_db: sqlite3.Connection) -> None:
        super().__init__(db, queries)
        self._loop_db = loop_db

    async def fetch(self, query: str, *args: object) -> list[Row]:
        try:
            cur = self._loop_db.execute(self._q[query], _args(args))
            try:
                rows = cur.fetchall()
            finally:
                cur.close()  # ends the read transaction whatever happened
        except sqlite3.Error:
            LOOP_READS["busy"] += 1
            return await super().fetch(query, *args)
        LOOP_READS["loop"] += 1
        return [dict(r) for r in rows]


class _Given:
    """``async with`` a connection that needs no set-up or clean-up (a lookup's,
    once a message): an async generator (``contextlib.asynccontextmanager``) would
    cost its frame, the event loop's registry of async generators (a ``WeakSet``
    entry and its removal) and ``contextlib``'s wrapper, for nothing."""

    __slots__ = ("conn",)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def __aenter__(self) -> Conn:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


class SqliteStore(SqlStore):
    """The store in one SQLite file (created with its parent folders)."""

    dialect = "sqlite"
    #: WAL: readers are not blocked by a writer.  (Tests run a subclass on a
    #: rollback-journal file, where a writer's lock makes a read on the loop busy.)
    journal_mode: ClassVar[str] = "WAL"

    def __init__(self, path: str | Path, *, unknown: Policy = Policy.REFUSED,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(unknown=unknown, cache_size=cache_size)
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None  # on the event loop, read-only
        self._trusted: int | None = None  # the data version the cache was validated at
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def _connect_one(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute(f"PRAGMA journal_mode = {self.journal_mode}")
            await db.execute("PRAGMA synchronous = FULL")
        except BaseException:
            await db.close()
            raise
        return db

    async def _connect(self) -> None:
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
            self._writer = await self._connect_one()
            self._reader = await self._connect_one()
            self._loop_db = await asyncio.to_thread(self._connect_loop)
        except (OSError, sqlite3.Error) as exc:
            await self._disconnect()
            raise StoreUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc

    def _connect_loop(self) -> sqlite3.Connection:
        # check_same_thread=False: made in a worker thread, used on the event loop's.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 0")  # never wait on the event loop: fall back
            db.execute("PRAGMA query_only = 1")
            db.execute("PRAGMA data_version")
        except BaseException:
            db.close()
            raise
        return db

    async def _disconnect(self) -> None:
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None
        self._trusted = None
        for db in (self._reader, self._writer):
            if db is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.close()
        self._reader = self._writer = None

    def _cache_mode(self, misses: bool = False) -> tuple[CacheMode, object]:
        if self._loop_db is None:
            return CacheMode.BYPASS, None
        if misses and self._trusted is not None:
            # No PRAGMA (a statement on the loop, and the GIL released around it):
            # the lookup's statement reads the decision version, which checks the hits,
            # and a mark would only let a later lookup of hits alone skip its statement.
            # ``_trusted`` stays, still true: a data version read before a statement
            # that read the cache's version; the cache moves to another version only
            # when a statement reads one, which takes a commit after that statement,
            # and so a data version other than ``_trusted``.  (None, as at the start
            # or after this process's own change: the mark is taken, as before.)
            return CacheMode.CHECK, None
        try:
            version = int(self._loop_db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self._trusted = None
            return CacheMode.BYPASS, None
        return (CacheMode.TRUST if version == self._trusted else CacheMode.CHECK), version

    def _cache_validated(self, mark: object) -> None:
        self._trusted = mark if isinstance(mark, int) else None

    def _decisions_changed(self, hashes: set[str]) -> None:
        self._trusted = None
        super()._decisions_changed(hashes)

    def _require(self, db: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if db is None:
            raise StoreError("the store is not open")
        return db

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        yield _Conn(self._require(self._reader), self.queries)

    def _lookup_read(self, rows: int) -> _Given:
        reader = self._require(self._reader)
        if self._loop_db is None or rows > LOOP_READ_MAX:
            LOOP_READS["thread"] += 1
            return _Given(_Conn(reader, self.queries))
        return _Given(_LoopConn(reader, self.queries, self._loop_db))

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        async with self._lock:
            db = self._require(self._writer)
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _error(exc) from exc
            try:
                yield _Conn(db, self.queries)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._rollback(db))
                raise

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        if db.in_transaction:
            await db.execute("ROLLBACK")

    def info(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": str(self.path)}
