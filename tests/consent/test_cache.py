"""The relay's decision cache: hits, misses, bounds, and every way a change reaches it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from beacon_proxy.consent.cache import LOOKUPS, CacheMode, DecisionCache
from beacon_proxy.consent.model import Beacons
from beacon_proxy.consent.policy import Decision, Policy
from beacon_proxy.consent.postgres import PostgresStore
from beacon_proxy.consent.sqlite import SqliteStore
from beacon_proxy.consent.sqlstore import SqlStore
from beacon_proxy.consent.store import open_store

ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.org"
_CONNECT = asyncpg.connect  # the real one, also while a test refuses the store's


def _counted(store: SqlStore) -> list[list[str]]:
    """The keys of every statement the store's lookup runs from now on."""
    calls: list[list[str]] = []
    inner = store._lookup

    async def lookup(unique: list[str], hashes: Any, list_key: str
                     ) -> tuple[dict[str, Decision], int]:
        calls.append(list(unique))
        return await inner(unique, hashes, list_key)

    store._lookup = lookup  # type: ignore[method-assign]
    return calls


def _open(url: str, **kwargs: Any) -> SqlStore:
    store = open_store(url, **kwargs)
    assert isinstance(store, SqlStore)
    return store


def _metric(result: str) -> float:
    return float(LOOKUPS[result])


