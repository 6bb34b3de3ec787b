"""The dashboard's counts (an event tap, the store's hourly table) and its SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from beacon_proxy.consent.store import Store
from beacon_proxy.log import event
from beacon_proxy.web.console.stats import EventTally, bar_chart, dashboard, hbar_chart, hour_of


async def test_events_are_counted_by_hour_and_written_once(store: Store) -> None:
    tally = EventTally(store, every=3600)
    await tally.start()
    try:
        event("received", queue_id="Q1", size=10)
        for _ in range(3):
            event("delivered", queue_id="Q1", policy="refused", outcome="stripped",
                  vendors=["Mailchimp", "HubSpot"])
        event("delivered", queue_id="Q1", policy="granted", outcome="unmodified_granted",
              vendors=["Mailchimp"])  # kept for a consenting recipient: not removed
        event("delivered", queue_id="Q1", policy="refused", outcome="fallback")
        event("deferred", queue_id="Q1")
        event("held", queue_id="Q1")
        event("recipient_action", action="resume")  # not counted
        hour = hour_of(datetime.now(UTC))
        assert tally.pending()[(hour, "delivered")] == 5
        await tally.flush()
        await tally.flush()  # nothing new: nothing added twice
    finally:
        await tally.stop()
    event("received", queue_id="Q2")  # after stop: not counted
    rows = {name: value for _, name, value in await store.stats_since(hour)}
    assert rows == {"received": 1, "delivered": 5, "deferred": 1, "held": 1, "fallback": 1,
                    "vendor:Mailchimp": 3, "vendor:HubSpot": 3}


async def test_dashboard_buckets_hours_and_days(store: Store) -> None:
    now = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
    await store.add_stats([("2026-11-28T10", "received", 4), ("2026-11-28T09", "received", 2),
                           ("2026-11-27T09", "received", 7), ("2026-11-28T10", "vendor:X", 3),
                           ("2026-10-01T00", "received", 99)])
    await store.set_consent("a@example.org", "granted")
    await store.record_open("a@example.org", at=now - timedelta(minutes=5))
    await store.record_open("a@example.org", at=now - timedelta(minutes=6), machine=True)
    await store.record_open("a@example.org", at=now - timedelta(days=2))
    labels, charts, vendors = await dashboard(store, "24h", now=now)
    assert len(labels) == 24 and labels[-1] == "2026-11-28T10"
    received = next(c for c in charts if c.key == "received")
    assert received.total == 6  # yesterday 09:00 is outside the last 24 hours
    opens = next(c for c in charts if c.key == "opens")
    assert {k: sum(v) for k, v in opens.series} == {"human": 1, "machine": 1}
    assert vendors == [("X", 3)]
    labels, charts, _ = await dashboard(store, "30d", now=now)
    assert len(labels) == 30 and labels[-1] == "2026-11-28"
    received = next(c for c in charts if c.key == "received")
    assert received.series[0][1][-2:] == (7, 6) and received.total == 13
    opens = next(c for c in charts if c.key == "opens")
    assert opens.total == 3
    assert await store.prune_stats("2026-11-01T00") == 1


def test_charts_are_svg_with_every_label_escaped() -> None:
    svg = bar_chart('<script>"x"</script>', ["2026-11-28T09", "2026-11-28T10"],
                    [("a&b", [1, 2]), ("<c>", [0, 5])])
    root = ElementTree.fromstring(str(svg))  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == 3  # no bar for a 0
    assert "10:00" in svg
    svg = hbar_chart("t", [("</svg><img src=x>", 3), ("b", 1)])
    ElementTree.fromstring(str(svg))
    assert "<img" not in svg
    empty = bar_chart("none", ["2026-11-28"], [("a", [0])])
    ElementTree.fromstring(str(empty))


class _Failing:
    """A store whose writes fail (unreachable), then work."""

    def __init__(self) -> None:
        self.fail = True
        self.rows: list[tuple[str, str, int]] = []

    async def add_stats(self, counts: list[tuple[str, str, int]]) -> None:
        if self.fail:
            raise OSError("store unreachable")
        self.rows += counts

    async def prune_stats(self, before: str) -> int:
        return 0


async def test_counts_wait_for_a_store_that_fails() -> None:
    store = _Failing()
    tally = EventTally(store, every=3600)  # type: ignore[arg-type]
    tally("received", {})
    await tally.flush()  # fails: logged, kept
    tally("received", {})
    assert sum(tally.pending().values()) == 2
    store.fail = False
    await tally.flush()
    assert [(name, value) for _, name, value in store.rows] == [("received", 2)]
    assert tally.pending() == {}


async def test_a_vendor_name_the_store_cannot_keep_does_not_stop_the_counts(
        store: Store) -> None:
    """A rules file is free text: a vendor name with a NUL or a lone surrogate would be
    refused by the store at every write, and every count kept for a retry forever."""
    tally = EventTally(store, every=3600)
    await tally.start()
    try:
        event("delivered", queue_id="Q1", policy="refused", outcome="stripped",
              vendors=["Bad\x00Vendor", "Lone\ud800", "Good"])
        event("received", queue_id="Q1")
        await tally.flush()
    finally:
        await tally.stop()
    assert tally.pending() == {}
    rows = {name: value for _, name, value in
            await store.stats_since(hour_of(datetime.now(UTC) - timedelta(hours=1)))}
    assert rows == {"received": 1, "delivered": 1, "vendor:Good": 1}
