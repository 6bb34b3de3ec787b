"""The PostgreSQL backend: one database shared by many beacon-proxy nodes.

An asyncpg connection pool; reads take any connection, each write is one
transaction on one connection.  Migrations are serialised across nodes with
an advisory lock, so nodes may start together.  What one node commits, every
node reads on its next lookup: the relay's decision cache (:mod:`.cache`)
reads the decision version in every lookup's statement, and one more
connection per process listens on ``beacon_proxy_decisions``, where every
change is announced when it commits.  While that connection is down (and
until it is back and listening again, retried with a backoff of 0.1 s
doubling up to 5 s) the cache is bypassed.

The URL is passed to asyncpg as it is: ``postgresql://user@host:5432/db``,
``postgresql:///db?host=/run/postgresql``; other query parameters
(``?search_path=beacon``) become server settings.  Every session runs at READ
COMMITTED whatever the database's or role's default isolation level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from beacon_proxy.consent.cache import DEFAULT_CACHE_SIZE, CacheMode
from beacon_proxy.consent.model import StoreError, StoreUnavailable
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.sqlbase import Conn, Row
from beacon_proxy.consent.sqlstore import SqlStore
from beacon_proxy.log import event

__all__ = ["CHANNEL", "PostgresStore"]

#: The channel migration 0005's triggers notify (payload: "<schema> <version>").
CHANNEL = "beacon_proxy_decisions"
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0
#: The schema of the store's tables, as the triggers name it (TG_TABLE_SCHEMA).
_SCHEMA = ("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE c.oid = to_regclass('decision_version')")

_CONNECTION_LOST = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
#: The writes are written for READ COMMITTED (PostgreSQL's default): a database or role
#: set to another default isolation would make them fail with serialization errors.
_SESSION = {"default_transaction_isolation": "read committed"}


def _setter(flag: asyncio.Event) -> Any:
    """A termination listener that sets ``flag``."""
    return lambda _conn: flag.set()


def _error(exc: Exception) -> StoreError:
    if isinstance(exc, _CONNECTION_LOST):
        return StoreUnavailable(f"PostgreSQL: {exc}")
    return StoreError(f"PostgreSQL: {exc}")


def _count(status: str) -> int:
    """Rows affected, from a command status such as ``DELETE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Conn:
    def __init__(self, conn: Any, queries: dict[str, str]) -> None:
        self._c = conn
        self._q = queries

    async def fetch(self, query: str, *args: object) -> list[Row]:
        try:
            rows = await self._c.fetch(self._q[query], *args)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise _error(exc) from exc
        return [dict(r) for r in rows]

    async def execute(self, query: str, *args: object) -> int:
        try:
            status: str = await self._c.execute(self._q[query], *args)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise _error(exc) from exc
        return _count(status)

    async def executemany(self, query: str, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        try:
            await self._c.executemany(self._q[query], rows)
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise _error(exc) from exc

    async def script(self, sql: str) -> None:
        try:
            await self._c.execute(sql)  # no arguments: the simple protocol runs many statements
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
            raise _error(exc) from exc


class PostgresStore(SqlStore):
    """The store in a PostgreSQL database, through a pool of ``pool_size`` connections."""

    dialect = "postgresql"

    def __init__(self, url: str, *, unknown: Policy = Policy.REFUSED, pool_size: int = 10,
                 timeout: float = 30.0, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(unknown=unknown, cache_size=cache_size)
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: Any = None
        self._listener: asyncio.Task[None] | None = None
        #: The listening connection's server process id while it listens, else None.
        self.listener_pid: int | None = None
        #: Notifications of this store's schema received (tests wait on :meth:`wait_listener`).
        self.notifications = 0
        self._schema = ""
        self._listen_changed = asyncio.Event()

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the URL may carry a password

    async def _connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout,
                command_timeout=self.timeout * 10, server_settings=_SESSION)
        except (asyncpg.PostgresError, ValueError, *_CONNECTION_LOST) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def open(self) -> None:
        await super().open()
        if self.cache is not None:
            self._listener = asyncio.create_task(self._listen(), name="decision-listener")

    async def _disconnect(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require(self) -> Any:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        try:
            conn_cm = self._require().acquire(timeout=self.timeout)
            conn = await conn_cm.__aenter__()
        except (TimeoutError, *_CONNECTION_LOST) as exc:
            raise StoreUnavailable(f"PostgreSQL: no connection: {exc}") from exc
        try:
            yield _Conn(conn, self.queries)
        finally:
            await conn_cm.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        async with self._read() as c:
            assert isinstance(c, _Conn)
            try:
                tx = c._c.transaction()
                await tx.start()
            except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
                raise _error(exc) from exc
            try:
                yield c
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
                raise _error(exc) from exc

    # -- the decision cache's listener ----------------------------------------------

    def _cache_mode(self, misses: bool = False) -> tuple[CacheMode, object]:
        del misses  # bypassed while the listener is down, misses or not
        return (CacheMode.CHECK if self.listener_pid is not None else CacheMode.BYPASS), None

    def _signal(self) -> None:
        self._listen_changed.set()
        self._listen_changed = asyncio.Event()

    async def wait_listener(self, predicate: Any, timeout: float = 30.0) -> None:
        """Wait until ``predicate(self)`` holds, re-checked whenever the listener's state
        changes or a notification arrives (for tests and benchmarks: no polling)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._listen_changed.wait()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        schema, _, version = payload.rpartition(" ")
        if schema != self._schema or not version.isdigit():
            return  # another store's schema in the same database
        self.notifications += 1  # the lookup reads the version and the change log itself
        self._signal()

    async def _listen(self) -> None:
        """Keep one connection listening; the cache is bypassed whenever it is not."""
        delay = _RETRY_FIRST
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.url, timeout=self.timeout,
                                             server_settings=_SESSION)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                self._schema = str(await conn.fetchval(_SCHEMA) or "")
                await conn.add_listener(CHANNEL, self._notified)
                if self.cache is not None:
                    self.cache.invalidate()  # what changed while nobody listened
                self.listener_pid = conn.get_server_pid()
                self._signal()
                if delay > _RETRY_FIRST:
                    event("decision_cache_listening", logging.INFO)
                delay = _RETRY_FIRST
                await lost.wait()
                event("decision_cache_bypassed", logging.WARNING,
                      error="the listening connection was lost")
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                if delay == _RETRY_FIRST:
                    event("decision_cache_bypassed", logging.WARNING, error=str(exc)[:300])
            finally:
                self.listener_pid = None
                if self.cache is not None:
                    self.cache.invalidate()
                self._signal()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    def info(self) -> dict[str, Any]:
        return {"backend": "postgresql"}