@pytest.fixture
async def pair(url: str) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one database: ``relay`` (cached) and ``other`` (another process's,
    without a cache, as the command line opens it)."""
    relay, other = _open(url), _open(url, cache_size=0)
    await relay.open()
    await other.open()
    if isinstance(relay, PostgresStore):
        await relay.wait_listener(lambda s: s.listener_pid is not None)
    try:
        yield relay, other
    finally:
        await other.close()
        await relay.close()


# -- the cache itself ----------------------------------------------------------------


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    cache = DecisionCache(2)
    cache.advance(1)
    cache.put("a", "", Decision.GRANTED, "ha", 1)
    cache.put("b", "", Decision.REFUSED, "hb", 1)
    assert cache.get("a", "") == (Decision.GRANTED, "ha")  # a is now the most recent
    cache.put("c", "", Decision.SUPPRESSED, "hc", 1)
    assert len(cache) == 2
    assert cache.get("b", "") is None and cache.get("a", "") == (Decision.GRANTED, "ha")
    cache.move(1, 2, {"hb"})  # b's index entry went with it: nothing else to evict
    assert len(cache) == 2 and cache.version == 2


def test_answers_of_another_version_are_not_kept() -> None:
    cache = DecisionCache(10)
    cache.put("a", "", Decision.GRANTED, "ha", 1)  # no version yet: nothing kept
    assert len(cache) == 0
    cache.advance(3)
    cache.put("a", "", Decision.GRANTED, "ha", 2)  # an older snapshot's answer
    assert len(cache) == 0
    cache.put("a", "", Decision.GRANTED, "ha", 3)
    cache.advance(2)  # a slower lookup's older version changes nothing
    assert (cache.get("a", ""), cache.version) == ((Decision.GRANTED, "ha"), 3)
    cache.advance(4)
    assert (len(cache), cache.version) == (0, 4)
    cache.put("a", "", Decision.GRANTED, "ha", 4)
    cache.invalidate()
    assert (len(cache), cache.version) == (0, None)
    with pytest.raises(ValueError):
        DecisionCache(0)


def test_a_logged_change_evicts_only_its_addresses() -> None:
    cache = DecisionCache(10)
    cache.advance(5)
    for who, h in (("a", "ha"), ("A", "ha"), ("b", "hb")):  # two spellings of a
        cache.put(who, "", Decision.GRANTED, h, 5)
        cache.put(who, "news", Decision.GRANTED, h, 5)
    cache.move(5, 7, {"ha"})
    assert (len(cache), cache.version) == (2, 7)
    cache.move(6, 8, {"hb"})  # changes since 6 cover those since 7: a superset is fine
    assert (len(cache), cache.version) == (0, 8)
    cache.put("b", "", Decision.GRANTED, "hb", 8)
    cache.move(9, 10, {"hx"})  # the cache is older than what the changes start from
    assert (len(cache), cache.version) == (0, 10)
    cache.put("b", "", Decision.GRANTED, "hb", 10)
    cache.forget({"hb"})
    assert (len(cache), cache.version) == (0, 10)


def test_the_hash_index_follows_every_entry_through_its_shapes() -> None:
    """One key per hash is kept without a set; a second key makes one, evictions and
    re-puts under another hash shrink it back, and a change still evicts every key."""
    cache = DecisionCache(3)
    cache.advance(1)
    cache.put("a", "", Decision.GRANTED, "ha", 1)
    cache.put("a", "", Decision.GRANTED, "ha", 1)  # the same again: still one key
    assert cache._by_hash == {"ha": ("a", "")}
    cache.put("a", "news", Decision.REFUSED, "ha", 1)
    cache.put("A", "", Decision.GRANTED, "ha", 1)
    assert cache._by_hash == {"ha": {("a", ""), ("a", "news"), ("A", "")}}
    cache.put("b", "", Decision.GRANTED, "hb", 1)  # evicts ("a", ""): two keys left
    assert cache._by_hash["ha"] == {("a", "news"), ("A", "")}
    cache.put("A", "", Decision.GRANTED, "hA", 1)  # re-keyed: its old hash lets go
    assert cache._by_hash == {"ha": ("a", "news"), "hb": ("b", ""), "hA": ("A", "")}
    cache.put("c", "", Decision.GRANTED, "hc", 1)  # evicts ("a", "news"): "ha" is gone
    assert set(cache._by_hash) == {"hb", "hA", "hc"}
    cache.put("c", "news", Decision.GRANTED, "hc", 1)
    cache.put("c", "x", Decision.GRANTED, "hc", 1)  # evicts b and A
    cache.move(1, 2, {"hc"})  # every key of a changed address goes, set or single
    assert (len(cache), cache._by_hash, cache.version) == (0, {}, 2)
    cache.put("d", "", Decision.GRANTED, "hd", 2)
    cache.put("d", "news", Decision.GRANTED, "hd", 2)
    cache.put("e", "", Decision.GRANTED, "he", 2)
    cache.forget({"hd", "he", "hx"})
    assert (len(cache), cache._by_hash) == (0, {})


def test_an_entry_costs_at_most_450_bytes() -> None:
    """The cost the default ``cache_size`` is chosen by (docs/performance.md)."""
    import hashlib
    import tracemalloc

    n = 5000
    cache = DecisionCache(n)
    cache.advance(1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):  # the address and its hash are kept alive by the cache alone
            k = f"subscriber-{i:06d}@example.net"
            cache.put(k, "news.example.org", Decision.GRANTED,
                      hashlib.sha256(k.encode()).hexdigest(), 1)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_entry < 450, per_entry


# -- hits and misses, both backends ------------------------------------------------


async def test_a_repeat_lookup_is_answered_from_the_cache(
        pair: tuple[SqlStore, SqlStore]) -> None:
    relay, other = pair
    await other.set_consent(ANN, Beacons.GRANTED)
    await other.suppress(CAT, "news.example.org")
    calls = _counted(relay)
    first = await relay.decisions([ANN, BOB, CAT], "news.example.org")
    assert calls == [["ann@example.org", "bob@example.org", "cat@example.org"]]
    hits = _metric("hit")
    again = await relay.decisions([ANN, BOB, CAT], "news.example.org")
    assert again == {ANN: Decision.GRANTED, BOB: Decision.REFUSED,
                     CAT: Decision.SUPPRESSED_LIST}
    assert first == again and _metric("hit") == hits + 3
    # SQLite: nothing committed since, so no statement at all; PostgreSQL: the
    # version alone, in one statement without keys.
    assert calls[1:] == ([] if isinstance(relay, SqliteStore) else [[]])
    # The cache knows recipients as passed: another spelling is a miss, same answer.
    calls.clear()
    assert (await relay.decisions(["Bob@Example.org"], "news.example.org")) == {
        "Bob@Example.org": Decision.REFUSED}
    assert calls == [[BOB]]
    # Another list is another answer: one miss, for the list-scoped suppression.
    assert (await relay.decisions([CAT], "deals.example.org"))[CAT] is Decision.REFUSED
    assert calls[-1] == [CAT]


async def test_only_the_misses_are_read(pair: tuple[SqlStore, SqlStore]) -> None:
    relay, _ = pair
    await relay.decisions([ANN], None)
    calls = _counted(relay)
    await relay.decisions([ANN, BOB], None)
    assert calls == [[BOB]]


async def test_the_cache_size_bounds_the_entries(url: str) -> None:
    async with _open(url, cache_size=2) as store:
        assert store.cache is not None
        if isinstance(store, PostgresStore):
            await store.wait_listener(lambda s: s.listener_pid is not None)
        await store.decisions([ANN, BOB, CAT], None)
        assert len(store.cache) == 2


async def test_without_a_cache_every_lookup_reads_the_store(url: str) -> None:
    async with open_store(url, cache_size=0) as store:
        assert isinstance(store, SqlStore) and store.cache is None
        calls = _counted(store)
        off = _metric("off")
        await store.decisions([ANN], None)
        await store.decisions([ANN], None)
        assert calls == [[ANN], [ANN]] and _metric("off") == off + 2


# -- changes --------------------------------------------------------------------------

Change = Callable[[SqlStore], Awaitable[object]]
CHANGES: dict[str, tuple[Change, Decision]] = {
    "consent": (lambda s: s.set_consent(ANN, Beacons.GRANTED), Decision.GRANTED),
    "delete": (lambda s: s.delete_consent(ANN), Decision.REFUSED),
    "suppress": (lambda s: s.suppress(ANN), Decision.SUPPRESSED),
    "suppress-list": (lambda s: s.suppress(ANN, "news.example.org"), Decision.SUPPRESSED_LIST),
    "forget": (lambda s: s.forget(ANN), Decision.REFUSED),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_another_process_change_applies_to_the_next_lookup(
        pair: tuple[SqlStore, SqlStore], change: str) -> None:
    """No waiting: the lookup right after the other store's commit sees it (the version
    is read with it; on SQLite the data version says something was committed)."""
    relay, other = pair
    await other.set_consent(ANN, Beacons.REFUSED)
    if change == "delete":
        await other.set_consent(ANN, Beacons.GRANTED)
    before = await relay.decisions([ANN], "news.example.org")
    assert await relay.decisions([ANN], "news.example.org") == before  # cached
    do, expected = CHANGES[change]
    await do(other)
    assert (await relay.decisions([ANN], "news.example.org"))[ANN] is expected


async def test_the_processes_own_change_applies_to_the_next_lookup(store: Any) -> None:
    assert isinstance(store, SqlStore)
    if isinstance(store, PostgresStore):
        await store.wait_listener(lambda s: s.listener_pid is not None)
    assert (await store.decisions([ANN], None))[ANN] is Decision.REFUSED
    await store.set_consent(ANN, Beacons.GRANTED)
    assert store.cache is not None and len(store.cache) == 0  # forgotten at once
    assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED
    await store.suppress(ANN)
    assert (await store.decisions([ANN], None))[ANN] is Decision.SUPPRESSED
    await store.unsuppress(ANN)
    assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED


async def test_a_change_between_two_lookups_rereads_the_hits(
        pair: tuple[SqlStore, SqlStore]) -> None:
    """Hits of an older version are not trusted: read again with the new version."""
    relay, other = pair
    await relay.decisions([ANN], None)
    await other.set_consent(ANN, Beacons.GRANTED)
    await other.set_consent(BOB, Beacons.GRANTED)
    if isinstance(relay, PostgresStore):  # the notification would empty the cache first
        relay._notified = lambda *args: None  # type: ignore[method-assign]
    calls = _counted(relay)
    got = await relay.decisions([ANN, BOB], None)
    assert got == {ANN: Decision.GRANTED, BOB: Decision.GRANTED}
    if isinstance(relay, SqliteStore):
        assert calls == [[BOB], [ANN]]  # the miss (new version), then the stale hit


async def test_a_change_of_another_recipient_keeps_the_answers(
        pair: tuple[SqlStore, SqlStore]) -> None:
    """The change log names who changed: the other answers stay (one statement for the
    version, one for the log)."""
    relay, other = pair
    await relay.decisions([ANN, BOB], "news.example.org")
    await other.suppress(CAT, "news.example.org")
    await other.set_consent(CAT, Beacons.GRANTED)
    calls = _counted(relay)
    assert await relay.decisions([ANN, BOB, CAT], "news.example.org") == {
        ANN: Decision.REFUSED, BOB: Decision.REFUSED, CAT: Decision.SUPPRESSED_LIST}
    assert calls == [[CAT]]
    assert relay.cache is not None and len(relay.cache) == 3


async def test_a_change_made_outside_the_store_forgets_everything(
        pair: tuple[SqlStore, SqlStore], url: str) -> None:
    """A change the log does not name (an operator's SQL): the triggers move the version,
    so every answer is read again."""
    relay, _ = pair
    await relay.decisions([ANN, BOB], None)
    sql = ("INSERT INTO recipients (key, address, beacons, updated_at) "
           "VALUES ('bob@example.org', 'bob@example.org', 'granted', '2026-12-04T00:00:00Z')")
    if isinstance(relay, SqliteStore):
        db = sqlite3.connect(relay.path, isolation_level=None)
        try:
            db.execute(sql)
        finally:
            db.close()
    else:
        conn = await _CONNECT(url)
        try:
            await conn.execute(sql.replace("'2026-12-04T00:00:00Z'", "now()"))
        finally:
            await conn.close()
    calls = _counted(relay)
    assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.REFUSED,
                                                        BOB: Decision.GRANTED}
    assert calls == [[], [ANN, BOB]]


async def test_concurrent_lookups_always_see_the_last_committed_change(
        pair: tuple[SqlStore, SqlStore]) -> None:
    """Lookups overlapping each other (the relay's workers) and a writer: every lookup
    that starts after a change committed sees it, whatever the interleaving."""
    import asyncio

    relay, other = pair
    crowd = [f"r{i}@example.org" for i in range(20)]
    for round_ in range(30):
        state = Beacons.GRANTED if round_ % 2 else Beacons.REFUSED
        who = crowd[round_ % len(crowd)]
        await other.set_consent(who, state)
        answers = await asyncio.gather(*(relay.decisions([who, *crowd[i:i + 5]], None)
                                         for i in range(0, 20, 5)))
        assert all(a[who] is Decision(state.value) for a in answers), round_


async def test_an_import_applies_to_the_next_lookup(pair: tuple[SqlStore, SqlStore]) -> None:
    from beacon_proxy.consent.model import ConsentInput
    from beacon_proxy.consent.sqlbase import addr

    relay, other = pair
    assert (await relay.decisions([ANN, BOB], None))[ANN] is Decision.REFUSED

    async def batches() -> AsyncIterator[list[ConsentInput]]:
        yield [ConsentInput(addr(ANN), Beacons.GRANTED, None),
               ConsentInput(addr(BOB), Beacons.GRANTED, None)]

    await other.import_consent(batches())
    assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.GRANTED,
                                                        BOB: Decision.GRANTED}


# -- SQLite ----------------------------------------------------------------------------


def test_sqlite_data_version_ignores_the_connections_own_commits(tmp_path: Path) -> None:
    """Why the store reads it on a connection of its own that never writes."""
    path = tmp_path / "dv.db"
    a = sqlite3.connect(path, isolation_level=None)
    b = sqlite3.connect(path, isolation_level=None)
    try:
        a.execute("CREATE TABLE t (x)")

        def version(c: sqlite3.Connection) -> int:
            return int(c.execute("PRAGMA data_version").fetchone()[0])

        va, vb = version(a), version(b)
        a.execute("INSERT INTO t VALUES (1)")
        assert version(a) == va and version(b) != vb
    finally:
        a.close()
        b.close()


async def test_sqlite_unrelated_commits_keep_the_cache(tmp_path: Path) -> None:
    """A queued forward changes the data version, not the decision version: one
    statement (the version alone) and the cache stays; a consent change of anybody
    empties it."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    async with open_store(url) as relay, open_store(url, cache_size=0) as other:
        assert isinstance(relay, SqliteStore)
        await relay.decisions([ANN, BOB], None)
        await other.queue_forward("https://list.example.org/u/1", address=CAT, list_id=None)
        calls = _counted(relay)
        assert relay._cache_mode()[0] is CacheMode.CHECK
        await relay.decisions([ANN, BOB], None)
        assert calls == [[]]
        assert relay._cache_mode()[0] is CacheMode.TRUST
        await relay.decisions([ANN, BOB], None)
        assert calls == [[]]
        await other.set_consent(CAT, Beacons.GRANTED)  # another recipient: the version moves
        await relay.decisions([ANN, BOB], None)
        assert calls == [[], []]  # the version, then the change log: ann and bob stand
        await relay.decisions([ANN, BOB], None)
        assert calls == [[], []]


async def test_sqlite_busy_version_connection_bypasses(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'c.db'}") as store:
        assert isinstance(store, SqliteStore)
        await store.decisions([ANN], None)

        class Broken:
            def execute(self, _sql: str, *_args: object) -> Any:
                raise sqlite3.OperationalError("database is locked")

            def close(self) -> None:
                pass

        assert store._loop_db is not None
        store._loop_db.close()  # replaced: closed here (3.13 warns of one left unclosed)
        store._loop_db = Broken()  # type: ignore[assignment]
        calls = _counted(store)
        bypass = _metric("bypass")
        assert (await store.decisions([ANN], None))[ANN] is Decision.REFUSED
        assert calls == [[ANN]] and _metric("bypass") == bypass + 1


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
async def pg_url(pg_database: str) -> str:
    from tests.consent.pg import fresh_schema

    return await fresh_schema(pg_database)


async def _terminate(url: str, pid: int) -> None:
    conn = await _CONNECT(url)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_postgres_notifications_arrive_and_the_log_evicts_one_recipient(
        pg_url: str) -> None:
    async with PostgresStore(pg_url) as relay, PostgresStore(pg_url, cache_size=0) as other:
        await relay.wait_listener(lambda s: s.listener_pid is not None)
        await relay.decisions([ANN, BOB], None)
        assert relay.cache is not None and len(relay.cache) == 2
        await other.set_consent(ANN, Beacons.GRANTED)
        await relay.wait_listener(lambda s: s.notifications >= 1)
        calls = _counted(relay)
        assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.GRANTED,
                                                            BOB: Decision.REFUSED}
        assert calls == [[], [ANN]] and len(relay.cache) == 2
        # One transaction, one version, one notification, however many rows.
        await other.import_suppressions(_suppressions([ANN, BOB, CAT]))
        await relay.wait_listener(lambda s: s.notifications >= 2)
        assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.SUPPRESSED,
                                                            BOB: Decision.SUPPRESSED}


