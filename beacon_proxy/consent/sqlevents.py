"""The store's history side: audit trail, open events and erasure.

* :meth:`SqlEvents.history` reads the append-only audit trail, for one address
  (found by its keyed hash, so also after erasure) or for all.
  :meth:`SqlEvents.recent_history` and :meth:`SqlEvents.recent_opens` give
  one address's newest entries first (the console).
* :meth:`SqlEvents.record_open` records an open only if the recipient consents
  at that moment -- checked in the write transaction that inserts it;
  :meth:`SqlEvents.record_opens` does the same for many in one transaction.
* :meth:`SqlEvents.forget` erases a recipient: the consent record, open
  events and queued forwards (they hold the sender's URL for that recipient)
  are deleted, the address and free-text reason are blanked in the audit
  trail, and each suppression is reduced to the keyed hash, so the address
  stays suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beacon_proxy.consent.address import Address, ListIdError, normalize_list_id
from beacon_proxy.consent.model import (
    AuditEntry,
    Forgotten,
    InvalidValue,
    OpenEvent,
    OpenInput,
    Page,
    check_text,
    utcnow,
)
from beacon_proxy.consent.sqlbase import (
    SqlBase,
    addr,
    audit_row,
    id_cursor,
    id_page,
    open_row,
    page_limit,
)

__all__ = ["SqlEvents"]



class SqlEvents(SqlBase):
    """Audit trail, open events and erasure."""

    async def history(self, address: str | Address | None = None, *, after: str | None = None,
                      limit: int = 100) -> Page[AuditEntry]:
        """Audit entries, oldest first: of one address, or of everything."""
        cursor, n = id_cursor(after), page_limit(limit)
        async with self._read() as c:
            if address is None:
                rows = await c.fetch("audit-all", cursor, n + 1)
            else:
                rows = await c.fetch("audit-of", self._hash(addr(address).key), cursor, n + 1)
        return id_page([audit_row(r) for r in rows], n)

    async def recent_history(self, address: str | Address, *,
                             limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` audit entries of one address, newest first."""
        n = page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("audit-of-recent", self._hash(addr(address).key), n)
        return [audit_row(r) for r in rows]

    async def recent_opens(self, address: str | Address, *, limit: int = 50) -> list[OpenEvent]:
        """The newest ``limit`` recorded opens of one address, newest first."""
        n = page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("opens-of-recent", addr(address).key, n)
        return [open_row(r) for r in rows]

    async def record_open(self, address: str | Address, *, list_id: str | None = None,
                          message_id: str | None = None, ua_class: str | None = None,
                          machine: bool = False, at: datetime | None = None) -> bool:
        """Record an open if the recipient consents now; ``False`` when not recorded.

        ``ua_class`` names the kind of client (``browser``, ``apple-mpp``,
        ``gmail-proxy``, ...); ``machine`` marks opens made by a proxy or a
        scanner rather than a person.
        """
        (done,) = await self.record_opens(
            [OpenInput(address, list_id, message_id, ua_class, machine, at)])
        return done

    async def record_opens(self, opens: Sequence[OpenInput]) -> list[bool]:
        """Record several opens in one transaction, each as :meth:`record_open` would.

        One flag per open, in order (``False``: the recipient does not consent
        now).  Every open is validated first: one bad value raises and records
        none.  The open pixel batches its writes this way: two statements and
        one commit (one fsync) for many opens.  The consent states are read
        inside the write transaction (SQLite: under its write lock;
        PostgreSQL: ``FOR SHARE``), so a change of consent is either before
        the whole batch or after it.
        """
        rows = [_open_row(o) for o in opens]
        if not rows:
            return []
        default = self.unknown.value
        async with self._write() as c:
            found = {r["key"]: r for r in await c.fetch(
                "open-consents", sorted({str(row[1]) for row in rows}))}
            done: list[bool] = []
            keep: list[tuple[object, ...]] = []
            for row in rows:
                rec = found.get(row[1])
                state = rec["beacons"] if rec is not None else "unknown"
                granted = (default if state == "unknown" else state) == "granted"
                done.append(granted)
                if granted:
                    address = rec["address"] if rec is not None else row[2]
                    keep.append((row[0], row[1], address, *row[3:]))
            await c.executemany("insert-open", keep)
        return done

    async def opens(self, *, since: datetime | None = None, address: str | Address | None = None,
                    list_id: str | None = None, after: str | None = None,
                    limit: int = 100, machine: bool | None = None) -> Page[OpenEvent]:
        """Recorded opens, oldest first, optionally since a time, of one address or list.

        ``machine=False`` keeps people's opens only, ``True`` those of image
        proxies and scanners only.
        """
        key = addr(address).key if address is not None else None
        try:
            lid = normalize_list_id(list_id) if list_id else None
        except ListIdError as exc:
            raise InvalidValue("list", str(exc)) from None
        cursor, n = id_cursor(after), page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("list-opens", cursor, since, key, lid, n + 1,
                                 None if machine is None else bool(machine))
        return id_page([open_row(r) for r in rows], n)

    async def forget(self, address: str | Address, *, actor: str | None = None) -> Forgotten:
        """Erase a recipient (see the module docstring); audited without the address."""
        a = addr(address)
        subject = self._hash(a.key)
        async with self._write_decisions() as (c, touched):
            touched.add(subject)
            consent = await c.execute("delete-consent", a.key)
            opens = await c.execute("delete-opens-of", a.key)
            forwards = await c.execute("delete-forwards-of", a.key)
            kept = await c.execute("forget-suppressions", subject, utcnow())
            redacted = await c.execute("redact-audit", subject)
            await self._audit_change(c, "forget", None, actor=actor, key=a.key)
        self._decisions_changed(touched)
        return Forgotten(consent > 0, opens, kept, redacted, forwards)


def _open_row(o: OpenInput) -> tuple[object, ...]:
    """The validated parameters of ``record-open`` (all but the default policy)."""
    a = addr(o.address)
    try:
        lid = normalize_list_id(o.list_id) if o.list_id else None
    except ListIdError as exc:
        raise InvalidValue("list", str(exc)) from None
    return (o.at or utcnow(), a.key, a.text, lid, check_text("message_id", o.message_id, 998),
            check_text("ua_class", o.ua_class, 40), bool(o.machine))
