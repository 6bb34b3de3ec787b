"""The store's campaign memory: what campaign diffing learned, shared by every node.

Campaign diffing (:mod:`beacon_proxy.rewrite.campaign`) compares the copies
of one newsletter that different recipients get.  Its memory of a campaign
must be one for all nodes that deliver it, or each node would see only its
share of the copies; so it lives here, one row per campaign:

* :meth:`SqlCampaigns.change_campaign` runs a change on a campaign's row
  inside one write transaction, with the row locked (PostgreSQL: ``FOR
  UPDATE``; SQLite: the single writer), so two nodes learning copies of one
  campaign at the same moment both count;
* :meth:`SqlCampaigns.get_campaign` reads it;
* :meth:`SqlCampaigns.prune_campaigns` removes campaigns nothing was learned
  from since a time (the relay's expiry).

The rows hold no address and no URL: the memory keeps 8-byte hashes of URL
components, and ``learned`` short hashes of the copies learned (per recipient,
keyed by the campaign: :func:`beacon_proxy.rewrite.diffing.copy_id`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime

from beacon_proxy.consent.model import CampaignRecord, InvalidValue, StoreError, utcnow
from beacon_proxy.consent.sqlbase import Row, SqlBase, ts

__all__ = ["MAX_LEARNED", "MAX_MEMORY", "CampaignChange", "SqlCampaigns"]

MAX_MEMORY = 4 << 20  # characters of a stored memory (the memory's own bounds: ~1.2 MB)
MAX_LEARNED = 1000  # copies listed as learned
_DIGEST = re.compile(r"[0-9a-f]{16,64}\Z")
_LEARNED = re.compile(r"[0-9A-Za-z_-]{1,32}\Z")

CampaignChange = Callable[[CampaignRecord], CampaignRecord | None]
"""A change of a campaign's record: the record in, the new one out (None: unchanged).
It runs inside the transaction, with the row locked, in a worker thread: keep it short
and synchronous, and touch nothing the event loop uses."""


def _digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidValue("campaign", "must be 16 to 64 lower-case hex digits")
    return digest


def _record(r: Row) -> CampaignRecord:
    learned = tuple(x for x in str(r["learned"]).split(",") if x)
    return CampaignRecord(str(r["memory"]), int(r["copies"]), learned, ts(r["updated_at"]))


def _check(record: CampaignRecord) -> None:
    if len(record.memory) > MAX_MEMORY:
        raise InvalidValue("memory", f"longer than {MAX_MEMORY} characters")
    if not 0 <= record.copies < 1 << 31:
        raise InvalidValue("copies", "out of range")
    if len(record.learned) > MAX_LEARNED or not all(_LEARNED.match(x) for x in record.learned):
        raise InvalidValue("learned", f"at most {MAX_LEARNED} short ids of [0-9A-Za-z_-]")


class SqlCampaigns(SqlBase):
    """Campaign diffing's memory, one row per campaign (see the module docstring)."""

    async def change_campaign(self, digest: str, change: CampaignChange, *,
                              at: datetime | None = None) -> CampaignRecord:
        """Apply ``change`` to the campaign's record (an empty one when new) under a
        lock; the record as committed."""
        key, now = _digest(digest), at or utcnow()
        async with self._write() as c:
            for _ in range(3):  # a prune may delete the row between the two: again
                await c.execute("ensure-campaign", key, now)
                rows = await c.fetch("lock-campaign", key)
                if rows:
                    break
            else:
                raise StoreError(f"campaign {key} vanished while locked")
            current = _record(rows[0])
            # In a thread: parsing, learning and writing a memory is CPU work of up to
            # ~0.3 s (a hostile 1024-reference copy) that must not stall the event loop.
            changed = await asyncio.to_thread(change, current)
            if changed is None:
                return current
            _check(changed)
            changed = CampaignRecord(changed.memory, changed.copies, changed.learned, now)
            await c.execute("save-campaign", key, changed.memory, changed.copies,
                            ",".join(changed.learned), now)
        return changed

    async def get_campaign(self, digest: str) -> CampaignRecord | None:
        """The campaign's record, or None when there is none."""
        async with self._read() as c:
            rows = await c.fetch("get-campaign", _digest(digest))
        return _record(rows[0]) if rows else None

    async def prune_campaigns(self, before: datetime) -> int:
        """Delete campaigns not learned from since ``before``; how many."""
        async with self._write() as c:
            return await c.execute("prune-campaigns", before)
