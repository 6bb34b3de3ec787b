"""The store's records side: the relay's lookup, consent and suppressions.

Every method takes an address as text (or a parsed
:class:`~beacon_proxy.consent.address.Address`) and raises
:class:`~beacon_proxy.consent.address.AddressError` for a bad one; every change
is written in one transaction together with its audit entry.

The relay's lookup goes through a decision cache (:mod:`.cache`) that is
exact: every lookup checks the store's decision version (PostgreSQL: in the
statement it runs anyway; SQLite: ``PRAGMA data_version`` first, or only in
the statement when there are misses and a data version is held), so a change
committed by any node or process before a lookup starts applies to it
(staleness bound: zero).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence

from beacon_proxy.consent.address import Address, ListIdError, list_key, lookup_key
from beacon_proxy.consent.cache import LOOKUPS, CacheMode
from beacon_proxy.consent.model import (
    Beacons,
    Consent,
    ConsentInput,
    Imported,
    InvalidValue,
    Page,
    Suppression,
    SuppressionInput,
    check_text,
    utcnow,
)
from beacon_proxy.consent.policy import Decision
from beacon_proxy.consent.sqlbase import (
    EXPORT_PAGE,
    addr,
    consent_row,
    id_cursor,
    id_page,
    list_id_of,
    page_limit,
    suppression_row,
)
from beacon_proxy.consent.sqlcampaigns import SqlCampaigns
from beacon_proxy.consent.sqlevents import SqlEvents
from beacon_proxy.consent.sqlforwards import SqlForwards
from beacon_proxy.consent.sqlstats import SqlStats

__all__ = ["SqlStore"]


def _state(beacons: Beacons | str) -> Beacons:
    try:
        return Beacons(beacons)
    except ValueError:
        raise InvalidValue("beacons", "must be granted, refused or unknown") from None


def _list_arg(list_id: str | None) -> str:
    try:
        return list_id_of(list_id)
    except ListIdError as exc:
        raise InvalidValue("list", str(exc)) from None


class SqlStore(SqlEvents, SqlForwards, SqlCampaigns, SqlStats):
    """Consent, suppressions, audit trail, open events, forwards and campaign memory in a
    SQL database."""

    # -- the relay's lookup ----------------------------------------------------

    async def decisions(
        self, recipients: Sequence[str], list_id: str | None
    ) -> Mapping[str, Decision]:
        """See :class:`~beacon_proxy.consent.policy.ConsentLookup`: at most one statement
        for the recipients the cache does not hold; after a change, one more for what
        changed since the cache's version and one for the hits it touched (see
        :mod:`.cache`).

        The cache is keyed by the recipient as passed (and the list), so a hit costs
        no address parsing and no keyed hash."""
        if not recipients:
            return {}
        lk = list_key(list_id)
        cache = self.cache
        if cache is None:
            LOOKUPS["off"] += len(recipients)
            return (await self._lookup_recipients(recipients, lk))[0]
        result: dict[str, Decision] = {}
        hashes: dict[str, str] = {}
        misses: list[str] = []
        for r in dict.fromkeys(recipients):
            hit = cache.get(r, lk)
            if hit is None:
                misses.append(r)
            else:
                result[r], hashes[r] = hit
        # Asked after the cache (no await in between): with misses the statement runs
        # anyway and reads the version in its own snapshot, which checks the hits, so
        # SQLite reads no data version then (see SqliteStore._cache_mode).
        mode, mark = self._cache_mode(bool(misses))
        if mode is CacheMode.BYPASS:
            LOOKUPS["bypass"] += len(recipients)
            cache.invalidate()
            return (await self._lookup_recipients(recipients, lk))[0]
        if mode is CacheMode.TRUST and not misses:
            LOOKUPS["hit"] += len(result)
            return result
        held = cache.version  # the version the hits were read at (None: there are none)
        found, found_hashes, version = await self._lookup_recipients(misses, lk)
        fetched = [(found, found_hashes, version)]
        missed = len(misses)
        if version != held:  # the store changed since the cache's answers
            changed = (await self._changes_since(held, version)
                       if held is not None and len(cache) else None)
            cache.move(held, version, changed)
            stale = [r for r in result if changed is None or hashes[r] in changed]
            if stale:  # read again the hits the change touched
                again, again_hashes, version = await self._lookup_recipients(stale, lk)
                cache.advance(version)  # moved again meanwhile: start afresh
                fetched.append((again, again_hashes, version))
                missed += len(stale)
                result.update(again)
        result.update(found)
        LOOKUPS["miss"] += missed
        if missed < len(result):
            LOOKUPS["hit"] += len(result) - missed
        for answers, keyed, at in fetched:
            for r, decision in answers.items():
                cache.put(r, lk, decision, keyed[r], at)
        if mark is not None and cache.version == version:  # read after the mark was taken
            self._cache_validated(mark)
        return result

    async def _lookup_recipients(self, recipients: Sequence[str], list_key: str
                                 ) -> tuple[dict[str, Decision], dict[str, str], int]:
        """Each recipient's decision, read from the store, the keyed hash of its
        address, and the decision version."""
        keys = {r: lookup_key(r) for r in recipients}
        unique = sorted(set(keys.values()))
        hashes = {k: self._hash(k) for k in unique}
        found, version = await self._lookup(unique, hashes, list_key)
        return ({r: found[k] for r, k in keys.items()},
                {r: hashes[k] for r, k in keys.items()}, version)

    async def _lookup(self, unique: list[str], hashes: Mapping[str, str], list_key: str
                      ) -> tuple[dict[str, Decision], int]:
        """The decisions of some lookup keys (absent: unknown) and the decision version,
        in one statement."""
        async with self._lookup_read(len(unique)) as c:
            rows = await c.fetch("decisions", unique, [hashes[k] for k in unique], list_key)
        default = Decision(self.unknown.value)
        by_key: dict[str, Decision] = {}
        version = 0
        for r in rows:
            version = int(r["version"])
            if r["key"] is None:  # no keys: the version alone
                continue
            if r["suppressed"] is not None:  # '' for every list, else the list id
                by_key[r["key"]] = (Decision.SUPPRESSED if r["suppressed"] == ""
                                    else Decision.SUPPRESSED_LIST)
            elif r["beacons"] in (Beacons.GRANTED, Beacons.REFUSED):
                by_key[r["key"]] = Decision(r["beacons"])
            else:
                by_key[r["key"]] = default
        return {k: by_key.get(k, default) for k in unique}, version

    # -- consent ---------------------------------------------------------------

    async def get_consent(self, address: str | Address) -> Consent | None:
        a = addr(address)
        async with self._read() as c:
            rows = await c.fetch("get-consent", a.key)
        return consent_row(rows[0]) if rows else None

    async def set_consent(self, address: str | Address, beacons: Beacons | str, *,
                          source: str | None = None, actor: str | None = None,
                          reason: str | None = None) -> Consent:
        """Set the consent record; audited (with ``reason``, when given)."""
        a, state = addr(address), _state(beacons)
        source, reason = check_text("source", source), check_text("reason", reason, 500)
        now = utcnow()
        async with self._write_decisions() as (c, touched):
            old = await c.fetch("get-consent", a.key)
            await c.execute("upsert-consent", a.key, a.text, state.value, source, actor, now)
            touched.add(self._hash(a.key))
            await self._audit_change(c, "consent.set", a, actor=actor, new=state.value,
                                     old=old[0]["beacons"] if old else None, source=source,
                                     reason=reason)
        self._decisions_changed(touched)
        return Consent(a.text, state, source, actor, now)

    async def delete_consent(self, address: str | Address, *, actor: str | None = None) -> bool:
        """Remove the consent record (the recipient is unknown again); audited."""
        a = addr(address)
        async with self._write_decisions() as (c, touched):
            old = await c.fetch("get-consent", a.key)
            if not old:
                return False
            await c.execute("delete-consent", a.key)
            touched.add(self._hash(a.key))
            await self._audit_change(c, "consent.delete", a, actor=actor, old=old[0]["beacons"])
        self._decisions_changed(touched)
        return True

    async def list_consent(self, *, after: str | None = None, limit: int = 100,
                           beacons: Beacons | str | None = None) -> Page[Consent]:
        """Consent records in key order; ``next`` is the cursor for the following page."""
        state = None if beacons is None else _state(beacons).value
        n = page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("list-consent", after or "", state, n + 1)
        more = len(rows) > n
        rows = rows[:n]
        return Page([consent_row(r) for r in rows], rows[-1]["key"] if more else None)

    async def iter_consent(self) -> AsyncIterator[Consent]:
        """Every consent record, in key order, read page by page (for exports)."""
        after: str | None = None
        while True:
            page = await self.list_consent(after=after, limit=EXPORT_PAGE)
            for item in page.items:
                yield item
            if page.next is None:
                return
            after = page.next

    async def import_consent(self, batches: AsyncIterable[Sequence[ConsentInput]], *,
                             actor: str | None = None, source: str | None = None) -> Imported:
        """Apply every row in one transaction; an exception from ``batches`` undoes all.

        Within the file a later row for the same address wins.  ``source`` is
        used for rows without one.  A row equal to the record (address, state and
        source) is not written again and not audited.
        """
        total = changed = 0
        async with self._write_decisions() as (c, touched):
            async for batch in batches:
                last = {row.address.key: row for row in batch}
                olds = {r["key"]: (r["address"], r["beacons"], r["source"])
                        for r in await c.fetch("consent-states", list(last))}
                new = {k: row for k, row in last.items()
                       if olds.get(k) != (row.address.text, row.beacons.value,
                                          row.source or source)}
                total += len(batch)
                changed += len(new)
                if not new:
                    continue
                now = utcnow()
                await c.executemany("upsert-consent", [
                    (k, row.address.text, row.beacons.value, row.source or source, actor, now)
                    for k, row in new.items()])
                hashed = {k: self._hash(k) for k in new}
                touched.update(hashed.values())
                await c.executemany("insert-audit", [
                    (now, actor, "consent.set", hashed[k], row.address.text, None,
                     old[1] if (old := olds.get(k)) else None, row.beacons.value,
                     row.source or source, None)
                    for k, row in new.items()])
        self._decisions_changed(touched)
        return Imported(total, changed)

    # -- suppressions ----------------------------------------------------------

    async def suppress(self, address: str | Address, list_id: str | None = None, *,
                       reason: str | None = None, source: str | None = None,
                       actor: str | None = None) -> Suppression:
        """Suspend delivery to ``address`` for one list, or for all mail (``list_id=None``)."""
        a, lid = addr(address), _list_arg(list_id)
        reason, source = check_text("reason", reason, 500), check_text("source", source)
        subject = self._hash(a.key)
        async with self._write_decisions() as (c, touched):
            existed = any(r["list_id"] == lid for r in await c.fetch("suppressions-of", subject))
            touched.add(subject)
            await c.execute("upsert-suppression", subject, lid, a.text, reason, source, actor,
                            utcnow())
            await self._audit_change(c, "suppression.add", a, actor=actor, list_id=lid,
                                     old="suppressed" if existed else None, new="suppressed",
                                     source=source, reason=reason)
            rows = await c.fetch("suppressions-of", subject)
        self._decisions_changed(touched)
        return next(suppression_row(r) for r in rows if r["list_id"] == lid)

    async def unsuppress(self, address: str | Address, list_id: str | None = None, *,
                         actor: str | None = None, reason: str | None = None,
                         source: str | None = None) -> bool:
        """Lift a suppression (also one kept only as a hash after erasure); audited with
        ``reason`` and ``source`` when given."""
        a, lid = addr(address), _list_arg(list_id)
        reason, source = check_text("reason", reason, 500), check_text("source", source)
        async with self._write_decisions() as (c, touched):
            n = await c.execute("delete-suppression", self._hash(a.key), lid)
            if n:
                touched.add(self._hash(a.key))
                await self._audit_change(c, "suppression.remove", a, actor=actor, list_id=lid,
                                         old="suppressed", reason=reason, source=source)
        self._decisions_changed(touched)
        return n > 0

    async def suppressions_of(self, address: str | Address) -> list[Suppression]:
        """Every suppression of one address (global first, then by list id)."""
        a = addr(address)
        async with self._read() as c:
            rows = await c.fetch("suppressions-of", self._hash(a.key))
        return [suppression_row(r) for r in rows]

    async def list_suppressions(self, *, after: str | None = None, limit: int = 100,
                                list_id: str | None = None,
                                global_only: bool = False) -> Page[Suppression]:
        """Suppressions in the order they were first made; filter by list or global ones."""
        lid = "" if global_only else (_list_arg(list_id) if list_id else None)
        cursor, n = id_cursor(after), page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("list-suppressions", cursor, lid, n + 1)
        return id_page([suppression_row(r) for r in rows], n)

    async def iter_suppressions(self) -> AsyncIterator[Suppression]:
        after: str | None = None
        while True:
            page = await self.list_suppressions(after=after, limit=EXPORT_PAGE)
            for item in page.items:
                yield item
            if page.next is None:
                return
            after = page.next

    async def import_suppressions(self, batches: AsyncIterable[Sequence[SuppressionInput]], *,
                                  actor: str | None = None, source: str | None = None
                                  ) -> Imported:
        """Like :meth:`import_consent`: all rows in one transaction, or none; a row equal
        to the suppression held (address, reason, source) is not written nor audited."""
        total = changed = 0
        async with self._write_decisions() as (c, touched):
            async for batch in batches:
                last = {(self._hash(row.address.key), row.list_id or ""): row for row in batch}
                hashes = sorted({h for h, _ in last})
                existing = {(r["key_hash"], r["list_id"]): (r["address"], r["reason"], r["source"])
                            for r in await c.fetch("suppression-keys", hashes)}
                new = {k: row for k, row in last.items()
                       if existing.get(k) != (row.address.text, row.reason, source)}
                total += len(batch)
                changed += len(new)
                if not new:
                    continue
                now = utcnow()
                touched.update(h for h, _ in new)
                await c.executemany("upsert-suppression", [
                    (h, lid, row.address.text, row.reason, source, actor, now)
                    for (h, lid), row in new.items()])
                await c.executemany("insert-audit", [
                    (now, actor, "suppression.add", h, row.address.text, lid or None,
                     "suppressed" if (h, lid) in existing else None, "suppressed", source,
                     row.reason)
                    for (h, lid), row in new.items()])
        self._decisions_changed(touched)
        return Imported(total, changed)
