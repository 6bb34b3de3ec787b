"""The store's shared core, once for both backends, over named queries.

A backend (:mod:`.sqlite`, :mod:`.postgres`) only connects and hands out a
:class:`Conn` for reading or for one write transaction; everything else --
normalising addresses, hashing, the audit trail, batching imports -- is
written once on top of this class (:mod:`.sqlevents`, :mod:`.sqlstore`), so
both backends behave the same, which the contract tests check.

Addresses are hashed with the store's own key (HMAC-SHA256, 256-bit random
key made at the first migration, kept in ``store_meta``): a suppression is
looked up by that hash, so it still holds after ``forget`` removed the
address.  The key lives in the database, not in the configuration, so it
survives a rotation of ``[tokens] secret`` and every node shares it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar

from beacon_proxy.consent.address import Address, normalize_list_id, parse_address
from beacon_proxy.consent.cache import DEFAULT_CACHE_SIZE, CacheMode, DecisionCache
from beacon_proxy.consent.model import (
    AuditEntry,
    Beacons,
    Consent,
    InvalidValue,
    OpenEvent,
    Page,
    StoreError,
    Suppression,
    parse_time,
    utcnow,
)
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.queries import Migration, load_migrations, load_queries
from beacon_proxy.keyed import KeyedHash

__all__ = [
    "CHANGES_KEPT",
    "CHANGES_LOGGED",
    "EXPORT_PAGE",
    "LOOP_READ_MAX",
    "MAX_PAGE",
    "Conn",
    "Row",
    "SqlBase",
    "addr",
    "audit_row",
    "consent_row",
    "id_cursor",
    "id_page",
    "list_id_of",
    "open_row",
    "page_limit",
    "suppression_row",
    "ts",
]

Row = dict[str, Any]
#: Versions of decision changes kept (consent.cache reads those since its own).
CHANGES_KEPT = 100_000
#: A change of more addresses (an import) is not logged one by one: caches forget all.
CHANGES_LOGGED = 10_000
#: Rows one statement of the relay's decision lookup may read on the event loop
#: (SQLite, see :mod:`.sqlite`): more go to the connection's thread.
LOOP_READ_MAX = 32
MAX_PAGE = 1000
EXPORT_PAGE = MAX_PAGE


class Conn(Protocol):
    """A connection running named queries (inside a transaction when writing)."""

    async def fetch(self, query: str, *args: object) -> list[Row]: ...
    async def execute(self, query: str, *args: object) -> int: ...
    async def executemany(self, query: str, rows: Sequence[Sequence[object]]) -> None: ...
    async def script(self, sql: str) -> None: ...


def ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_time(str(value))


def addr(address: str | Address) -> Address:
    return address if isinstance(address, Address) else parse_address(address)


def list_id_of(list_id: str | None) -> str:
    return "" if list_id is None or list_id == "" else normalize_list_id(list_id)


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidValue("limit", f"must be between 1 and {MAX_PAGE}")
    return limit


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


_R = TypeVar("_R", bound=_HasId)


def id_page(records: list[_R], limit: int) -> Page[_R]:
    """A page of ``limit`` records fetched as ``limit + 1``: the extra one says there
    is a next page, whose cursor is the last record's id."""
    more = len(records) > limit
    records = records[:limit]
    return Page(records, str(records[-1].id) if more else None)


def id_cursor(after: str | None) -> int:
    if after is None or after == "":
        return 0
    if not after.isdigit() or len(after) > 18:
        raise InvalidValue("after", "not a cursor from a previous page")
    return int(after)


def consent_row(r: Row) -> Consent:
    return Consent(r["address"], Beacons(r["beacons"]), r["source"], r["actor"],
                   ts(r["updated_at"]))


def suppression_row(r: Row) -> Suppression:
    return Suppression(int(r["id"]), r["address"], r["list_id"] or None, r["reason"],
                       r["source"], r["actor"], ts(r["created_at"]),
                       r["forgotten_at"] is not None)


def audit_row(r: Row) -> AuditEntry:
    return AuditEntry(int(r["id"]), ts(r["at"]), r["actor"], r["action"], r["address"],
                      r["list_id"] or None, r["old"], r["new"], r["source"], r["reason"])


def open_row(r: Row) -> OpenEvent:
    return OpenEvent(int(r["id"]), ts(r["at"]), r["address"], r["list_id"], r["message_id"],
                     r["ua_class"], bool(r["machine"]))


