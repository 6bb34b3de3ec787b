"""Attacks on the SQLite decision reads on the event loop (``consent/sqlite.py``) and the
cache's trust in ``PRAGMA data_version``: a consent change must apply to the next
delivery, however it interleaves with a lookup in flight."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.consent.model import Beacons
from beacon_proxy.consent.policy import Decision
from beacon_proxy.consent.sqlite import SqliteStore

ANN, BOB = "ann@example.org", "bob@example.org"


@pytest.mark.parametrize("other_process", [False, True], ids=["own-writer", "other-store"])
@pytest.mark.parametrize("hit", [True, False], ids=["hit", "miss"])
async def test_a_change_committed_between_a_read_and_its_use_applies_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_process: bool,
        hit: bool) -> None:
    """A lookup's statement has run (ANN granted: a cached hit beside a miss, or itself a
    miss); before its answers are put in the cache, and the cache marked as trusted at
    the data version read first, ANN refuses, by this store's writer or another
    store's.  That lookup may answer granted (it read before the change), the next one
    must not."""
    async with SqliteStore(tmp_path / "c.db") as store, \
            SqliteStore(tmp_path / "c.db", cache_size=0) as other:
        await store.set_consent(ANN, Beacons.GRANTED)
        if hit:
            assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED  # cached
        else:
            assert (await store.decisions([BOB], None))[BOB] is Decision.REFUSED
        writer = other if other_process else store
        inner = SqliteStore._lookup
        raced = False

        async def lookup(self: SqliteStore, *args: Any) -> tuple[Mapping[str, Decision], int]:
            nonlocal raced
            found = await inner(self, *args)
            if not raced:
                raced = True
                await writer.set_consent(ANN, Beacons.REFUSED, reason="changed meanwhile")
            return found

        monkeypatch.setattr(SqliteStore, "_lookup", lookup)
        # a hit: ANN answered from the cache, BOB read; a miss: ANN read (granted)
        await store.decisions([ANN, BOB] if hit else [ANN], None)
        assert raced
        for _ in range(2):
            assert (await store.decisions([ANN], None))[ANN] is Decision.REFUSED
            assert (await store.decisions([ANN, BOB], None))[ANN] is Decision.REFUSED
