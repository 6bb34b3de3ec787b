"""The console dashboard: where its numbers come from, and its SVG charts.

**Source.**  The relay's own events (:func:`beacon_proxy.log.event`, the same
ones ``beacon-proxy report`` reads from the log) are counted as they happen
by :class:`EventTally`, an event tap (it sees every event whatever the log
level): per UTC hour, ``received``, ``delivered``, ``deferred``, ``bounced``,
``suppressed``, ``held`` (copies held back), ``fallback`` (delivered copies
made by the conservative fallback) and ``vendor:<name>`` (trackers removed
from refused recipients' copies, by rule vendor).  On the hot path that is a
few dictionary additions; once a minute (and when the relay stops) the counts
are added to the store's ``stats_hourly`` table
(:mod:`beacon_proxy.consent.sqlstats`), so every node's events are in one
place, and hours older than :data:`KEEP_HOURS` are pruned.  Opens by
consenting recipients come from the store's opens table, people's and
machines' (image proxies, scanners) apart.  Counts that have not been
written yet (up to a minute) are not shown.

**Charts.**  :func:`bar_chart` draws a small SVG bar chart (stacked when it
has several series) on the server: no script, every label escaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup

from beacon_proxy.consent.model import InvalidValue, StoreError
from beacon_proxy.consent.store import Store
from beacon_proxy.log import add_event_tap, remove_event_tap

__all__ = ["KEEP_HOURS", "MESSAGE_SERIES", "Chart", "EventTally", "bar_chart", "dashboard",
           "hbar_chart", "hour_of"]

log = logging.getLogger(__name__)
KEEP_HOURS = 31 * 24
FLUSH_EVERY = 60.0  # seconds
MAX_KEYS = 20_000  # (hour, name) counts held between writes; more are dropped and logged
MAX_VENDOR = 60  # characters of a vendor name counted
MESSAGE_SERIES = ("received", "delivered", "deferred", "bounced", "suppressed")
_COUNTED = frozenset({*MESSAGE_SERIES, "held"})


def hour_of(when: datetime) -> str:
    """The UTC hour a time falls in: ``2026-11-28T10``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H")


