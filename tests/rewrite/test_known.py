"""Known bytes skip analysis: never another message's analysis, bounded, same diffing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.rewrite import known as known_module
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.diffing import CampaignDiffing, Observation
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.known import (
    FAILED_FOR,
    AnalysisCache,
    KnownFailure,
    body_start,
    cached,
    footprint,
)
from beacon_proxy.rewrite.rules import TrackerRules, load_rules
from beacon_proxy.rewrite.step import TraceHeader
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens
from tests.rewrite.hostile import HEAD, MESSAGES, PAGE, tracker_traces

ENGINE = Engine(load_rules())


def _html(header: str = "Content-Type", page: str = PAGE) -> bytes:
    return (HEAD + f"MIME-Version: 1.0\r\n{header}: text/html; charset=utf-8\r\n\r\n"
            + page + "\r\n").encode()


class Counting:
    """The engine in this process, counting the messages it analyses (or failing)."""

    def __init__(self, engine: Engine = ENGINE) -> None:
        self.inner = inline_analyse(engine)
        self.calls: list[bytes] = []
        self.fail = 0

    async def __call__(self, data: bytes) -> Analysis:
        self.calls.append(data)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the worker died")
        return await self.inner(data)


def _step(analyse: Counting, cache: AnalysisCache | None,
          campaigns: CampaignDiffing | None = None) -> BeaconStep:
    return BeaconStep(ENGINE, Tokens(["a test secret of some length"]),
                      public_url="https://prefs.example", hostname="relay.example",
                      steps=(TraceHeader("relay.example"),), analyse=analyse,
                      campaigns=campaigns, cache=cache)


def _env(n: int = 1, recipient: str = "r@x.example") -> Envelope:
    return Envelope(f"Q{n}", "news@shop.example", (recipient,), list_id="news.shop.example",
                    received_at=1_800_000_000.0)


async def test_identical_bytes_are_analysed_once_and_copies_are_the_same() -> None:
    counting = Counting()
    step = _step(counting, AnalysisCache(ENGINE.fingerprint))
    plain = _step(Counting(), None)
    data = MESSAGES["missing_close"]()
    for n in range(3):
        for policy in (Policy.REFUSED, Policy.GRANTED):
            mine = (await step.prepare(_env(n), data)).render("r@x.example", policy)
            theirs = (await plain.prepare(_env(n), data)).render("r@x.example", policy)
            assert mine.data == theirs.data and mine.report == theirs.report
    assert len(counting.calls) == 1
    assert step.cache is not None and (step.cache.hits, step.cache.misses) == (5, 1)


async def test_one_byte_changed_at_the_same_length_is_analysed_again() -> None:
    """The first message's pixel is plain text (a misspelt Content-Type): its analysis,
    applied to the second, would leave the pixel in a refused copy."""
    before, after = _html("Content-Typf"), _html("Content-Type")
    assert len(before) == len(after)
    assert sum(x != y for x, y in zip(before, after, strict=True)) == 1
    wrong = replace(ENGINE.analyse(before), data=after)
    wrong = replace(wrong, tree=replace(wrong.tree, data=after))
    assert tracker_traces(ENGINE.render(wrong, "r@x.example", Policy.REFUSED).data)
    counting = Counting()
    step = _step(counting, AnalysisCache(ENGINE.fingerprint))
    await step.prepare(_env(1), before)
    copy = (await step.prepare(_env(2), after)).render("r@x.example", Policy.REFUSED)
    assert copy.held is None and tracker_traces(copy.data) == []
    assert counting.calls == [before, after]


async def test_a_digest_collision_still_needs_equal_bytes() -> None:
    cache = AnalysisCache(b"ctx")
    before, after = _html("Content-Typf"), _html("Content-Type")
    key = cache.key(before)
    cache.put(before, ENGINE.analyse(before), key)
    assert cache.get(before, key) is not None
    assert cache.get(after, key) is None  # as if both had the same digest
    assert cache.get(after) is None


def test_an_analysis_of_other_bytes_is_never_kept() -> None:
    cache = AnalysisCache(b"ctx")
    before, after = _html("Content-Typf"), _html("Content-Type")
    cache.put(after, ENGINE.analyse(before))
    assert len(cache) == 0 and cache.get(after) is None and cache.get(before) is None


def test_the_key_covers_the_context_the_length_and_every_byte_of_the_body() -> None:
    """The header is not in the key: it is compared (equal bytes) or proven irrelevant
    (Engine.rebase), never trusted."""
    data = _html()
    split = body_start(data)
    assert split == data.index(b"\r\n\r\n") + 4
    assert AnalysisCache(b"a").key(data) == AnalysisCache(b"a").key(
        data.replace(b"h1@shop", b"h2@shop"))
    assert AnalysisCache(b"a").key(data) != AnalysisCache(b"a").key(data[:split] + b" " +
                                                                 data[split:])
    keys = {AnalysisCache(b"a").key(data), AnalysisCache(b"b").key(data),
            AnalysisCache(b"").key(data), AnalysisCache(b"a").key(data[:-1]),
            AnalysisCache(b"a").key(data[:-1] + b"!"), AnalysisCache(b"a").key(b""),
            # the context and the message are delimited: no shift between them collides
            AnalysisCache(b"ab").key(b"c"), AnalysisCache(b"a").key(b"bc")}
    assert len(keys) == 8
    assert AnalysisCache(b"a").key(data) == AnalysisCache(b"a").key(bytes(bytearray(data)))


_HEADERS = st.sampled_from([b"", b"To: a@x.org\r\n\r\n", b"To: b@x.org\r\n\r\n",
                            b"Subject: s\n\n", b"X: 1\r\n"])
_BODIES = st.one_of(st.sampled_from([b"", b"body\r\n", b"bodz\r\n", b"\r\nbody\r\n"]),
                    st.binary(max_size=40))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_HEADERS, _BODIES, st.booleans()), min_size=1, max_size=12))
def test_a_body_equal_to_the_last_keyed_has_its_key_without_a_hash(
        messages: list[tuple[bytes, bytes, bool]]) -> None:
    """One cache keying a run of messages (bodies repeated under other headers, bodies
    of equal length, no header, no body) gives every message the key a fresh cache
    (which remembers no last key, so hashes) gives it."""
    cache = AnalysisCache(b"ctx")
    for header, body, pass_split in messages:
        data = header + body
        split = body_start(data) if pass_split else None
        assert cache.key(data, split) == AnalysisCache(b"ctx").key(data)


def test_a_body_over_the_thread_bound_is_hashed_each_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_module, "_HASH_IN_THREAD", 8)
    cache = AnalysisCache(b"ctx")
    small, big = b"To: a\r\n\r\nsmall", b"To: a\r\n\r\n" + b"b" * 9
    cache.key(small)
    assert cache._last_key is not None and cache._last_key[0] is small
    cache.key(big)
    assert cache._last_key[0] is small  # not remembered: compared on no thread
    cache.clear()
    assert cache._last_key is None


def test_the_fingerprint_changes_with_what_the_analysis_depends_on() -> None:
    rules = load_rules()
    same = {ENGINE.fingerprint, Engine(load_rules()).fingerprint, Engine(rules).fingerprint}
    assert len(same) == 1
    others = {
        Engine(load_rules(allow=("https://relay.example",))).fingerprint,
        Engine(TrackerRules({"Only": [r"open\.example\.com"]})).fingerprint,
        Engine(TrackerRules({"Only": [r"open\.example\.net"]})).fingerprint,
        Engine(TrackerRules({"Other": [r"open\.example\.net"]})).fingerprint,
        Engine(rules, max_depth=5).fingerprint,
        Engine(rules, max_parts=5).fingerprint,
        Engine(rules, max_tags=5).fingerprint,
    }
    assert len(others) == 7 and ENGINE.fingerprint not in others
    # the scan cache never changes a result: its size is not part of it
    assert Engine(rules, templates=0).fingerprint == ENGINE.fingerprint


async def test_a_cache_of_other_rules_analyses_again() -> None:
    """Rules that call the planted pixel's host a tracker, and rules that do not: the same
    bytes under either analyser's cache get that analyser's own analysis."""
    data = _html(page=PAGE.replace('width="1" height="1" ', ""))  # found by rules only
    none = Engine(TrackerRules({"Nobody": [r"nothing\.example\.com"]}))
    for engine in (none, ENGINE):
        counting = Counting(engine)
        fn = cached(counting, AnalysisCache(engine.fingerprint))
        assert (await fn(data)) == engine.analyse(data)
        await fn(data)
        assert len(counting.calls) == 1
    assert AnalysisCache(none.fingerprint).key(data) != AnalysisCache(ENGINE.fingerprint).key(data)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_failed_analysis_answers_the_same_body_for_a_while() -> None:
    """The next copies of a body whose analysis failed fall back at once (no second
    budget spent on it), also under another header with the same content lines;
    after FAILED_FOR it is analysed again, and the result is kept."""
    counting, clock = Counting(), Clock()
    counting.fail = 1
    cache = AnalysisCache(ENGINE.fingerprint, clock=clock)
    step = _step(counting, cache)
    data = MESSAGES["missing_close"]()
    first = (await step.prepare(_env(1), data)).render("r@x.example", Policy.REFUSED)
    assert first.report["outcome"] == "fallback"
    personal = b"X-Subscriber: 42\r\n" + data  # another header, the same content lines
    for n, copy in enumerate((data, personal), 2):
        again = (await step.prepare(_env(n), copy)).render("r@x.example", Policy.REFUSED)
        assert again.report["outcome"] == "fallback" and len(counting.calls) == 1
        assert "KnownFailure" in str(again.report) and "the worker died" in str(again.report)
    assert cache.failed == 2
    clock.now += FAILED_FOR
    later = (await step.prepare(_env(4), data)).render("r@x.example", Policy.REFUSED)
    assert later.report["outcome"] == "stripped" and len(counting.calls) == 2
    await step.prepare(_env(5), data)
    assert len(counting.calls) == 2  # kept


async def test_a_failure_does_not_answer_other_content_lines() -> None:
    counting = Counting()
    counting.fail = 1
    known = cached(counting, AnalysisCache(ENGINE.fingerprint))
    data = _html()
    with pytest.raises(RuntimeError):
        await known(data)
    other = data.replace(b"charset=utf-8", b"charset=iso-8859-1", 1)  # in the header
    assert (await known(other)).data == other and counting.calls == [data, other]
    with pytest.raises(KnownFailure):
        await known(data)
    assert len(counting.calls) == 2


async def test_a_big_message_is_not_kept_but_its_failure_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting()
    counting.fail = 1
    data = _html()
    cache = AnalysisCache(ENGINE.fingerprint, max_message=len(data) - 1)
    monkeypatch.setattr(known_module, "_HASH_IN_THREAD", len(data) - 1)  # hashed in a thread
    known = cached(counting, cache)
    with pytest.raises(RuntimeError):
        await known(data)
    with pytest.raises(KnownFailure):
        await known(data)
    assert len(counting.calls) == 1 and len(cache) == 0
    cache.clear()  # SIGHUP forgets failures too
    assert (await known(data)).data == data
    assert (await known(data)).data == data and len(counting.calls) == 3  # never kept


def _variants(count: int) -> list[bytes]:
    return [_html(page=PAGE.replace("Autumn offers", f"Autumn offers {i:04d}"))
            for i in range(count)]


def test_bounded_in_entries_least_recently_used_first_out() -> None:
    cache = AnalysisCache(b"ctx", entries=2)
    a, b, c = _variants(3)
    for data in (a, b):
        cache.put(data, ENGINE.analyse(data))
    assert cache.get(a) is not None  # a used: b is the oldest now
    cache.put(c, ENGINE.analyse(c))
    assert len(cache) == 2 and cache.get(b) is None
    assert cache.get(a) is not None and cache.get(c) is not None
    assert AnalysisCache(b"ctx", entries=0).get(a) is None


def test_bounded_in_bytes() -> None:
    messages = _variants(10)
    analyses = [ENGINE.analyse(m) for m in messages]
    one = footprint(analyses[0])
    assert one > len(messages[0])
    cache = AnalysisCache(b"ctx", max_bytes=3 * one + one // 2)
    for data, analysis in zip(messages, analyses, strict=True):
        cache.put(data, analysis)
        assert cache.size <= cache.max_bytes
    assert len(cache) == 3 and cache.size == sum(footprint(a) for a in analyses[-3:])
    assert [cache.get(m) is not None for m in messages] == [False] * 7 + [True] * 3
    small = AnalysisCache(b"ctx", max_bytes=one - 1)  # bigger than the whole cache
    small.put(messages[0], analyses[0])
    assert len(small) == 0 and small.size == 0
    big = AnalysisCache(b"ctx", max_message=len(messages[0]) - 1)
    big.put(messages[0], analyses[0])
    assert len(big) == 0
    cache.clear()
    assert len(cache) == 0 and cache.size == 0
    with pytest.raises(ValueError):
        AnalysisCache(b"ctx", entries=-1)


def test_putting_the_same_bytes_again_counts_them_once() -> None:
    cache = AnalysisCache(b"ctx")
    data = _variants(1)[0]
    for _ in range(3):
        cache.put(data, ENGINE.analyse(data))
    assert len(cache) == 1 and cache.size == footprint(ENGINE.analyse(data))


def _personal(subscriber: str) -> bytes:
    hero = f"https://img.shop.example/p/{subscriber}/hero.jpg"
    page = ('<html><body><img src="https://cdn.shop.example/banner.png" width="600" '
            f'height="120"><img src="{hero}" width="600" height="300"></body></html>')
    return _html(page=page)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'consent.db'}"


async def test_campaign_diffing_sees_the_same_as_without_the_cache(store_url: str) -> None:
    """Every message is still observed: a copy known to its campaign is not learned again,
    a new recipient's identical copy is, exactly as without the cache."""
    sequence = [(1, "a@x.example", _personal("k3JdP9xQw2Lm7a")),
                (1, "a@x.example", _personal("k3JdP9xQw2Lm7a")),  # a retry
                (2, "b@x.example", _personal("k3JdP9xQw2Lm7a")),  # same bytes, other rcpt
                (3, "c@x.example", _personal("Zr8TqW1vNc5e0b")),
                (3, "c@x.example", _personal("Zr8TqW1vNc5e0b")),
                (4, "d@x.example", _personal("k3JdP9xQw2Lm7a"))]
    seen: list[list[tuple[Observation, bytes]]] = []
    calls = []
    for with_cache in (False, True):
        async with open_store(store_url.replace("consent.db", f"{with_cache}.db")) as store:
            counting = Counting()
            step = _step(counting, AnalysisCache(ENGINE.fingerprint) if with_cache else None,
                         CampaignDiffing(store, hold=0))
            out = []
            for n, rcpt, data in sequence:
                message = await step.prepare(_env(n, rcpt), data)
                copy = message.render(rcpt, Policy.REFUSED)
                out.append((replace(message.campaign, wait_until=None), copy.data))
            seen.append(out)
            calls.append(len(counting.calls))
    assert seen[0] == seen[1]
    assert [o.copies for o, _ in seen[1]] == [1, 1, 2, 3, 3, 4]
    assert calls == [6, 2]


