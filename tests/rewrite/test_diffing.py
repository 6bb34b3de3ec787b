"""Campaign diffing in the relay: learn once per message, judge, wait, expire."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from beacon_proxy.consent.model import CampaignRecord
from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.rewrite import diffing as diffing_module
from beacon_proxy.rewrite.campaign import CampaignMemory
from beacon_proxy.rewrite.diffing import (
    CampaignDiffing,
    Observation,
    _memory,
    copy_id,
    is_list_mail,
)
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.spool.envelope import Envelope

ENGINE = Engine(load_rules())
T0 = 1_800_000_000.0
BANNER = "https://cdn.shop.example/campaigns/winter-banner.png"


def message(subscriber: str, *, headers: str = "List-Id: <news.shop.example>\r\n",
            hero: str = "https://img.shop.example/p/{}/hero.jpg") -> bytes:
    html = (f'<html><body><img src="{BANNER}" width="600" height="120">'
            f'<img src="{hero.format(subscriber)}" width="600" height="300"></body></html>')
    return (f"From: news@shop.example\r\nSubject: Winter picks\r\n{headers}"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()


def envelope(n: int, *, recipients: int = 1, received_at: float = T0) -> Envelope:
    return Envelope(f"Q{n:04d}", "news@shop.example",
                    tuple(f"r{n}.{i}@example.org" for i in range(recipients)),
                    received_at=received_at)


class CountingStore:
    """The real store, counting the calls campaign diffing makes (or failing them)."""

    def __init__(self, store: Store) -> None:
        self.store, self.changes, self.fail = store, 0, False

    async def change_campaign(self, digest: str,
                              change: Callable[[CampaignRecord], CampaignRecord | None], *,
                              at: datetime | None = None) -> CampaignRecord:
        self.changes += 1
        if self.fail:
            raise ConnectionError("the database is down")
        return await self.store.change_campaign(digest, change, at=at)

    async def get_campaign(self, digest: str) -> CampaignRecord | None:
        return await self.store.get_campaign(digest)

    async def prune_campaigns(self, before: datetime) -> int:
        return await self.store.prune_campaigns(before)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    async with open_store(f"sqlite:///{tmp_path / 'db' / 'consent.db'}") as s:
        yield CountingStore(s)


def diffing(store: CountingStore, **kw: float) -> tuple[CampaignDiffing, list[float]]:
    now = [T0]
    return CampaignDiffing(store, clock=lambda: now[0], **kw), now  # type: ignore[arg-type]


async def observe(d: CampaignDiffing, n: int, data: bytes, *, recipients: int = 1,
                  received_at: float = T0) -> Observation:
    return await d.observe(envelope(n, recipients=recipients, received_at=received_at), data,
                           ENGINE.analyse(data))


async def test_the_second_copy_finds_the_hero_and_not_the_banner(store: CountingStore) -> None:
    d, _ = diffing(store, hold=0)
    first = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert (first.copies, first.diffed, first.wait_until) == (1, frozenset(), None)
    second = await observe(d, 2, message("Zr8TqW1vNc5e0b"))
    assert second.campaign == first.campaign and second.copies == 2
    assert second.diffed == {(0, 1)}  # the hero, the message's second loaded reference
    assert first.campaign is not None
    assert second.report() == {"campaign": first.campaign[:12],
                               "campaign_copies": 2, "campaign_diffed": 1}


async def test_a_message_is_learned_once_however_often_it_is_attempted(
        store: CountingStore) -> None:
    d, _ = diffing(store, hold=0)
    data = message("k3JdP9xQw2Lm7a")
    for _ in range(3):
        assert (await observe(d, 1, data)).copies == 1
    assert (await observe(d, 2, message("Zr8TqW1vNc5e0b"))).copies == 2
    again = await observe(d, 1, data)  # the first message retried: now judged
    assert again.copies == 2 and again.diffed == {(0, 1)}


@pytest.mark.parametrize(("one", "other"), [
    ("ann@example.org", "ANN@Example.ORG"), ('"ann"@example.org', "ann@example.org"),
    ("ann@b\u00fccher.example", "ann@xn--bcher-kva.example"),
    ("ann@[IPv6:2001:DB8::1]", "ann@[ipv6:2001:db8:0::1]")])
def test_one_mailbox_spelled_two_ways_is_one_copy(one: str, other: str) -> None:
    """The recipient as the consent store keys it: a mailbox sent the campaign twice,
    in two spellings, is not two copies whose equal token would look shared."""
    assert copy_id(Envelope("Q1", "s@x", (one,)), "c1") == copy_id(
        Envelope("Q2", "s@x", (other,)), "c1")
    assert copy_id(Envelope("Q1", "s@x", (one,)), "c1") != copy_id(
        Envelope("Q1", "s@x", ("bob@example.org",)), "c1")


async def test_a_copy_submitted_twice_is_learned_once(store: CountingStore) -> None:
    """A client that lost our 250 sends the same copy again (a new queue id): learned
    twice, its id would be a repeat and the hero would be kept in every later copy."""
    d, _ = diffing(store, hold=0)
    first = message("k3JdP9xQw2Lm7a")
    await observe(d, 1, first)
    again = Envelope("Q9999", "news@shop.example", ("R1.0@example.org",), received_at=T0)
    assert (await d.observe(again, first, ENGINE.analyse(first))).copies == 1
    later = [await observe(d, n, message(f"Zr8TqW1vNc5e{n:02d}")) for n in (2, 3)]
    hero = frozenset({(0, 1)})
    assert [(o.copies, o.diffed) for o in later] == [(2, hero), (3, hero)]
    # a message to several recipients is one copy, known by its queue id
    many = await observe(d, 4, message("Qw8TqW1vNc5e0c"), recipients=3)
    assert many.copies == 4 and (await observe(d, 4, message("Qw8TqW1vNc5e0c"),
                                               recipients=3)).copies == 4


async def test_after_learn_copies_the_memory_is_fixed_and_read_from_no_store(
        store: CountingStore) -> None:
    d, _ = diffing(store, hold=0, learn=3)
    for n in range(3):
        await observe(d, n, message(f"k3JdP9xQw2Lm{n:02d}"))
    changes = store.changes
    later = [await observe(d, n, message(f"Zr8TqW1vNc5e{n:02d}")) for n in range(3, 8)]
    assert store.changes == changes  # the cache answered
    assert all(o.copies == 3 and o.diffed == {(0, 1)} for o in later)
    assert later[0].campaign is not None
    record = await store.get_campaign(later[0].campaign)
    assert record is not None and record.copies == 3 and len(record.learned) == 3
    assert record.learned[0] == copy_id(envelope(0), later[0].campaign)
    # The memory in the store holds hashes only: no URL, no id in clear.
    assert "k3JdP9xQw2Lm" not in record.memory and "shop" not in record.memory


async def test_a_content_variant_after_the_memory_is_full_is_kept(
        store: CountingStore) -> None:
    """The list is sorted by segment: the learned copies all have one segment's hero
    (a file named by a UUID, as ESPs name uploads).  The other segment's hero differs
    where no learned copy did - a content variant, not an id: it stays, unless the
    component that did differ between the learned copies (an id) is there too."""
    women = "https://img.shop.example/u/0b6f2c1e-5d9a-4c3b-8e7f-1a2b3c4d5e6f.jpg"
    men = "https://img.shop.example/u/7c9d1e2f-3a4b-4c5d-9e8f-0a1b2c3d4e5f.jpg"
    d, _ = diffing(store, hold=0, learn=3)
    for n in range(3):
        await observe(d, n, message(f"k3JdP9xQw2Lm{n:02d}", hero=women))
    assert (await observe(d, 3, message("Zr8TqW1vNc5e03", hero=men))).diffed == frozenset()
    tracked = "List-Id: <tracked.shop.example>\r\n"
    for n in range(3):
        seen = await observe(d, n, message(f"k3JdP9xQw2Lm{n:02d}", hero=women + "?p={}",
                                           headers=tracked))
    assert seen.diffed == {(0, 1)}
    other = await observe(d, 3, message("Zr8TqW1vNc5e03", hero=men + "?p={}", headers=tracked))
    assert other.diffed == {(0, 1)}  # the per-recipient id is still found


async def test_the_cache_counts_what_a_frozen_memory_costs_in_memory(
        store: CountingStore) -> None:
    """The cache's bound is of process memory: a frozen memory is counted at least at
    what its Python objects take (they weigh 6-7 times its stored JSON)."""
    d, _ = diffing(store, hold=0, learn=3)
    pixels = "".join(f'<img src="https://t.shop.example/o/{{}}{i:02d}" width="1" height="1">'
                     for i in range(40))

    def copy(n: int) -> bytes:
        return message(f"k3JdP9xQw2Lm{n:02d}", headers="List-Id: <x.shop.example>\r\n"
                       ).replace(b"</body>", pixels.format(*[f"Zr8TqW{n:02d}"] * 40).encode()
                                 + b"</body>")

    for n in range(3):
        seen = await observe(d, n, copy(n))
    assert seen.campaign is not None and len(seen.diffed) == 41
    record = await store.get_campaign(seen.campaign)
    assert record is not None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        memory = _memory(record.memory)
        cost = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert memory.copies == 3
    (counted,) = [size for _, size in d._frozen.values()]
    assert cost <= counted <= 2 * cost


async def test_a_copy_with_many_references_is_judged_off_the_event_loop(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diffing_module, "THREAD_REFERENCES", 1)
    threads: list[int] = []
    judge = CampaignMemory.judge

    def spy(memory: CampaignMemory, copy: Sequence[tuple[str, str]]) -> dict[int, str]:
        threads.append(threading.get_ident())
        return judge(memory, copy)

    monkeypatch.setattr(CampaignMemory, "judge", spy)
    d, _ = diffing(store, hold=0)
    await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert (await observe(d, 2, message("Zr8TqW1vNc5e0b"))).diffed == {(0, 1)}
    assert threads and threading.get_ident() not in threads


async def test_the_first_personalised_bulk_copy_waits_for_a_second(store: CountingStore) -> None:
    d, now = diffing(store, hold=60)
    woken: list[str] = []
    d.on_learned = woken.append
    first = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert first.wait_until == T0 + 60 and woken == []
    now[0] = T0 + 10
    again = await observe(d, 1, message("k3JdP9xQw2Lm7a"))  # retried before the second
    assert again.wait_until == T0 + 60
    second = await observe(d, 2, message("Zr8TqW1vNc5e0b"))
    assert second.wait_until is None and woken == [first.campaign]
    await observe(d, 3, message("Qw8TqW1vNc5e0c"))
    assert woken == [first.campaign]  # only the second copy wakes the first


@pytest.mark.parametrize(("why", "data", "recipients", "received_at"), [
    ("not list mail", message("k3JdP9xQw2Lm7a", headers="Precedence: first-class\r\n"), 1, T0),
    ("transactional mail: List-Unsubscribe but no List-Id",
     message("k3JdP9xQw2Lm7a", headers="List-Unsubscribe: <https://shop.example/u>\r\n"
             "Precedence: bulk\r\n"), 1, T0),
    ("one copy for many recipients", message("k3JdP9xQw2Lm7a"), 3, T0),
    ("nothing identifier-like to compare",
     message("k3JdP9xQw2Lm7a", hero="https://img.shop.example/p/hero.jpg"), 1, T0),
    ("the hold is over", message("k3JdP9xQw2Lm7a"), 1, T0 - 60),
])
async def test_copies_that_do_not_wait(store: CountingStore, why: str, data: bytes,
                                       recipients: int, received_at: float) -> None:
    d, _ = diffing(store, hold=60)
    seen = await observe(d, 1, data, recipients=recipients, received_at=received_at)
    assert seen.wait_until is None, why


async def test_no_hold_no_wait_and_no_loaded_reference_no_campaign(store: CountingStore) -> None:
    d, _ = diffing(store, hold=0)
    assert (await observe(d, 1, message("k3JdP9xQw2Lm7a"))).wait_until is None
    text = b"From: a@shop.example\r\nList-Id: <x.shop.example>\r\n\r\nplain text\r\n"
    nothing = await observe(d, 2, text)
    assert nothing.campaign is None and nothing.report() == {} and store.changes == 1


def test_list_mail_is_known_by_its_list_id() -> None:
    assert is_list_mail(envelope(1), message("x"))
    assert is_list_mail(Envelope("Q1", "a@shop.example", ("b@example.org",),
                                 list_id="news.shop.example"), message("x", headers=""))
    for headers in ("List-Unsubscribe: <https://shop.example/u>\r\n", "Precedence: bulk\r\n",
                    ""):
        assert not is_list_mail(envelope(1), message("x", headers=headers))


async def test_a_campaign_is_bound_to_who_submits_it(store: CountingStore) -> None:
    """Another client that copies the sender's From (or an authenticated user other than
    the sender's) learns into a campaign of its own: it cannot poison the sender's."""
    d, _ = diffing(store, hold=0)
    data = message("k3JdP9xQw2Lm7a")
    own = await d.observe(envelope(1), data, ENGINE.analyse(data))
    forged = Envelope("Q9", "x@elsewhere.example", ("r9@example.org",), received_at=T0)
    other = await d.observe(forged, data, ENGINE.analyse(data))
    authed = Envelope("Q8", "news@shop.example", ("r8@example.org",), received_at=T0,
                      auth_user="mallory")
    third = await d.observe(authed, data, ENGINE.analyse(data))
    assert len({own.campaign, other.campaign, third.campaign}) == 3


async def test_a_clock_stepped_back_never_makes_a_wait_longer_than_the_hold(
        store: CountingStore) -> None:
    d, now = diffing(store, hold=60)
    now[0] = T0 - 3600  # received "in the future": the clock stepped back an hour
    seen = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert seen.wait_until == now[0] + 60



async def test_a_failing_store_judges_with_the_engine_alone(store: CountingStore) -> None:
    d, _ = diffing(store, hold=60)
    store.fail = True
    seen = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert seen.error is not None and "database is down" in seen.error
    assert seen.diffed == frozenset() and seen.report()["campaign_error"] == seen.error
    assert seen.wait_until == T0 + 60  # nothing known: a new campaign's copy still waits


async def test_an_unreadable_stored_memory_is_learned_again(store: CountingStore) -> None:
    # refresh=0: every repeat of copy 2 reads the store (and finds the corrupt memory)
    d, _ = diffing(store, hold=0, refresh=0)
    first = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert first.campaign is not None
    for junk in ("{not json", "[1, 2]", json.dumps({"bounds": [1], "copies": 1})):
        def corrupt(r: CampaignRecord, text: str = junk) -> CampaignRecord:
            return CampaignRecord(text, 5, r.learned, r.updated_at)

        await store.store.change_campaign(first.campaign, corrupt)
        seen = await observe(d, 2, message("Zr8TqW1vNc5e0b"))
        assert seen.copies == 1 and seen.error is None  # started again from this copy
    assert (await observe(d, 3, message("Qw8TqW1vNc5e0c"))).diffed == {(0, 1)}


async def test_a_repeated_copy_costs_no_store_round_trip(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same copy to the same recipient again and again (the campaign never freezes):
    judged from this node's memory for ``refresh`` seconds, then one transaction that
    parses nothing when the stored memory did not change."""
    parsed: list[str] = []
    real = diffing_module._memory

    def counting(text: str) -> CampaignMemory:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(diffing_module, "_memory", counting)
    d, now = diffing(store, hold=0, refresh=10)
    data = message("k3JdP9xQw2Lm7a")
    assert (await observe(d, 1, data)).copies == 1
    assert (await observe(d, 2, message("Zr8TqW1vNc5e0b"))).copies == 2
    changes, parses = store.changes, len(parsed)
    repeats = [await observe(d, 1, data) for _ in range(5)]
    assert store.changes == changes and len(parsed) == parses
    assert all(o.copies == 2 and o.diffed == {(0, 1)} for o in repeats)
    now[0] += 10  # refresh: one transaction, the memory is not parsed again
    assert (await observe(d, 1, data)).diffed == {(0, 1)}
    assert store.changes == changes + 1 and len(parsed) == parses
    assert (await observe(d, 1, data)).copies == 2
    assert store.changes == changes + 1
    # a new copy is learned as before: one transaction, and repeats see it at once
    assert (await observe(d, 3, message("Qw8TqW1vNc5e0c"))).copies == 3
    assert (await observe(d, 1, data)).copies == 3
    assert store.changes == changes + 2