class SqlBase(abc.ABC):
    """Connection handling, migrations and helpers shared by the store's operations."""

    dialect: ClassVar[str]

    def __init__(self, *, unknown: Policy = Policy.REFUSED,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.unknown = unknown
        #: The relay's decision cache (:mod:`.cache`); None when ``cache_size`` is 0.
        self.cache = DecisionCache(cache_size) if cache_size > 0 else None
        self._decision_schema = ""  # where decision_version is (PostgreSQL's notifications)
        self._decision_log = True
        self._keyed = KeyedHash(b"")  # the store's hash key, read by open()
        self.queries: dict[str, str] = {}
        self._migrations: tuple[Migration, ...] = ()

    # -- lifecycle -----------------------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads (sees committed data only)."""

    @abc.abstractmethod
    def _write(self) -> AbstractAsyncContextManager[Conn]:
        """One write transaction: committed on success, rolled back on any exception."""

    def _lookup_read(self, rows: int) -> AbstractAsyncContextManager[Conn]:
        """A connection for one statement of the relay's decision lookup (once per
        message) reading at most about ``rows`` rows (SQLite: on the event loop when
        few, see :mod:`.sqlite`)."""
        del rows
        return self._read()

    def _cache_mode(self, misses: bool = False) -> tuple[CacheMode, object]:
        """How far the next lookup may trust the cache, and a mark for
        :meth:`_cache_validated` (SQLite: the data version read now; None: no mark).
        ``misses``: the lookup has some, so it runs its statement anyway."""
        del misses
        return CacheMode.CHECK, None

    def _cache_validated(self, mark: object) -> None:
        """A lookup that took ``mark`` read the version the cache holds (SQLite keeps it:
        until the data version moves, the cache needs no statement)."""
        del mark  # PostgreSQL reads the version in every lookup

    @contextlib.asynccontextmanager
    async def _write_decisions(self) -> AsyncIterator[tuple[Conn, set[str]]]:
        """A write transaction that changes decisions: add the keyed hash of every
        recipient it changes to the set; at its end the decision version moves and the
        change is logged (``decision_changes``), so caches forget only those."""
        async with self._write() as c:
            before = None
            if self.dialect == "sqlite" and self._decision_log:  # the single writer
                before = int((await c.fetch("decision-version"))[0]["version"])
            changed: set[str] = set()
            yield c, changed
            if changed and self._decision_log:
                after = int((await c.fetch("bump-decision-version",
                                           self._decision_schema))[0]["version"])
                start = before if before is not None else after - 1
                if len(changed) <= CHANGES_LOGGED:
                    await c.executemany("log-decision-change",
                                        [(start, after, h) for h in sorted(changed)])
                if after // 1000 != start // 1000:
                    await c.execute("prune-decision-changes", after - CHANGES_KEPT)

    async def _changes_since(self, held: int, version: int) -> set[str] | None:
        """The keyed hashes changed between two versions; None when some change in
        between was not logged (made outside the store, or pruned) or more than
        :data:`CHANGES_LOGGED` rows are to read: forget all.

        One version can log up to :data:`CHANGES_LOGGED` rows (a bulk change), so the
        span of versions bounds nothing: the first statement reads at most
        :data:`LOOP_READ_MAX` rows (SQLite: on the event loop), and only a longer log
        is read again whole (SQLite: in the thread)."""
        async with self._lookup_read(LOOP_READ_MAX) as c:
            rows = await c.fetch("decision-changes", held, version, LOOP_READ_MAX)
        if len(rows) == LOOP_READ_MAX:  # perhaps cut short: read it all, bounded
            async with self._lookup_read(CHANGES_LOGGED + 1) as c:
                rows = await c.fetch("decision-changes", held, version, CHANGES_LOGGED + 1)
            if len(rows) > CHANGES_LOGGED:
                return None
        covered, changed = held, set()
        for r in rows:  # oldest first; several rows per change
            if int(r["version_from"]) > covered:
                return None
            covered = max(covered, int(r["version_to"]))
            changed.add(str(r["key_hash"]))
        return changed if covered == version else None

    def _decisions_changed(self, hashes: set[str]) -> None:
        """This process committed a change of these recipients (keyed hashes): forget
        their answers at once (the version and the change log would tell the next
        lookup too; this only frees the entries sooner)."""
        if self.cache is not None:
            self.cache.forget(hashes)

    async def open(self) -> None:
        """Connect, apply pending migrations, load the hash key."""
        self.queries = await asyncio.to_thread(load_queries, self.dialect)
        self._migrations = await asyncio.to_thread(load_migrations, self.dialect)
        await self._connect()
        try:
            await self._migrate()
            # (a schema from before the decision version: only in upgrade tests)
            self._decision_log = any(m.name == "decision_version" for m in self._migrations)
            if self._decision_log:
                async with self._read() as c:
                    self._decision_schema = str(
                        (await c.fetch("decision-schema"))[0]["schema"])
        except BaseException:
            await self._disconnect()
            raise

    async def close(self) -> None:
        await self._disconnect()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        async with self._write() as c:
            await c.fetch("lock-migrations")
            await c.execute("create-migrations")
            done = {int(r["version"]) for r in await c.fetch("applied-migrations")}
            if done and max(done) > len(self._migrations):
                raise StoreError(f"the database schema (version {max(done)}) is newer than "
                                 f"this beacon-proxy knows ({len(self._migrations)}): upgrade")
            for mig in self._migrations:
                if mig.version not in done:
                    await c.script(mig.sql)
                    await c.execute("record-migration", mig.version, mig.name, utcnow())
            await c.execute("init-meta", "hash_key", secrets.token_hex(32))
            rows = await c.fetch("get-meta", "hash_key")
        if not rows:
            raise StoreError("the store has no hash key")
        self._keyed = KeyedHash(bytes.fromhex(rows[0]["value"]))

    @property
    def schema_version(self) -> int:
        return len(self._migrations)

    def _hash(self, key: str) -> str:
        """The keyed hash an address is known by after erasure (HMAC-SHA256, hex)."""
        # on the event loop, once per decision looked up: KeyedHash keeps the GIL
        return self._keyed.hexdigest(key.encode("utf-8"))

    async def _audit_change(self, c: Conn, action: str, address: Address | None, *,
                            actor: str | None, list_id: str = "", old: str | None = None,
                            new: str | None = None, source: str | None = None,
                            reason: str | None = None, key: str | None = None) -> None:
        """Append one entry to the audit trail (subject: the keyed hash of the address)."""
        subject = self._hash(key if key is not None else address.key if address else "")
        await c.execute("insert-audit", utcnow(), actor, action, subject,
                        address.text if address else None, list_id or None, old, new, source,
                        reason)
