"""The store's hourly counts for the console dashboard (shared by every node).

Each relay node tallies its own events in memory
(:class:`beacon_proxy.web.console.stats.EventTally`) and adds them here once a
minute with :meth:`SqlStats.add_stats`, one row per UTC hour and counter name,
so the dashboard of any node shows all of them.  :meth:`SqlStats.opens_by_hour`
counts recorded opens (people's and machines') straight from the opens table.
No row holds an address or a URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from beacon_proxy.consent.model import InvalidValue
from beacon_proxy.consent.sqlbase import SqlBase

__all__ = ["MAX_NAME", "SqlStats"]

MAX_NAME = 100  # characters of a counter name
_HOUR = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}\Z")


def _hour(value: str) -> str:
    if not isinstance(value, str) or not _HOUR.match(value):
        raise InvalidValue("hour", "must be a UTC hour such as 2026-11-28T10")
    return value


class SqlStats(SqlBase):
    """Hourly counters of relay events."""

    async def add_stats(self, counts: Sequence[tuple[str, str, int]]) -> None:
        """Add ``(hour, name, value)`` counts (in one transaction)."""
        rows = []
        for hour, name, value in counts:
            if not name or len(name) > MAX_NAME or "\x00" in name:
                raise InvalidValue("name", f"a counter name of 1 to {MAX_NAME} characters")
            rows.append((_hour(hour), name, int(value)))
        if not rows:
            return
        async with self._write() as c:
            await c.executemany("add-stat", rows)

    async def stats_since(self, hour: str) -> list[tuple[str, str, int]]:
        """Every ``(hour, name, value)`` from ``hour`` on, in order of hour."""
        async with self._read() as c:
            rows = await c.fetch("stats-since", _hour(hour))
        return [(str(r["hour"]), str(r["name"]), int(r["value"])) for r in rows]

    async def prune_stats(self, before: str) -> int:
        """Delete the counts of hours before ``before``; how many rows."""
        async with self._write() as c:
            return await c.execute("prune-stats", _hour(before))

    async def opens_by_hour(self, since: datetime) -> list[tuple[str, bool, int]]:
        """Recorded opens since a time: ``(UTC hour, machine, count)``."""
        async with self._read() as c:
            rows = await c.fetch("opens-by-hour", since)
        return [(str(r["hour"]), bool(r["machine"]), int(r["n"])) for r in rows]
