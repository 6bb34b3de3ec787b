"""Campaign diffing's shared memory, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from beacon_proxy.consent import sqlbase
from beacon_proxy.consent.model import Beacons, CampaignRecord, InvalidValue
from beacon_proxy.consent.queries import load_migrations
from beacon_proxy.consent.store import Store, open_store

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DIGEST = "0123456789abcdef0123456789abcdef"


def _learn(copy_id: str, memory: str = "m"):  # type: ignore[no-untyped-def]
    def change(record: CampaignRecord) -> CampaignRecord | None:
        if copy_id in record.learned:
            return None
        return CampaignRecord(memory + str(record.copies + 1), record.copies + 1,
                              (*record.learned, copy_id), record.updated_at)
    return change


async def test_a_change_runs_on_an_empty_record_then_on_the_committed_one(store: Store) -> None:
    assert await store.get_campaign(DIGEST) is None
    first = await store.change_campaign(DIGEST, _learn("q1"), at=T0)
    assert (first.memory, first.copies, first.learned, first.updated_at) == ("m1", 1, ("q1",), T0)
    later = T0 + timedelta(seconds=5)
    second = await store.change_campaign(DIGEST, _learn("q2"), at=later)
    assert (second.memory, second.copies, second.learned) == ("m2", 2, ("q1", "q2"))
    assert await store.get_campaign(DIGEST) == second
    # unchanged (the copy was learned before): the record as it is, not touched
    again = await store.change_campaign(DIGEST, _learn("q1"), at=later + timedelta(days=1))
    assert again == second and again.updated_at == later


async def test_prune_removes_campaigns_not_learned_from_since(store: Store) -> None:
    other = "f" * 32
    await store.change_campaign(DIGEST, _learn("q1"), at=T0)
    await store.change_campaign(other, _learn("q1"), at=T0 + timedelta(days=3))
    assert await store.prune_campaigns(T0 + timedelta(days=1)) == 1
    assert await store.get_campaign(DIGEST) is None
    assert (await store.get_campaign(other)) is not None


async def test_bad_campaign_input_is_refused_and_changes_nothing(store: Store) -> None:
    for digest in ("", "XYZ", "0123", DIGEST.upper(), DIGEST + "\n", "a" * 65):
        with pytest.raises(InvalidValue, match="campaign"):
            await store.get_campaign(digest)
    with pytest.raises(InvalidValue, match="learned"):
        await store.change_campaign(DIGEST, lambda r: CampaignRecord("m", 1, ("a,b",), T0))
    with pytest.raises(InvalidValue, match="memory"):
        await store.change_campaign(DIGEST, lambda r: CampaignRecord("x" * (5 << 20), 1, (), T0))
    record = await store.get_campaign(DIGEST)  # the empty row may exist; nothing was saved
    assert record is None or (record.memory, record.copies, record.learned) == ("", 0, ())


async def test_a_change_that_raises_rolls_back(store: Store) -> None:
    await store.change_campaign(DIGEST, _learn("q1"), at=T0)

    def broken(record: CampaignRecord) -> CampaignRecord:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.change_campaign(DIGEST, broken)
    record = await store.get_campaign(DIGEST)
    assert record is not None and record.copies == 1


async def test_two_nodes_learning_at_once_both_count(url: str) -> None:
    """Two stores (separate pools or connections) on one database: no lost update."""
    async with open_store(url) as a, open_store(url) as b:
        async def learn(node: Store, prefix: str) -> None:
            for i in range(15):
                await node.change_campaign(DIGEST, _learn(f"{prefix}{i}"))

        await asyncio.gather(learn(a, "a"), learn(b, "b"))
        record = await a.get_campaign(DIGEST)
        assert record is not None and record.copies == 30 and len(set(record.learned)) == 30


async def test_a_change_runs_off_the_event_loop(store: Store) -> None:
    """Parsing and learning a memory is CPU work (up to ~0.3 s for a hostile copy): it runs
    in a worker thread, so the relay's event loop (SMTP, every delivery) goes on."""
    seen: list[int] = []

    def change(record: CampaignRecord) -> CampaignRecord | None:
        seen.append(threading.get_ident())
        return _learn("q1")(record)  # type: ignore[no-any-return]

    assert (await store.change_campaign(DIGEST, change, at=T0)).copies == 1
    assert seen and seen[0] != threading.get_ident()


async def test_a_version_2_store_is_migrated_with_its_data(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade from the release before campaign diffing: the campaigns table is added,
    nothing else is touched."""
    with monkeypatch.context() as m:
        m.setattr(sqlbase, "load_migrations", lambda dialect: load_migrations(dialect)[:2])
        async with open_store(url) as old:
            assert isinstance(old, sqlbase.SqlBase) and old.schema_version == 2
            await old.set_consent("ann@example.org", Beacons.GRANTED)
            with pytest.raises(Exception, match="campaigns"):
                await old.get_campaign(DIGEST)
    async with open_store(url) as new:
        assert isinstance(new, sqlbase.SqlBase)  # and every later migration
        assert new.schema_version == load_migrations("sqlite")[-1].version
        consent = await new.get_consent("ann@example.org")
        assert consent is not None and consent.beacons is Beacons.GRANTED
        assert (await new.change_campaign(DIGEST, _learn("q1"), at=T0)).copies == 1
    async with open_store(url) as again:  # the next start applies nothing
        assert await again.get_campaign(DIGEST) is not None


async def test_a_row_pruned_between_ensure_and_lock_is_made_again(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node's prune deletes the (expired) row after this change made sure of it
    and before it locked it: the change makes it again instead of failing."""
    assert isinstance(store, sqlbase.SqlBase)
    await store.change_campaign(DIGEST, _learn("q1"), at=T0)
    write = store._write
    pruned: list[int] = []

    @contextlib.asynccontextmanager
    async def racing_write() -> AsyncIterator[sqlbase.Conn]:
        async with write() as c:
            execute = c.execute

            async def execute_then_prune(query: str, *args: object) -> int:
                done = await execute(query, *args)
                if query == "ensure-campaign" and not pruned:
                    pruned.append(await execute("prune-campaigns", T0 + timedelta(days=30)))
                return done

            monkeypatch.setattr(c, "execute", execute_then_prune)
            yield c

    monkeypatch.setattr(store, "_write", racing_write)
    record = await store.change_campaign(DIGEST, _learn("q2"), at=T0 + timedelta(days=31))
    assert pruned == [1] and (record.copies, record.learned) == (1, ("q2",))
