"""The store's history side: audit trail, open events and erasure.

* :meth:`SqlEvents.history` reads the append-only audit trail, for one address
  (found by its keyed hash, so also after erasure) or for all.
* :meth:`SqlEvents.record_open` records an open only if the recipient consents
  at that moment -- checked in the same statement that inserts it.
* :meth:`SqlEvents.forget` erases a recipient: the consent record and open
  events are deleted, the address and free-text reason are blanked in the
  audit trail, and each suppression is reduced to the keyed hash, so the
  address stays suppressed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from beacon_proxy.consent.address import Address, ListIdError, normalize_list_id
from beacon_proxy.consent.model import (
    AuditEntry,
    Forgotten,
    InvalidValue,
    OpenEvent,
    Page,
    check_text,
    utcnow,
)
from beacon_proxy.consent.sqlbase import (
    SqlBase,
    addr,
    audit_row,
    id_cursor,
    open_row,
    page_limit,
)

__all__ = ["SqlEvents"]

_E = TypeVar("_E", AuditEntry, OpenEvent)


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
        return _page([audit_row(r) for r in rows], n)

    async def record_open(self, address: str | Address, *, list_id: str | None = None,
                          message_id: str | None = None, ua_class: str | None = None,
                          machine: bool = False, at: datetime | None = None) -> bool:
        """Record an open if the recipient consents now; ``False`` when not recorded.

        ``ua_class`` names the kind of client (``browser``, ``apple-mpp``,
        ``gmail-proxy``, ...); ``machine`` marks opens made by a proxy or a
        scanner rather than a person.
        """
        a = addr(address)
        try:
            lid = normalize_list_id(list_id) if list_id else None
        except ListIdError as exc:
            raise InvalidValue("list", str(exc)) from None
        message_id = check_text("message_id", message_id, 998)
        ua_class = check_text("ua_class", ua_class, 40)
        async with self._write() as c:
            n = await c.execute("record-open", at or utcnow(), a.key, a.text, lid, message_id,
                                ua_class, bool(machine), self.unknown.value)
        return n > 0

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
        return _page([open_row(r) for r in rows], n)

    async def forget(self, address: str | Address, *, actor: str | None = None) -> Forgotten:
        """Erase a recipient (see the module docstring); audited without the address."""
        a = addr(address)
        subject = self._hash(a.key)
        async with self._write() as c:
            consent = await c.execute("delete-consent", a.key)
            opens = await c.execute("delete-opens-of", a.key)
            kept = await c.execute("forget-suppressions", subject, utcnow())
            redacted = await c.execute("redact-audit", subject)
            await self._audit_change(c, "forget", None, actor=actor, key=a.key)
        return Forgotten(consent > 0, opens, kept, redacted)


def _page(rows: list[_E], limit: int) -> Page[_E]:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1].id) if more else None)