async def _suppressions(addresses: list[str]) -> AsyncIterator[list[Any]]:
    from beacon_proxy.consent.model import SuppressionInput
    from beacon_proxy.consent.sqlbase import addr

    yield [SuppressionInput(addr(a), None, None) for a in addresses]


async def test_postgres_version_moves_once_per_transaction(pg_url: str) -> None:
    async with PostgresStore(pg_url, cache_size=0) as store:
        _, before = await store._lookup([], {}, "")
        await store.import_suppressions(_suppressions([ANN, BOB, CAT]))
        _, after = await store._lookup([], {}, "")
        assert after == before + 1


async def test_postgres_another_schema_does_not_touch_the_cache(
        pg_url: str, pg_database: str) -> None:
    from tests.consent.pg import fresh_schema

    elsewhere = await fresh_schema(pg_database)
    async with PostgresStore(pg_url) as relay, PostgresStore(elsewhere, cache_size=0) as other:
        await relay.wait_listener(lambda s: s.listener_pid is not None)
        await relay.decisions([ANN], None)
        await other.set_consent(ANN, Beacons.GRANTED)
        await other.set_consent(BOB, Beacons.GRANTED)
        # A change in relay's own schema after them: once it arrived, the others had.
        async with PostgresStore(pg_url, cache_size=0) as mine:
            await mine.set_consent(CAT, Beacons.GRANTED)
        await relay.wait_listener(lambda s: s.notifications >= 1)
        assert relay.notifications == 1


