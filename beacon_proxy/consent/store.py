"""The consent store's interface, and :func:`open_store` for a configured URL.

Consumers depend on the narrowest protocol that serves them:

* the relay on :class:`~beacon_proxy.consent.policy.ConsentLookup`
  (``decisions``: one round trip per message);
* the open pixel on :class:`OpenRecorder` (``record_open``);
* the one-click forwarder on :class:`ForwardQueue` (queue, claim, outcome);
* campaign diffing on :class:`CampaignStore` (one locked change per copy learned);
* the console dashboard's hourly counts on :class:`StatsStore`;
* the command line and the admin API on :class:`Store`.

Two backends implement :class:`Store` with the same behaviour:
:class:`~beacon_proxy.consent.sqlite.SqliteStore` (``sqlite:///var/beacon-proxy.db``,
a path relative to the working directory; ``sqlite:////srv/bp.db`` for an
absolute one) and :class:`~beacon_proxy.consent.postgres.PostgresStore`
(``postgresql://user@host/db``).

    >>> store = open_store("sqlite:///var/beacon-proxy.db")
    >>> store.path
    PosixPath('var/beacon-proxy.db')

``open_store`` does not connect; ``await store.open()`` does (and migrates),
``await store.close()`` disconnects; ``async with`` does both.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, Self
from urllib.parse import unquote, urlsplit

from beacon_proxy.consent.address import Address
from beacon_proxy.consent.cache import DEFAULT_CACHE_SIZE
from beacon_proxy.consent.model import (
    AuditEntry,
    Beacons,
    CampaignRecord,
    Consent,
    ConsentInput,
    Forgotten,
    ForwardJob,
    ForwardState,
    Imported,
    OpenEvent,
    OpenInput,
    Page,
    Suppression,
    SuppressionInput,
)
from beacon_proxy.consent.policy import ConsentLookup, Policy

__all__ = ["CampaignStore", "ForwardQueue", "OpenRecorder", "StatsStore", "Store", "open_store",
           "sqlite_path"]

AddressArg = str | Address


class OpenRecorder(Protocol):
    async def record_open(self, address: AddressArg, *, list_id: str | None = None,
                          message_id: str | None = None, ua_class: str | None = None,
                          machine: bool = False, at: datetime | None = None) -> bool:
        """Record an open if the recipient consents at this moment; ``False`` if not."""
        ...

    async def record_opens(self, opens: Sequence[OpenInput]) -> list[bool]:
        """Record several in one transaction; one flag per open (see ``record_open``)."""
        ...


class ForwardQueue(Protocol):
    """The durable queue of server-side forwards (see :mod:`.sqlforwards`)."""

    async def queue_forward(self, url: str, *, address: AddressArg, list_id: str | None,
                            at: datetime | None = None) -> int:
        """Queue (or find pending) a forward; its id, committed when this returns."""
        ...

    async def claim_forwards(self, limit: int, lease: float, *,
                             now: datetime | None = None) -> list[ForwardJob]:
        """Claim up to ``limit`` due jobs for ``lease`` seconds."""
        ...

    async def forward_done(self, job_id: int, *, at: datetime | None = None) -> bool: ...
    async def forward_retry(self, job_id: int, *, error: str, next_at: datetime) -> bool: ...
    async def forward_failed(self, job_id: int, *, error: str,
                             at: datetime | None = None) -> bool: ...
    async def prune_forwards(self, before: datetime) -> int:
        """Delete finished jobs that ended before ``before``; how many."""
        ...


class CampaignStore(Protocol):
    """Campaign diffing's shared memory (see :mod:`.sqlcampaigns`)."""

    async def change_campaign(
            self, digest: str, change: Callable[[CampaignRecord], CampaignRecord | None], *,
            at: datetime | None = None) -> CampaignRecord:
        """Apply ``change`` to the campaign's record under a lock; the committed record."""
        ...

    async def get_campaign(self, digest: str) -> CampaignRecord | None: ...
    async def prune_campaigns(self, before: datetime) -> int:
        """Delete campaigns not learned from since ``before``; how many."""
        ...


