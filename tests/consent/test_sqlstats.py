"""The dashboard's hourly counts: migration 0004 on an existing store, bad input refused."""

from __future__ import annotations

import pytest

from beacon_proxy.consent import sqlbase
from beacon_proxy.consent.model import Beacons, InvalidValue
from beacon_proxy.consent.queries import load_migrations
from beacon_proxy.consent.store import Store, open_store


async def test_a_version_3_store_gets_the_stats_table_and_keeps_its_data(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(sqlbase, "load_migrations", lambda dialect: load_migrations(dialect)[:3])
        async with open_store(url) as old:
            assert isinstance(old, sqlbase.SqlBase) and old.schema_version == 3
            await old.set_consent("ann@example.org", Beacons.GRANTED)
            with pytest.raises(Exception, match="stats_hourly"):
                await old.stats_since("2026-11-28T00")
    async with open_store(url) as new:
        assert isinstance(new, sqlbase.SqlBase) and new.schema_version >= 4
        consent = await new.get_consent("ann@example.org")
        assert consent is not None and consent.beacons is Beacons.GRANTED
        await new.add_stats([("2026-11-28T10", "received", 1)])
        assert await new.stats_since("2026-11-28T00") == [("2026-11-28T10", "received", 1)]


@pytest.mark.parametrize("row", [("2026-11-28T1", "received", 1), ("x", "received", 1),
                                 ("2026-11-28T10", "", 1), ("2026-11-28T10", "n" * 101, 1),
                                 ("2026-11-28T10", "a\x00b", 1)])
async def test_bad_counts_are_refused_and_nothing_is_written(store: Store,
                                                              row: tuple[str, str, int]) -> None:
    with pytest.raises(InvalidValue):
        await store.add_stats([("2026-11-28T10", "received", 1), row])
    assert await store.stats_since("2026-11-28T00") == []
    await store.add_stats([])  # nothing to add: no transaction
