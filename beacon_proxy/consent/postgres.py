"""The PostgreSQL backend: one database shared by many beacon-proxy nodes.

An asyncpg connection pool; reads take any connection, each write is one
transaction on one connection.  Migrations are serialised across nodes with
an advisory lock, so nodes may start together.  Nothing is cached in the
process: what one node commits, every node reads on its next lookup.

The URL is passed to asyncpg as it is: ``postgresql://user@host:5432/db``,
``postgresql:///db?host=/run/postgresql``; other query parameters
(``?search_path=beacon``) become server settings.  Every session runs at READ
COMMITTED whatever the database's or role's default isolation level.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from beacon_proxy.consent.model import StoreError, StoreUnavailable
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.sqlbase import Conn, Row
from beacon_proxy.consent.sqlstore import SqlStore

__all__ = ["PostgresStore"]

_CONNECTION_LOST = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
#: The writes are written for READ COMMITTED (PostgreSQL's default): a database or role
#: set to another default isolation would make them fail with serialization errors.
_SESSION = {"default_transaction_isolation": "read committed"}


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
                 timeout: float = 30.0) -> None:
        super().__init__(unknown=unknown)
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: Any = None

    def __repr__(self) -> str:
        return "PostgresStore(...)"  # the URL may carry a password

    async def _connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout,
                command_timeout=self.timeout * 10, server_settings=_SESSION)
        except (asyncpg.PostgresError, ValueError, *_CONNECTION_LOST) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def _disconnect(self) -> None:
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

    def info(self) -> dict[str, Any]:
        return {"backend": "postgresql"}