async def test_a_message_too_big_to_keep_is_never_kept_and_a_big_one_hashed_off_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from beacon_proxy.rewrite import known

    data = _variants(1)[0]
    counting = Counting()
    cache = AnalysisCache(ENGINE.fingerprint, max_message=len(data) - 1)
    hashed: list[str] = []
    key = cache.key

    def spy(d: bytes, split: int | None = None) -> bytes:
        hashed.append(threading.current_thread().name)
        return key(d, split)

    monkeypatch.setattr(cache, "key", spy)
    fn = cached(counting, cache)
    await fn(data)
    await fn(data)
    # hashed only for a failure it might have had (not kept, so analysed each time)
    assert len(counting.calls) == 2 and len(hashed) == 2 and len(cache) == 0
    hashed.clear()
    cache.max_message = len(data)
    monkeypatch.setattr(known, "_HASH_IN_THREAD", len(data) - 1)
    assert (await fn(data)) == (await fn(data))
    assert len(counting.calls) == 3 and len(hashed) == 2
    assert threading.main_thread().name not in hashed  # both hashed in a worker thread


class Gated(Counting):
    """Counting, but every analysis waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, data: bytes) -> Analysis:
        self.started.set()
        await self.gate.wait()
        return await super().__call__(data)


async def test_concurrent_misses_of_the_same_bytes_are_analysed_once() -> None:
    gated = Gated()
    cache = AnalysisCache(ENGINE.fingerprint)
    known = cached(gated, cache)
    data = MESSAGES["missing_close"]()
    other = _html()
    first = asyncio.ensure_future(known(data))
    await gated.started.wait()
    rest = [asyncio.ensure_future(known(data)) for _ in range(4)]
    different = asyncio.ensure_future(known(other))
    for _ in range(5):  # let every waiter reach the pending analysis
        await asyncio.sleep(0)
    gated.gate.set()
    results = await asyncio.gather(first, *rest, different)
    assert gated.calls == [data, other]
    assert all(r is results[0] for r in results[:5]) and results[0].data == data
    assert results[5].data == other


async def _analysing_and_waiting(gated: Gated, data: bytes
                                 ) -> tuple[asyncio.Future[Analysis], asyncio.Future[Analysis]]:
    """Two copies of ``data`` through one cache: the first in ``gated``'s analysis, the
    second waiting for it."""
    known = cached(gated, AnalysisCache(ENGINE.fingerprint))
    first = asyncio.ensure_future(known(data))
    await gated.started.wait()
    second = asyncio.ensure_future(known(data))
    for _ in range(5):
        await asyncio.sleep(0)
    return first, second


async def test_a_failed_shared_analysis_answers_its_waiters() -> None:
    """A copy waiting for the same bytes' analysis gets its failure, not a second try
    of a budget the first one overran."""
    gated = Gated()
    gated.fail = 1
    data = MESSAGES["missing_close"]()
    first, second = await _analysing_and_waiting(gated, data)
    gated.gate.set()
    with pytest.raises(RuntimeError):
        await first
    with pytest.raises(KnownFailure, match="the worker died"):
        await second
    assert len(gated.calls) == 1


async def test_a_cancelled_analysis_is_tried_again_by_its_waiter() -> None:
    gated = Gated()
    data = MESSAGES["missing_close"]()
    first, second = await _analysing_and_waiting(gated, data)
    first.cancel()
    await asyncio.sleep(0)
    gated.gate.set()
    # the cancelled one never got past the gate: the only analysis is the waiter's own
    assert (await second).data == data and len(gated.calls) == 1


async def test_a_cancelled_waiter_does_not_cancel_the_analysis() -> None:
    gated = Gated()
    data = MESSAGES["missing_close"]()
    first, second = await _analysing_and_waiting(gated, data)
    second.cancel()
    gated.gate.set()
    assert (await first).data == data and len(gated.calls) == 1
    with pytest.raises(asyncio.CancelledError):
        await second