async def test_postgres_lost_listener_bypasses_the_cache_until_back(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with PostgresStore(pg_url) as relay, PostgresStore(pg_url, cache_size=0) as other:
        await relay.wait_listener(lambda s: s.listener_pid is not None)
        await relay.decisions([ANN], None)
        real_connect = asyncpg.connect
        refused: list[int] = []

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            refused.append(1)
            raise OSError("connection refused (test)")

        monkeypatch.setattr(asyncpg, "connect", refuse)
        pid = relay.listener_pid
        assert pid is not None
        await _terminate(pg_url, pid)
        await relay.wait_listener(lambda s: s.listener_pid is None and refused)
        assert relay._cache_mode()[0] is CacheMode.BYPASS
        await other.set_consent(ANN, Beacons.GRANTED)
        calls = _counted(relay)
        bypass = _metric("bypass")
        assert (await relay.decisions([ANN], None))[ANN] is Decision.GRANTED
        assert (await relay.decisions([ANN], None))[ANN] is Decision.GRANTED
        assert calls == [[ANN], [ANN]] and _metric("bypass") == bypass + 2
        assert relay.cache is not None and len(relay.cache) == 0
        monkeypatch.setattr(asyncpg, "connect", real_connect)
        await relay.wait_listener(lambda s: s.listener_pid not in (None, pid))
        assert len(relay.cache) == 0  # started empty
        calls.clear()
        await relay.decisions([ANN], None)
        await relay.decisions([ANN], None)
        assert calls == [[ANN], []]


async def test_postgres_unknown_policy_granted_is_cached_as_granted(pg_url: str) -> None:
    async with PostgresStore(pg_url, unknown=Policy.GRANTED) as store:
        await store.wait_listener(lambda s: s.listener_pid is not None)
        assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED
        assert (await store.decisions([ANN], None))[ANN] is Decision.GRANTED


async def test_a_large_import_empties_the_cache(
        pair: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes of many addresses are not logged one by one: every answer is read again."""
    from beacon_proxy.consent import sqlbase

    relay, other = pair
    await relay.decisions([ANN, BOB], None)
    monkeypatch.setattr(sqlbase, "CHANGES_LOGGED", 1)
    await other.import_suppressions(_suppressions([CAT, "dan@example.org"]))
    calls = _counted(relay)
    assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.REFUSED,
                                                        BOB: Decision.REFUSED}
    assert calls == [[], [ANN, BOB]]


async def test_a_bulk_change_longer_than_one_loop_read_rereads_only_its_answers(
        pair: tuple[SqlStore, SqlStore]) -> None:
    """One transaction changing more addresses than a read on the event loop may return
    logs them all under one version: the log is read whole (a second statement), and
    only the answers it names are read again."""
    from beacon_proxy.consent.sqlbase import LOOP_READ_MAX

    relay, other = pair
    if isinstance(relay, PostgresStore):  # the notification would empty the cache first
        relay._notified = lambda *args: None  # type: ignore[method-assign]
    await relay.decisions([ANN, BOB], None)
    many = [f"r{i}@example.org" for i in range(LOOP_READ_MAX + 8)]
    await other.import_suppressions(_suppressions([*many, BOB]))
    calls = _counted(relay)
    assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.REFUSED,
                                                        BOB: Decision.SUPPRESSED}
    assert calls == [[], [BOB]]


async def test_changes_longer_than_the_log_bound_empty_the_cache(
        pair: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """Logged changes (each within the bound) that add up to more than
    ``CHANGES_LOGGED`` rows since the cache's version are not read: all forgotten."""
    from beacon_proxy.consent import sqlbase

    relay, other = pair
    if isinstance(relay, PostgresStore):
        relay._notified = lambda *args: None  # type: ignore[method-assign]
    await relay.decisions([ANN, BOB], None)
    monkeypatch.setattr(sqlbase, "CHANGES_LOGGED", sqlbase.LOOP_READ_MAX + 8)
    for batch in range(2):  # each logged, together more than the bound
        await other.import_suppressions(_suppressions(
            [f"r{batch}-{i}@example.org" for i in range(sqlbase.LOOP_READ_MAX + 4)]))
    calls = _counted(relay)
    assert await relay.decisions([ANN, BOB], None) == {ANN: Decision.REFUSED,
                                                        BOB: Decision.REFUSED}
    assert calls == [[], [ANN, BOB]]


_SPELLINGS = ("Ann@B\u00fccher.example", "ann@xn--bcher-kva.example",
              '"ann"@b\u00fccher.example', "ANN@XN--BCHER-KVA.EXAMPLE",
              "ann@bu\u0308cher.example")  # the last: not NFC


async def test_a_change_reaches_every_spelling_of_the_mailbox(
        pair: tuple[SqlStore, SqlStore]) -> None:
    """The relay caches answers by the recipient as the envelope spells it; a change
    written under another spelling of the same mailbox (IDN A-/U-label, letter case, a
    quoted plain local part, another Unicode normal form) evicts every one of them, per
    list and globally."""
    relay, other = pair
    for lid in ("news.example.org", None):
        assert set((await relay.decisions(_SPELLINGS, lid)).values()) == {Decision.REFUSED}
    await other.set_consent('"ANN"@xn--bcher-kva.example', Beacons.GRANTED)
    for lid in ("news.example.org", None):
        assert set((await relay.decisions(_SPELLINGS, lid)).values()) == {Decision.GRANTED}
    await other.suppress("ann@B\u00dcCHER.example", "news.example.org")
    assert set((await relay.decisions(_SPELLINGS, "news.example.org")).values()) == {
        Decision.SUPPRESSED_LIST}
    assert set((await relay.decisions(_SPELLINGS, None)).values()) == {Decision.GRANTED}
    await other.suppress("ann@bücher.example")
    for lid in ("news.example.org", "other.example.org", None):
        assert set((await relay.decisions(_SPELLINGS, lid)).values()) == {
            Decision.SUPPRESSED}
    await other.forget("ANN@xn--bcher-kva.example")
    for lid in ("news.example.org", None):  # the suppression stays, kept as its hash
        assert set((await relay.decisions(_SPELLINGS, lid)).values()) == {
            Decision.SUPPRESSED}
    await other.unsuppress("ann@xn--bcher-kva.example")
    await other.unsuppress("ann@xn--bcher-kva.example", "news.example.org")
    for lid in ("news.example.org", None):  # consent forgotten: unknown, refused
        assert set((await relay.decisions(_SPELLINGS, lid)).values()) == {Decision.REFUSED}


class _Pragmas:
    """The loop connection, counting its ``PRAGMA data_version`` reads."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.reads = db, 0

    def execute(self, sql: str, *args: Any) -> Any:
        self.reads += sql == "PRAGMA data_version"
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def _pragmas(store: SqliteStore) -> _Pragmas:
    assert store._loop_db is not None
    counted = _Pragmas(store._loop_db)
    store._loop_db = counted  # type: ignore[assignment]
    return counted


async def test_sqlite_a_lookup_with_misses_reads_no_data_version_once_one_is_held(
        tmp_path: Path) -> None:
    """Every recipient new (the relay's usual lookup): the statement reads the version,
    no PRAGMA; the data version held stays, so hits alone still need no statement."""
    async with SqliteStore(tmp_path / "c.db") as relay:
        pragmas = _pragmas(relay)
        await relay.decisions([ANN], None)  # none held yet: the mark is taken
        assert pragmas.reads == 1 and relay._trusted is not None
        held = relay._trusted
        calls = _counted(relay)
        for n in range(5):
            await relay.decisions([f"new{n}@example.org"], None)
            await relay.decisions([ANN, f"again{n}@example.org"], None)  # a hit, a miss
        assert pragmas.reads == 1 and relay._trusted == held
        assert len(calls) == 10 and all(calls)
        assert (await relay.decisions([ANN, "new0@example.org"], None))[ANN] is Decision.REFUSED
        assert pragmas.reads == 2 and len(calls) == 10  # hits alone: trusted, no statement


async def test_sqlite_a_change_applies_to_a_lookup_with_misses_without_a_data_version(
        tmp_path: Path) -> None:
    """A held data version gone stale (another process committed) is not trusted by the
    lookups with misses that skip the PRAGMA: their statement reads the new decision
    version, the change log evicts the changed hit, and the next lookup of hits alone
    reads the data version, sees it moved, and checks the version once."""
    async with SqliteStore(tmp_path / "c.db") as relay, \
            SqliteStore(tmp_path / "c.db", cache_size=0) as other:
        await relay.decisions([ANN, BOB], None)
        pragmas = _pragmas(relay)
        held = relay._trusted
        assert held is not None
        await other.set_consent(ANN, Beacons.GRANTED)
        calls = _counted(relay)
        found = await relay.decisions([ANN, BOB, CAT], None)
        assert found == {ANN: Decision.GRANTED, BOB: Decision.REFUSED, CAT: Decision.REFUSED}
        assert calls == [[CAT], [ANN]]  # the miss and the version, then the changed hit
        assert pragmas.reads == 0 and relay._trusted == held
        await other.set_consent(BOB, Beacons.GRANTED)
        assert (await relay.decisions([ANN, BOB], None))[BOB] is Decision.GRANTED
        assert pragmas.reads == 1 and calls[2:] == [[], [BOB]]
        assert relay._trusted != held  # marked again at the data version read now
        calls.clear()
        await relay.decisions([ANN, BOB, CAT], None)
        assert calls == [] and pragmas.reads == 2
        # An unrelated commit: the next lookups with misses skip the PRAGMA, the first
        # of hits alone reads it, finds it moved and checks the version (no keys).
        await other.queue_forward("https://list.example.org/u/1", address=CAT, list_id=None)
        await relay.decisions(["dan@example.org"], None)
        assert pragmas.reads == 2 and calls == [["dan@example.org"]]
        await relay.decisions([ANN, BOB], None)
        await relay.decisions([ANN, BOB], None)
        assert pragmas.reads == 4 and calls == [["dan@example.org"], []]


@pytest.mark.parametrize("loop_read_max", [None, 1])
async def test_sqlite_interleaved_lookups_and_changes_of_every_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop_read_max: int | None) -> None:
    """Lookups of hits, misses and both, overlapping changes made by another process
    (the command line) and by the relay's own writer (the admin API), on the loop's
    connection or the reader's thread (``loop_read_max`` 1): a lookup that overlaps a
    change answers the old or the new decision, and every lookup that starts after it
    committed answers the new one -- with or without a data version read (a lookup
    with misses reads none once one is held)."""
    import asyncio
    import random

    from beacon_proxy.consent import sqlite as sqlite_module

    if loop_read_max is not None:
        monkeypatch.setattr(sqlite_module, "LOOP_READ_MAX", loop_read_max)
    rng = random.Random(8)
    crowd = [f"u{i}@example.org" for i in range(10)]
    truth = dict.fromkeys(crowd, Decision.REFUSED)
    new = 0
    async with SqliteStore(tmp_path / "c.db") as relay, \
            SqliteStore(tmp_path / "c.db", cache_size=0) as other:

        async def look() -> tuple[list[str], Mapping[str, Decision]]:
            nonlocal new
            asked = rng.sample(crowd, rng.randint(1, 4))
            if rng.random() < 0.5:  # and one never seen: a miss
                new += 1
                asked.append(f"new{new}@example.org")
            return asked, await relay.decisions(asked, None)

        for step in range(120):
            who = rng.choice(crowd)
            state = rng.choice([Beacons.GRANTED, Beacons.REFUSED])
            writer = other if rng.random() < 0.7 else relay
            before = truth[who]
            looks = [look() for _ in range(rng.randint(0, 3))]
            at = rng.randint(0, len(looks))  # where the change starts among the lookups
            first = [asyncio.ensure_future(job) for job in looks[:at]]
            change = asyncio.ensure_future(writer.set_consent(who, state))
            done = await asyncio.gather(*first, *looks[at:])
            await change
            for asked, found in done:
                for r in set(asked) & truth.keys():
                    allowed = {truth[r], before if r == who else truth[r]}
                    assert found[r] in allowed, (step, r)
            truth[who] = Decision(state.value)
            for _ in range(rng.randint(1, 3)):
                asked, found = await look()
                assert {r: found[r] for r in set(asked) & truth.keys()} == {
                    r: truth[r] for r in set(asked) & truth.keys()}, step
