"""The store's forward queue: server-side requests that must survive a restart.

When a recipient unsubscribes through the proxy's own link, the sender's list
must learn it too: the proxy sends a one-click POST to the sender's RFC 8058
URL.  That request may fail for hours (the sender's server is down), and the
process may be killed in between, so it is queued here, in the same database
as the suppression it mirrors, rather than in memory:

* :meth:`SqlForwards.queue_forward` commits a row before it returns; while one
  is pending for the same recipient, list and URL, a second call adds none.
* :meth:`SqlForwards.claim_forwards` takes due rows by pushing their
  ``next_at`` forward by a lease, in one statement (PostgreSQL:
  ``FOR UPDATE SKIP LOCKED``; SQLite: the single writer), so nodes sharing a
  database never send one row at the same time, and a row whose sender died
  mid-send is due again when the lease ends.  Delivery is at least once.
* :meth:`SqlForwards.forward_done`, :meth:`~SqlForwards.forward_retry` and
  :meth:`~SqlForwards.forward_failed` record the outcome; finished rows stay
  for inspection (:meth:`~SqlForwards.list_forwards`) until
  :meth:`~SqlForwards.prune_forwards` removes them, and ``forget`` erases a
  recipient's rows.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from beacon_proxy.consent.address import Address, ListIdError
from beacon_proxy.consent.model import (
    ForwardJob,
    ForwardState,
    InvalidValue,
    Page,
    StoreError,
    check_text,
    utcnow,
)
from beacon_proxy.consent.sqlbase import (
    MAX_PAGE,
    Row,
    SqlBase,
    addr,
    id_cursor,
    id_page,
    list_id_of,
    page_limit,
    ts,
)

__all__ = ["MAX_ERROR", "MAX_URL", "SqlForwards"]

MAX_URL = 2048  # characters; tokens carry at most 1024 bytes
MAX_ERROR = 500  # characters of a recorded error
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _forward_row(r: Row) -> ForwardJob:
    return ForwardJob(int(r["id"]), r["url"], r["address"], r["list_id"] or None,
                      int(r["attempts"]), ts(r["created_at"]), ts(r["next_at"]),
                      ForwardState(r["state"]), r["last_error"])


def _error_text(error: str) -> str:
    """An error as one bounded line (it comes from exceptions and remote servers)."""
    text = _CONTROL.sub(" ", str(error)).strip()
    return (text[:MAX_ERROR - 3] + "...") if len(text) > MAX_ERROR else text or "error"


def _job_id(job_id: int) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise InvalidValue("id", "must be a positive integer")
    return job_id


class SqlForwards(SqlBase):
    """The durable queue of server-side forwards (see the module docstring)."""

    async def queue_forward(self, url: str, *, address: str | Address, list_id: str | None,
                            at: datetime | None = None) -> int:
        """Queue a forward to ``url`` for a recipient and list; its id, committed on return.

        Idempotent while pending: the id of the pending row for the same
        recipient, list and URL is returned instead of adding one.
        """
        a = addr(address)
        checked = check_text("url", url, MAX_URL)
        if checked is None or checked != url:
            raise InvalidValue("url", "must be a non-empty URL without surrounding spaces")
        try:
            lid = list_id_of(list_id)
        except ListIdError as exc:
            raise InvalidValue("list", str(exc)) from None
        async with self._write() as c:
            rows = await c.fetch("queue-forward", url, a.key, a.text, lid, at or utcnow())
            if not rows:
                rows = await c.fetch("pending-forward", a.key, lid, url)
        if not rows:
            raise StoreError("the forward was neither queued nor found pending")
        return int(rows[0]["id"])

    async def claim_forwards(self, limit: int, lease: float, *,
                             now: datetime | None = None) -> list[ForwardJob]:
        """Claim up to ``limit`` due jobs for ``lease`` seconds, oldest due first.

        A claimed job is not due again until the lease ends, so no other
        claimer gets it meanwhile; record its outcome before then.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidValue("limit", f"must be between 1 and {MAX_PAGE}")
        if not 0 < lease <= 7 * 86400:
            raise InvalidValue("lease", "must be between 0 and 7 days")
        start = now or utcnow()
        async with self._write() as c:
            rows = await c.fetch("claim-forwards", start, start + timedelta(seconds=lease), limit)
        return sorted((_forward_row(r) for r in rows), key=lambda j: (j.next_at, j.id))

    async def forward_done(self, job_id: int, *, at: datetime | None = None) -> bool:
        """The job succeeded; ``False`` if it was not pending (nothing changed)."""
        async with self._write() as c:
            n = await c.execute("forward-done", _job_id(job_id), at or utcnow())
        return n > 0

    async def forward_retry(self, job_id: int, *, error: str, next_at: datetime) -> bool:
        """The attempt failed for now: due again at ``next_at``, with its error kept."""
        async with self._write() as c:
            n = await c.execute("forward-retry", _job_id(job_id), next_at, _error_text(error))
        return n > 0

    async def forward_failed(self, job_id: int, *, error: str,
                             at: datetime | None = None) -> bool:
        """Give up on the job; it stays, ``failed``, with its last error."""
        async with self._write() as c:
            n = await c.execute("forward-failed", _job_id(job_id), at or utcnow(),
                                _error_text(error))
        return n > 0

    async def list_forwards(self, *, state: ForwardState | str | None = None,
                            after: str | None = None, limit: int = 100) -> Page[ForwardJob]:
        """Queued forwards in the order they were queued, optionally in one state."""
        try:
            wanted = None if state is None else ForwardState(state).value
        except ValueError:
            raise InvalidValue("state", "must be pending, done or failed") from None
        cursor, n = id_cursor(after), page_limit(limit)
        async with self._read() as c:
            rows = await c.fetch("list-forwards", cursor, wanted, n + 1)
        return id_page([_forward_row(r) for r in rows], n)

    async def prune_forwards(self, before: datetime) -> int:
        """Delete done and failed jobs that ended before ``before``; how many."""
        async with self._write() as c:
            return await c.execute("prune-forwards", before)