async def test_a_copy_learned_on_another_node_reaches_repeats_after_refresh(
        store: CountingStore) -> None:
    here, now = diffing(store, hold=0, refresh=10)
    there, _ = diffing(store, hold=0, refresh=10)
    data = message("k3JdP9xQw2Lm7a")
    assert (await observe(here, 1, data)).copies == 1
    assert (await observe(there, 2, message("Zr8TqW1vNc5e0b"))).copies == 2
    assert (await observe(here, 1, data)).copies == 1  # within refresh: this node's memory
    now[0] += 10
    again = await observe(here, 1, data)
    assert again.copies == 2 and again.diffed == {(0, 1)}


async def test_a_repeat_that_may_wait_always_asks_the_store(store: CountingStore) -> None:
    """A new campaign's first copy waits for a second one, which another node may learn:
    its repeats read the store, so the wait ends with the second copy known."""
    here, _ = diffing(store, hold=60, refresh=10)
    there, _ = diffing(store, hold=60, refresh=10)
    data = message("k3JdP9xQw2Lm7a")
    assert (await observe(here, 1, data)).wait_until == T0 + 60
    changes = store.changes
    assert (await observe(here, 1, data)).wait_until == T0 + 60
    assert store.changes == changes + 1
    await observe(there, 2, message("Zr8TqW1vNc5e0b"))
    retried = await observe(here, 1, data)
    assert (retried.copies, retried.wait_until) == (2, None) and retried.diffed == {(0, 1)}


async def test_the_repeat_memory_is_bounded(store: CountingStore) -> None:
    d, _ = diffing(store, hold=0, cache_bytes=1)  # no memory fits: every repeat asks
    data = message("k3JdP9xQw2Lm7a")
    await observe(d, 1, data)
    changes = store.changes
    await observe(d, 1, data)
    assert store.changes == changes + 1 and not d._known


async def test_prune_forgets_campaigns_after_the_expiry(store: CountingStore) -> None:
    d, now = diffing(store, hold=0, expire=3600)
    first = await observe(d, 1, message("k3JdP9xQw2Lm7a"))
    assert first.campaign is not None
    assert await d.prune() == 0
    now[0] = T0 + 7200
    assert await d.prune() == 1
    assert await store.get_campaign(first.campaign) is None


async def test_learn_must_allow_a_comparison(store: CountingStore) -> None:
    with pytest.raises(ValueError, match="two copies"):
        CampaignDiffing(store, learn=1)