class EventTally:
    """Counts relay events per hour in memory; :meth:`flush` adds them to the store."""

    def __init__(self, store: Store, *, every: float = FLUSH_EVERY) -> None:
        self.store = store
        self.every = every
        self._counts: dict[tuple[str, str], int] = {}
        self._dropped = 0
        self._hour_number = -1
        self._hour = ""
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        """The event tap (runs in :func:`beacon_proxy.log.event`)."""
        if name not in _COUNTED:
            return
        now = int(time.time()) // 3600
        if now != self._hour_number:  # the hour's text, made once an hour
            self._hour_number = now
            self._hour = time.strftime("%Y-%m-%dT%H", time.gmtime(now * 3600))
        hour = self._hour
        self._add(hour, name)
        if name != "delivered":
            return
        if fields.get("outcome") == "fallback":
            self._add(hour, "fallback")
        vendors = fields.get("vendors")
        if fields.get("policy") == "refused" and isinstance(vendors, list):
            for vendor in vendors:  # a name the store could not keep would block every write
                if isinstance(vendor, str) and vendor and vendor.isprintable():
                    self._add(hour, "vendor:" + vendor[:MAX_VENDOR])

    def _add(self, hour: str, name: str) -> None:
        key = (hour, name)
        if key in self._counts:
            self._counts[key] += 1
        elif len(self._counts) < MAX_KEYS:
            self._counts[key] = 1
        else:
            self._dropped += 1

    def pending(self) -> dict[tuple[str, str], int]:
        """The counts not written yet (a copy)."""
        return dict(self._counts)

    async def flush(self) -> None:
        """Add the counts so far to the store (kept for the next try if it fails)."""
        async with self._lock:
            counts, self._counts = self._counts, {}
            if self._dropped:
                log.warning("console stats: %d events not counted (too many names)",
                            self._dropped)
                self._dropped = 0
            if not counts:
                return
            try:
                await self.store.add_stats([(h, n, v) for (h, n), v in counts.items()])
            except InvalidValue as exc:  # refused as they are: trying again cannot help
                log.warning("console stats dropped: %s", exc)
            except Exception as exc:  # the relay goes on; the counts wait for the next try
                log.warning("console stats not written: %s", exc)
                for key, value in counts.items():  # try again next time
                    self._counts[key] = self._counts.get(key, 0) + value

    async def _loop(self) -> None:
        pruned = ""
        while True:
            await asyncio.sleep(self.every)
            await self.flush()
            today = datetime.now(UTC).strftime("%Y-%m-%d")
            if today != pruned:
                try:
                    await self.store.prune_stats(
                        hour_of(datetime.now(UTC) - timedelta(hours=KEEP_HOURS)))
                    pruned = today
                except StoreError as exc:  # tried again after the next write
                    log.warning("console stats not pruned: %s", exc)

    async def start(self) -> None:
        add_event_tap(self)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        remove_event_tap(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


# -- the dashboard's numbers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: its key (for its title), the series and their buckets' values."""

    key: str
    series: tuple[tuple[str, tuple[int, ...]], ...]  # (series key, one value a bucket)

    @property
    def total(self) -> int:
        return sum(sum(values) for _, values in self.series)


def _buckets(span: str, now: datetime) -> tuple[list[str], int]:
    """The bucket labels (hours or days, oldest first) and the characters of an hour
    string that name a bucket (13: an hour, 10: a day)."""
    if span == "30d":
        days = [(now - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(29, -1, -1)]
        return days, 10
    hours = [hour_of(now - timedelta(hours=i)) for i in range(23, -1, -1)]
    return hours, 13


async def dashboard(store: Store, span: str, *, now: datetime | None = None
                    ) -> tuple[list[str], list[Chart], list[tuple[str, int]]]:
    """``(bucket labels, charts, trackers removed by vendor)`` for ``24h`` or ``30d``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    labels, width = _buckets(span, now)
    index = {label: i for i, label in enumerate(labels)}
    first = labels[0] + ("T00" if width == 10 else "")
    counts: dict[str, list[int]] = {}
    vendors: dict[str, int] = {}
    for hour, name, value in await store.stats_since(first):
        i = index.get(hour[:width])
        if i is None:
            continue
        counts.setdefault(name, [0] * len(labels))[i] += value
        if name.startswith("vendor:"):
            vendors[name[7:]] = vendors.get(name[7:], 0) + value
    since = datetime.fromisoformat(first + ":00:00+00:00")
    opens = {False: [0] * len(labels), True: [0] * len(labels)}
    for hour, machine, n in await store.opens_by_hour(since):
        i = index.get(hour[:width])
        if i is not None:
            opens[machine][i] += n

    def series(*names: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((n, tuple(counts.get(n, [0] * len(labels)))) for n in names)

    charts = [Chart(name, series(name)) for name in MESSAGE_SERIES]
    charts.append(Chart("copies", series("fallback", "held")))
    charts.append(Chart("opens", (("human", tuple(opens[False])),
                                  ("machine", tuple(opens[True])))))
    top = sorted(vendors.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
    return labels, charts, top


# -- SVG ----------------------------------------------------------------------------

COLOURS = ("#1d4ed8", "#b45309", "#047857", "#7c3aed")
_W, _H, _LEFT, _BOTTOM, _TOP = 480, 180, 44, 26, 10


def _nice_max(value: int) -> int:
    """The axis top: the least 1, 2 or 5 times a power of ten that is at least ``value``."""
    top, magnitude = max(1, value), 1
    while True:
        for step in (1, 2, 5):
            if magnitude * step >= top:
                return magnitude * step
        magnitude *= 10


def bar_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]],
              *, label_every: int = 6) -> Markup:
    """An SVG bar chart (stacked series), labelled for screen readers by ``title``.

    Every text put into it is escaped; numbers are formatted by this code."""
    n = max(1, len(labels))
    totals = [sum(values[i] for _, values in series) for i in range(n)] if series else [0] * n
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = _W - _LEFT - 8, _H - _TOP - _BOTTOM
    slot = plot_w / n
    bar = max(1.0, slot * 0.7)
    esc = html.escape
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg" aria-label="{esc(title)}">',
             f"<title>{esc(title)}</title>"]
    for frac in (0.0, 0.5, 1.0):  # grid lines and their values
        y = _TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - 8}" y2="{y:.1f}" '
                     f'stroke="#d1d5db" stroke-width="1"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#374151">{top * frac:g}</text>')
    for i in range(n):
        x = _LEFT + slot * i + (slot - bar) / 2
        base = 0
        for s, (name, values) in enumerate(series):
            value = values[i] if i < len(values) else 0
            if value <= 0:
                continue
            h = plot_h * value / top
            y = _TOP + plot_h * (1 - (base + value) / top)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{COLOURS[s % len(COLOURS)]}">'
                         f"<title>{esc(labels[i])} {esc(name)}: {value}</title></rect>")
            base += value
        if i % label_every == 0 or i == n - 1:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{_H - 8}" text-anchor="middle" '
                         f'font-size="10" fill="#374151">{esc(_short(labels[i]))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (built here, every text escaped)


def _short(label: str) -> str:
    """``2026-11-28T10`` -> ``10:00``; ``2026-11-28`` -> ``11-28``."""
    return label[11:13] + ":00" if len(label) == 13 else label[5:]


def hbar_chart(title: str, items: Sequence[tuple[str, int]]) -> Markup:
    """A horizontal SVG bar chart of named counts (trackers by vendor)."""
    esc = html.escape
    row, left, width = 22, 170, _W
    height = max(1, len(items)) * row + 8
    top = max((v for _, v in items), default=1) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg" aria-label="{esc(title)}">',
             f"<title>{esc(title)}</title>"]
    for i, (name, value) in enumerate(items):
        y = 4 + i * row
        w = (width - left - 60) * value / top
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" font-size="12" '
                     f'fill="#1f2937">{esc(name[:28])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{max(1.0, w):.1f}" height="{row - 8}" '
                     f'fill="{COLOURS[0]}"><title>{esc(name)}: {value}</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12" '
                     f'fill="#1f2937">{value}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (built here, every text escaped)