class StatsStore(Protocol):
    """The console dashboard's hourly counts (see :mod:`.sqlstats`)."""

    async def add_stats(self, counts: Sequence[tuple[str, str, int]]) -> None: ...
    async def stats_since(self, hour: str) -> list[tuple[str, str, int]]: ...
    async def prune_stats(self, before: str) -> int: ...
    async def opens_by_hour(self, since: datetime) -> list[tuple[str, bool, int]]: ...


class Store(ConsentLookup, OpenRecorder, ForwardQueue, CampaignStore, StatsStore, Protocol):
    """Everything the command line and the admin API do with the store."""

    unknown: Policy

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def info(self) -> dict[str, Any]: ...

    # consent
    async def get_consent(self, address: AddressArg) -> Consent | None: ...
    async def set_consent(self, address: AddressArg, beacons: Beacons | str, *,
                          source: str | None = None, actor: str | None = None,
                          reason: str | None = None) -> Consent: ...
    async def delete_consent(self, address: AddressArg, *, actor: str | None = None) -> bool: ...
    async def list_consent(self, *, after: str | None = None, limit: int = 100,
                           beacons: Beacons | str | None = None) -> Page[Consent]: ...
    def iter_consent(self) -> AsyncIterator[Consent]: ...
    async def import_consent(self, batches: AsyncIterable[Sequence[ConsentInput]], *,
                             actor: str | None = None, source: str | None = None) -> Imported: ...

    # suppressions
    async def suppress(self, address: AddressArg, list_id: str | None = None, *,
                       reason: str | None = None, source: str | None = None,
                       actor: str | None = None) -> Suppression: ...
    async def unsuppress(self, address: AddressArg, list_id: str | None = None, *,
                         actor: str | None = None, reason: str | None = None,
                         source: str | None = None) -> bool: ...
    async def suppressions_of(self, address: AddressArg) -> list[Suppression]: ...
    async def list_suppressions(self, *, after: str | None = None, limit: int = 100,
                                list_id: str | None = None,
                                global_only: bool = False) -> Page[Suppression]: ...
    def iter_suppressions(self) -> AsyncIterator[Suppression]: ...
    async def import_suppressions(self, batches: AsyncIterable[Sequence[SuppressionInput]], *,
                                  actor: str | None = None,
                                  source: str | None = None) -> Imported: ...

    # history and erasure
    async def history(self, address: AddressArg | None = None, *, after: str | None = None,
                      limit: int = 100) -> Page[AuditEntry]: ...
    async def opens(self, *, since: datetime | None = None, address: AddressArg | None = None,
                    list_id: str | None = None, after: str | None = None,
                    limit: int = 100, machine: bool | None = None) -> Page[OpenEvent]: ...
    async def recent_history(self, address: AddressArg, *,
                             limit: int = 50) -> list[AuditEntry]: ...
    async def recent_opens(self, address: AddressArg, *, limit: int = 50) -> list[OpenEvent]: ...
    async def forget(self, address: AddressArg, *, actor: str | None = None) -> Forgotten: ...

    # forwards, besides ForwardQueue
    async def list_forwards(self, *, state: ForwardState | str | None = None,
                            after: str | None = None, limit: int = 100) -> Page[ForwardJob]: ...


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"expected sqlite:///PATH, got {url!r}")
    path = unquote(parts.path[1:])
    if not path or path.endswith("/") or path == ":memory:":
        raise ValueError(f"expected sqlite:///PATH naming a file, got {url!r}")
    return path


def open_store(url: str, *, unknown: Policy = Policy.REFUSED, pool_size: int = 10,
               cache_size: int = DEFAULT_CACHE_SIZE) -> Store:
    """The store for a configured URL (not yet opened); raises ``ValueError`` for a bad URL.

    ``cache_size``: answers the relay's decision cache keeps (:mod:`.cache`; 0: none).
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from beacon_proxy.consent.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url), unknown=unknown, cache_size=cache_size)
    if scheme in ("postgresql", "postgres"):
        from beacon_proxy.consent.postgres import PostgresStore  # asyncpg only when used

        return PostgresStore(url, unknown=unknown, pool_size=pool_size, cache_size=cache_size)
    raise ValueError(f"expected sqlite:///PATH or postgresql://..., got {url!r}")
