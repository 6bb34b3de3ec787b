"""SQLite's decision reads on the event loop: fresh, never waiting, and falling back to
the reader's thread when the file is busy (a lock held by another connection)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.consent.cache import LOOP_READS
from beacon_proxy.consent.model import Beacons, SuppressionInput
from beacon_proxy.consent.policy import Decision
from beacon_proxy.consent.sqlbase import addr
from beacon_proxy.consent.sqlite import LOOP_READ_MAX, SqliteStore, _json_list

ANN, BOB = "ann@example.org", "bob@example.org"


class _RollbackJournal(SqliteStore):
    """The store on a rollback-journal file: there a writer's lock blocks every reader,
    as a WAL recovery or a locked file would in WAL mode."""

    journal_mode = "DELETE"


def _reads() -> dict[str, int]:
    return {on: LOOP_READS[on] for on in ("loop", "busy", "thread")}


def _moved(before: Mapping[str, int]) -> dict[str, int]:
    """The statements run since ``before``, by where (only the non-zero)."""
    return {on: n - before[on] for on, n in _reads().items() if n != before[on]}


def _at_once(coro: Coroutine[Any, Any, Mapping[str, Decision]]) -> Mapping[str, Decision]:
    """Run a lookup that must finish without suspending once (no thread hop)."""
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    result: Mapping[str, Decision] = done.value.value
    return result


@pytest.fixture(params=[20_000, 0], ids=["cache", "no-cache"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "c.db", cache_size=request.param)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_lookup_runs_on_the_loop_and_sees_other_connections_commits(
        relay: SqliteStore, tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "c.db", cache_size=0) as other:
        await relay.decisions([ANN], None)  # the cache's first version read (thread or loop)
        before = _reads()
        assert _at_once(relay.decisions([ANN, BOB], None)) == {
            ANN: Decision.REFUSED, BOB: Decision.REFUSED}
        await other.set_consent(ANN, Beacons.GRANTED)  # another process's writer
        assert _at_once(relay.decisions([ANN, BOB], None))[ANN] is Decision.GRANTED
        # a change made outside beacon-proxy (no change log entry): seen too
        raw = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
        try:
            raw.execute("DELETE FROM recipients")
        finally:
            raw.close()
        assert _at_once(relay.decisions([ANN], None))[ANN] is Decision.REFUSED
        assert set(_moved(before)) == {"loop"}  # (with the cache: change logs, re-reads)


async def test_a_large_lookup_goes_to_the_thread(relay: SqliteStore) -> None:
    many = [f"r{i}@example.org" for i in range(LOOP_READ_MAX + 1)]
    await relay.set_consent(many[-1], Beacons.GRANTED)
    before = _reads()
    found = await relay.decisions(many, None)
    assert found[many[-1]] is Decision.GRANTED
    assert {d for r, d in found.items() if r != many[-1]} == {Decision.REFUSED}
    assert _moved(before) == {"thread": 1}
    before = _reads()
    assert len(await relay.decisions(many[:LOOP_READ_MAX], "news.example.org")) == LOOP_READ_MAX
    assert _moved(before) == {"loop": 1}


async def test_a_long_change_log_is_read_in_the_thread(tmp_path: Path) -> None:
    """A bulk change logs a row per address under one version: the lookup's read of
    the log on the event loop stops at LOOP_READ_MAX rows and the whole log is read in
    the thread (not thousands of rows on the loop)."""
    async def rows() -> AsyncIterator[list[SuppressionInput]]:
        yield [SuppressionInput(addr(f"r{i}@example.org"), None, None)
               for i in range(LOOP_READ_MAX * 3)]

    async with SqliteStore(tmp_path / "c.db") as relay, \
            SqliteStore(tmp_path / "c.db", cache_size=0) as other:
        await relay.decisions([ANN, BOB], None)
        await other.import_suppressions(rows())  # one transaction: one version
        before = _reads()
        assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.REFUSED,
                                                            BOB: Decision.REFUSED}
        assert _moved(before) == {"loop": 2, "thread": 1}


@contextmanager
def _locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the file's exclusive lock (committed on leaving)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield holder
        holder.execute("COMMIT")
    finally:
        holder.close()


async def _fallen_back(task: asyncio.Task[Any], busy: int) -> None:
    """Wait until the task's loop read failed busy (it then waits on the thread)."""
    for _ in range(1000):
        if LOOP_READS["busy"] > busy or task.done():
            break
        await asyncio.sleep(0)
    assert LOOP_READS["busy"] == busy + 1
    assert not task.done()  # the reader's thread waits for the lock


@pytest.mark.parametrize("cache_size", [20_000, 0], ids=["cache", "no-cache"])
async def test_a_busy_file_falls_back_to_the_thread(tmp_path: Path, cache_size: int) -> None:
    path = tmp_path / "c.db"
    async with _RollbackJournal(path, cache_size=cache_size) as store:
        await store.set_consent(BOB, Beacons.REFUSED)
        assert _at_once(store.decisions([ANN, BOB], None)) == {
            ANN: Decision.REFUSED, BOB: Decision.REFUSED}
        before = _reads()
        with _locked(path) as holder:
            # a change committed while the lookup waits: the thread's read sees it
            holder.execute("UPDATE recipients SET beacons = 'granted' WHERE key = ?", (BOB,))
            lookup = asyncio.create_task(store.decisions([ANN, BOB], None))
            await _fallen_back(lookup, before["busy"])
        assert await lookup == {ANN: Decision.REFUSED, BOB: Decision.GRANTED}
        assert _moved(before) == {"busy": 1}
        # the lock gone, the loop again
        assert _at_once(store.decisions([BOB], None))[BOB] is Decision.GRANTED


async def test_a_lookup_cancelled_while_on_the_thread_leaves_the_store_usable(
        tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with _RollbackJournal(path) as store:
        await store.set_consent(ANN, Beacons.GRANTED)
        busy = LOOP_READS["busy"]
        with _locked(path):
            lookup = asyncio.create_task(store.decisions([ANN], None))
            await _fallen_back(lookup, busy)
            lookup.cancel()
            with pytest.raises(asyncio.CancelledError):
                await lookup
        assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED
        await store.set_consent(ANN, Beacons.REFUSED)
        assert _at_once(store.decisions([ANN], None))[ANN] is Decision.REFUSED


async def test_the_loop_connection_cannot_write(relay: SqliteStore) -> None:
    assert relay._loop_db is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        relay._loop_db.execute("DELETE FROM recipients")


@given(st.lists(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(),
                          st.floats(allow_nan=False)), max_size=6)
       | st.lists(st.text(max_size=20), max_size=6).map(tuple))
def test_json_lists_are_the_encoders_text(value: list[Any] | tuple[Any, ...]) -> None:
    """A lookup's list arguments: the joined strings are exactly the encoder's text."""
    assert _json_list(value) == json.dumps(value, ensure_ascii=False)
