"""The store's contract, run against SQLite and against the real PostgreSQL server."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import pytest

from beacon_proxy.consent.address import AddressError
from beacon_proxy.consent.model import Beacons, InvalidValue, OpenInput
from beacon_proxy.consent.policy import Decision, Policy
from beacon_proxy.consent.store import Store, open_store

G, R, S = Decision.GRANTED, Decision.REFUSED, Decision.SUPPRESSED
SL = Decision.SUPPRESSED_LIST  # suppressed for the message's list only


async def test_consent_is_keyed_case_insensitively_with_a_canonical_address(store: Store) -> None:
    rec = await store.set_consent("Ann.Lee@Bücher.DE", "granted", source="form", actor="t1")
    assert rec.address == "Ann.Lee@xn--bcher-kva.de"
    assert (rec.beacons, rec.source, rec.actor) == (Beacons.GRANTED, "form", "t1")
    for variant in ("ann.lee@bücher.de", "ANN.LEE@XN--BCHER-KVA.DE", "<ann.lee@Bücher.de>"):
        found = await store.get_consent(variant)
        assert found is not None and found.address == rec.address
        assert found.updated_at == rec.updated_at
    await store.set_consent("ANN.LEE@bücher.de", "refused", actor="t2")
    page = await store.list_consent()
    assert [(c.address, c.beacons) for c in page.items] == [
        ("ANN.LEE@xn--bcher-kva.de", Beacons.REFUSED)]
    assert await store.get_consent("nobody@example.org") is None


@pytest.mark.parametrize(("written", "spellings"), [
    # a domain the relay accepts and IDNA 2008 refuses: an emoji label (U+1F4A9) ...
    ("reader@xn--ls8h.la", ["Reader@XN--LS8H.LA"]),
    ("reader@xn--zz.example", ["READER@xn--ZZ.example"]),  # ... no valid Punycode
    ("reader@\u05d0a.com", ["reader@xn--a-zhc.com", "READER@\u05d0A.COM"]),  # ... bidi
    # IPv6 literals in any spelling
    ("reader@[IPv6:2001:DB8:0::1]", ["reader@[ipv6:2001:db8::1]",
                                     "Reader@[IPv6:2001:0db8:0000::0001]"]),
])
async def test_every_address_the_relay_delivers_to_can_refuse_and_be_suppressed(
        store: Store, written: str, spellings: list[str]) -> None:
    """Consent and suppressions are recorded for such addresses, and every spelling of
    one finds them (the relay looks recipients up as they came in RCPT)."""
    await store.set_consent(written, "granted")
    await store.set_consent(spellings[-1], "refused")
    page = await store.list_consent()
    assert len(page.items) == 1
    got = await store.decisions([written, *spellings], None)
    assert set(got.values()) == {R}
    await store.suppress(spellings[0], reason="one-click")
    got = await store.decisions([written, *spellings], None)
    assert set(got.values()) == {S}


async def test_decisions_one_lookup_for_all_recipients(store: Store) -> None:
    await store.set_consent("g@example.org", "granted")
    await store.set_consent("r@example.org", "refused")
    await store.set_consent("u@example.org", "unknown")
    await store.suppress("all@example.org", reason="unsubscribed")
    await store.suppress("news@example.org", "news.example.org")
    await store.set_consent("news@example.org", "granted")
    recipients = ["G@example.org", "g@EXAMPLE.org", "r@example.org", "u@example.org",
                  "new@example.org", "all@example.org", "news@example.org", "not an address"]
    got = await store.decisions(recipients, "Weekly <News.Example.org>")
    assert got == {"G@example.org": G, "g@EXAMPLE.org": G, "r@example.org": R,
                   "u@example.org": R, "new@example.org": R, "all@example.org": S,
                   "news@example.org": SL, "not an address": R}
    other = await store.decisions(recipients, "other.example.org")
    assert other["news@example.org"] == G and other["all@example.org"] == S
    none = await store.decisions(recipients, None)
    assert none["news@example.org"] == G and none["all@example.org"] == S
    assert await store.decisions([], "x") == {}
    # Suppressed both globally and for the list: the global one is what matched.
    await store.suppress("all@example.org", "news.example.org")
    assert (await store.decisions(["all@example.org"], "news.example.org")) == {
        "all@example.org": S}


async def test_unknown_follows_the_configured_default(url: str) -> None:
    async with open_store(url, unknown=Policy.GRANTED) as store:
        await store.set_consent("u@example.org", "unknown")
        await store.set_consent("r@example.org", "refused")
        got = await store.decisions(["u@example.org", "new@example.org", "r@example.org"], None)
        assert got == {"u@example.org": G, "new@example.org": G, "r@example.org": R}
        assert await store.record_open("new@example.org")


async def test_delete_consent_makes_the_recipient_unknown_again(store: Store) -> None:
    assert not await store.delete_consent("a@example.org")
    await store.set_consent("a@example.org", "granted")
    assert await store.delete_consent("A@example.org", actor="ops")
    assert await store.get_consent("a@example.org") is None
    assert (await store.decisions(["a@example.org"], None))["a@example.org"] == R
    history = (await store.history("a@example.org")).items
    actions = [(e.action, e.old, e.new, e.actor) for e in history]
    assert actions == [("consent.set", None, "granted", None),
                       ("consent.delete", "granted", None, "ops")]


async def test_list_consent_pages_and_filters(store: Store) -> None:
    for i in range(7):
        await store.set_consent(f"user{i}@example.org", "granted" if i % 2 else "refused")
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_consent(after=after, limit=3)
        assert len(page.items) <= 3
        seen += [c.address for c in page.items]
        if page.next is None:
            break
        after = page.next
    assert seen == sorted(f"user{i}@example.org" for i in range(7))
    granted = await store.list_consent(beacons="granted", limit=100)
    assert [c.address for c in granted.items] == ["user1@example.org", "user3@example.org",
                                                   "user5@example.org"]
    assert granted.next is None


async def test_suppressions_per_list_and_global(store: Store) -> None:
    s1 = await store.suppress("Bob@Example.org", "News <news.example.org>", reason="clicked",
                              source="one-click", actor="web")
    assert (s1.address, s1.list_id, s1.reason, s1.source, s1.forgotten) == (
        "Bob@example.org", "news.example.org", "clicked", "one-click", False)
    s2 = await store.suppress("bob@example.org", reason="complaint")
    assert s2.list_id is None
    again = await store.suppress("bob@example.org", reason="complaint, twice")
    assert again.id == s2.id and again.reason == "complaint, twice"
    assert [s.list_id for s in await store.suppressions_of("BOB@example.org")] == [
        None, "news.example.org"]
    await store.suppress("carol@example.org", "other.example.org")
    assert [s.address for s in (await store.list_suppressions(global_only=True)).items] == [
        "bob@example.org"]
    assert [s.address for s in (await store.list_suppressions(
        list_id="news.example.org")).items] == ["Bob@example.org"]
    first = await store.list_suppressions(limit=2)
    rest = await store.list_suppressions(after=first.next, limit=2)
    assert len(first.items) == 2 and len(rest.items) == 1 and rest.next is None
    assert await store.unsuppress("bob@example.org", actor="ops")
    assert not await store.unsuppress("bob@example.org")
    assert (await store.decisions(["bob@example.org"], "news.example.org"))[
        "bob@example.org"] == SL
    assert await store.unsuppress("bob@example.org", "news.example.org")
    assert (await store.decisions(["bob@example.org"], "news.example.org"))[
        "bob@example.org"] == R
    actions = [(e.action, e.list_id, e.old) for e in (await store.history("bob@example.org")).items]
    assert actions == [("suppression.add", "news.example.org", None),
                       ("suppression.add", None, None),
                       ("suppression.add", None, "suppressed"),
                       ("suppression.remove", None, "suppressed"),
                       ("suppression.remove", "news.example.org", "suppressed")]


async def test_audit_trail_is_append_only(store: Store) -> None:
    await store.set_consent("a@example.org", "granted", source="form", actor="t")
    await store.set_consent("b@example.org", "refused")
    page = await store.history()
    assert [(e.action, e.address, e.new) for e in page.items] == [
        ("consent.set", "a@example.org", "granted"), ("consent.set", "b@example.org", "refused")]
    assert page.items[0].id < page.items[1].id
    assert (await store.history(limit=1)).next == str(page.items[0].id)
    async with store._write() as c:  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="append-only"):
            await c.script("DELETE FROM audit;")
    async with store._write() as c:  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="redacted"):
            await c.script("UPDATE audit SET new = 'refused';")
    assert len((await store.history()).items) == 2


async def test_opens_are_recorded_only_with_consent(store: Store) -> None:
    await store.set_consent("yes@example.org", "granted")
    await store.set_consent("no@example.org", "refused")
    assert await store.record_open("YES@example.org", list_id="News <news.example.org>",
                                   message_id="<m1@x>", ua_class="browser")
    assert await store.record_open("yes@example.org", machine=True, ua_class="apple-mpp")
    assert not await store.record_open("no@example.org")
    assert not await store.record_open("unknown@example.org")  # default: refused
    page = await store.opens()
    assert [(e.address, e.list_id, e.message_id, e.ua_class, e.machine) for e in page.items] == [
        ("yes@example.org", "news.example.org", "<m1@x>", "browser", False),
        ("yes@example.org", None, None, "apple-mpp", True)]
    assert len((await store.opens(list_id="news.example.org")).items) == 1
    assert len((await store.opens(address="Yes@Example.org")).items) == 2
    assert (await store.opens(since=page.items[1].at)).items == [page.items[1]]
    one = await store.opens(limit=1)
    assert one.items == [page.items[0]] and one.next is not None
    assert (await store.opens(after=one.next)).items == [page.items[1]]
    assert (await store.opens(machine=False)).items == [page.items[0]]
    assert (await store.opens(machine=True, address="yes@example.org")).items == [page.items[1]]
    with pytest.raises(InvalidValue):
        await store.record_open("yes@example.org", ua_class="x" * 41)


async def test_record_opens_writes_a_batch_checking_each_consent(store: Store) -> None:
    await store.set_consent("yes@example.org", "granted")
    await store.set_consent("no@example.org", "refused")
    done = await store.record_opens([
        OpenInput("yes@example.org", "news.example.org", "Q1", "browser"),
        OpenInput("no@example.org"), OpenInput("unknown@example.org"),
        OpenInput("YES@example.org", machine=True, ua_class="apple-mpp")])
    assert done == [True, False, False, True]
    assert await store.record_opens([]) == []
    with pytest.raises(InvalidValue):  # validated first: nothing of the batch recorded
        await store.record_opens([OpenInput("yes@example.org"),
                                  OpenInput("yes@example.org", ua_class="x" * 41)])
    opens = (await store.opens()).items
    assert [(e.list_id, e.message_id, e.machine) for e in opens] == [
        ("news.example.org", "Q1", False), (None, None, True)]


async def test_forget_erases_but_the_suppression_holds(store: Store) -> None:
    await store.set_consent("Zoe@example.org", "granted", source="form")
    await store.record_open("zoe@example.org")
    await store.suppress("zoe@example.org", reason="moved away, new address zoe@new.example")
    await store.suppress("zoe@example.org", "news.example.org")
    await store.set_consent("other@example.org", "granted")
    await store.record_open("other@example.org")
    await store.queue_forward("https://news.example.org/u/zoe-id", address="zoe@example.org",
                              list_id="news.example.org")
    done = await store.forget("ZOE@example.org", actor="dpo")
    assert (done.consent, done.opens, done.suppressions) == (True, 1, 2)
    assert done.audit == 3
    assert await store.get_consent("zoe@example.org") is None
    assert [e.address for e in (await store.opens()).items] == ["other@example.org"]
    assert (await store.list_forwards()).items == []
    sups = await store.suppressions_of("zoe@example.org")
    assert [(s.address, s.reason, s.forgotten) for s in sups] == [(None, None, True)] * 2
    assert (await store.decisions(["Zoe@Example.org"], None))["Zoe@Example.org"] == S
    history = (await store.history("zoe@example.org")).items
    assert [e.action for e in history] == ["consent.set", "suppression.add", "suppression.add",
                                           "forget"]
    assert all(e.address is None and e.reason is None for e in history)
    listed = [s for s in (await store.list_suppressions()).items if s.forgotten]
    assert len(listed) == 2 and all(s.address is None for s in listed)
    again = await store.forget("zoe@example.org")
    assert (again.consent, again.opens, again.suppressions, again.audit) == (False, 0, 0, 0)
    restored = await store.suppress("zoe@example.org", reason="asked again")
    assert restored.address == "zoe@example.org" and not restored.forgotten
    assert await store.unsuppress("zoe@example.org", "news.example.org")


async def test_bad_input_is_refused_with_a_reason(store: Store) -> None:
    with pytest.raises(AddressError, match="no @domain"):
        await store.set_consent("nobody", "granted")
    with pytest.raises(InvalidValue, match="beacons"):
        await store.set_consent("a@example.org", "maybe")
    with pytest.raises(InvalidValue, match="source"):
        await store.set_consent("a@example.org", "granted", source="a\nb")
    with pytest.raises(InvalidValue, match="list"):
        await store.suppress("a@example.org", "not a list id")
    with pytest.raises(InvalidValue, match="limit"):
        await store.list_consent(limit=0)
    with pytest.raises(InvalidValue, match="after"):
        await store.list_suppressions(after="x")
    assert (await store.history()).items == []


async def test_reopening_keeps_data_schema_and_hash_key(url: str) -> None:
    async with open_store(url) as first:
        await first.suppress("gone@example.org")
        await first.forget("gone@example.org")
    async with open_store(url) as second:  # migrations are not applied twice
        assert (await second.decisions(["gone@example.org"], None))["gone@example.org"] == S
        async with second._write() as c:  # type: ignore[attr-defined]
            rows = await c.fetch("applied-migrations")
        assert [r["version"] for r in rows] == list(range(1, second.schema_version + 1))  # type: ignore[attr-defined]
        # the keyed hash rows are found by: HMAC-SHA256 under the stored key, as ever
        async with second._write() as c:  # type: ignore[attr-defined]
            key = bytes.fromhex((await c.fetch("get-meta", "hash_key"))[0]["value"])
        assert second._hash("gone@example.org") == hmac.digest(  # type: ignore[attr-defined]
            key, b"gone@example.org", "sha256").hex()


async def test_two_instances_see_each_others_changes_at_once(url: str) -> None:
    """Two nodes (separate connections/pools) on one database: no stale cache."""
    async with open_store(url) as a, open_store(url) as b:
        assert (await b.decisions(["x@example.org"], None))["x@example.org"] == R
        await a.set_consent("x@example.org", "granted")
        assert (await b.decisions(["x@example.org"], None))["x@example.org"] == G
        await b.suppress("x@example.org", "news.example.org")
        assert (await a.decisions(["x@example.org"], "news.example.org"))["x@example.org"] == SL
        await a.unsuppress("x@example.org", "news.example.org")
        assert (await b.decisions(["x@example.org"], "news.example.org"))["x@example.org"] == G


async def test_recent_history_and_opens_are_newest_first(store: Store) -> None:
    """The console's queries: one address's newest entries, newest first; a reason given to
    set_consent and unsuppress is kept in the trail."""
    await store.set_consent("ann@example.org", "granted", source="console", actor="console:ops",
                            reason="asked by phone")
    await store.suppress("ann@example.org", "news.example.org", reason="complaint")
    await store.unsuppress("ann@example.org", "news.example.org", actor="console:ops",
                           reason="resolved", source="console")
    await store.set_consent("bob@example.org", "refused")
    recent = await store.recent_history("Ann@Example.org", limit=2)
    assert [(e.action, e.reason, e.source) for e in recent] == [
        ("suppression.remove", "resolved", "console"), ("suppression.add", "complaint", None)]
    oldest = (await store.history("ann@example.org")).items[0]
    assert (oldest.action, oldest.reason) == ("consent.set", "asked by phone")
    for mid in ("<1@x>", "<2@x>", "<3@x>"):
        assert await store.record_open("ann@example.org", message_id=mid)
    assert [o.message_id for o in await store.recent_opens("ann@example.org", limit=2)] == [
        "<3@x>", "<2@x>"]
    assert await store.recent_opens("bob@example.org") == []


async def test_hourly_stats_add_up_and_opens_count_by_hour(store: Store) -> None:
    """The console dashboard's queries, alike on both backends."""
    await store.add_stats([("2026-11-28T10", "received", 2), ("2026-11-28T11", "received", 1)])
    await store.add_stats([("2026-11-28T10", "received", 3), ("2026-11-28T10", "held", 1)])
    assert await store.stats_since("2026-11-28T10") == [
        ("2026-11-28T10", "held", 1), ("2026-11-28T10", "received", 5),
        ("2026-11-28T11", "received", 1)]
    assert await store.prune_stats("2026-11-28T11") == 2
    with pytest.raises(InvalidValue):
        await store.add_stats([("2026-11-28 10", "received", 1)])
    at = datetime(2026, 11, 28, 10, 59, 59, tzinfo=UTC)
    await store.set_consent("ann@example.org", "granted")
    await store.record_opens([OpenInput("ann@example.org", at=at),
                              OpenInput("ann@example.org", at=at, machine=True),
                              OpenInput("ann@example.org", at=at + timedelta(seconds=2))])
    assert await store.opens_by_hour(at - timedelta(hours=1)) == [
        ("2026-11-28T10", False, 1), ("2026-11-28T10", True, 1), ("2026-11-28T11", False, 1)]
