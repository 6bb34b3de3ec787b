from __future__ import annotations

import json
import pickle
import random
import string

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.campaign import (
    REASON,
    CampaignMemory,
    _skeleton,
    campaign_key,
    identifier_like,
    loaded,
    loads,
    normalise_subject,
    personal_urls,
    references_at,
    split_url,
)
from beacon_proxy.rewrite.engine import Action, Analysis, Engine
from beacon_proxy.rewrite.rules import load_rules

ENGINE = Engine(load_rules())
LINK = "https://prefs.example.com/o/TOKEN"
NAMES = ["Ann", "Bob", "Cleo", "Dara", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea"]
BANNER = "https://cdn.shop.example/campaign/december-banner.png"
ARTICLES = [f"https://cdn.shop.example/articles/{name}.jpg"
            for name in ("winter-coat", "wool-scarf", "a7Kd93xQ2m")]


def _ids(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    out: list[str] = []
    while len(out) < n:
        value = "".join(rnd.choice(alphabet) for _ in range(12))
        if identifier_like(value):
            out.append(value)
    return out


def _newsletter(name: str, hero: str, *, sender: str = "news@shop.example",
                subject: str = "{name}, your December deals", extra: str = "") -> bytes:
    html = (
        f'<p>Hello {name}, welcome back!</p>'
        f'<img src="{BANNER}" width="600" height="200" alt="December">'
        f'<img src="{hero}" width="600" height="400" alt="Our hero">'
        + "".join(f'<p>Article</p><img src="{url}" width="280" alt="">' for url in ARTICLES)
        + f'<div style="background:url(https://cdn.shop.example/bg.png)">{extra}</div>'
        f'<p>Regards, the shop team, for {name.lower()}@example.org</p>'
    )
    return (
        f"From: Shop <{sender}>\r\nTo: {name} <{name.lower()}@example.org>\r\n"
        f"Subject: {subject.format(name=name)}\r\nList-Id: <news.shop.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()


def _copies(hero: str = "https://img.shop.example/hero/{id}.jpg") -> list[Analysis]:
    return [ENGINE.analyse(_newsletter(name, hero.format(id=pid)))
            for name, pid in zip(NAMES, _ids(len(NAMES)), strict=True)]


def _pairs(analysis: Analysis) -> list[tuple[str, str]]:
    return [(r.element, r.url) for r in loaded(analysis)]


@pytest.mark.parametrize("hero", ["https://img.shop.example/hero/{id}.jpg",
                                  "https://img.shop.example/hero.jpg?sid={id}&v=2"])
def test_twelve_copies_the_hero_id_is_found_and_nothing_else(hero: str) -> None:
    copies = _copies(hero)
    assert len({campaign_key(a).digest for a in copies}) == 1  # names differ, key does not
    found = personal_urls([_pairs(a) for a in copies])
    assert list(found) == [1]  # the hero, not the banner, the articles or the background
    assert found[1] == ("path[1]" if "{id}.jpg" in hero else "query sid")
    for analysis in copies:
        refs = loaded(analysis)
        refused = ENGINE.render(analysis, None, Policy.REFUSED,
                                diffed=references_at(refs, found))
        (tracker,) = refused.trackers
        assert tracker.finding.url == refs[1].url and REASON in tracker.finding.reasons
        assert tracker.action is Action.STRIP
        assert refs[1].url.encode() not in refused.data and b"Our hero" in refused.data
        assert BANNER.encode() in refused.data
        assert all(url.encode() in refused.data for url in ARTICLES)


def test_the_relay_way_learn_then_judge_catches_all_but_the_first_copy() -> None:
    memory = CampaignMemory()
    caught = 0
    for analysis in _copies():
        pairs = _pairs(analysis)
        memory.learn(pairs)
        judged = memory.judge(pairs)
        assert set(judged) <= {1}
        caught += bool(judged)
    assert caught == 11 and memory.copies == 12
    restored = CampaignMemory.from_json(json.loads(json.dumps(memory.to_json())))
    assert restored.judge(_pairs(_copies()[0])) == {1: "path[1]"}


def test_granted_copies_rewrite_a_diffed_background_and_keep_a_visible_image() -> None:
    copies = [ENGINE.analyse(_newsletter(n, f"https://img.shop.example/hero/{i}.jpg",
                                         extra=f'<td background="https://t.shop.example/o/{i}">'))
              for n, i in zip(NAMES[:3], _ids(3), strict=True)]
    found = personal_urls([_pairs(a) for a in copies])
    refs = loaded(copies[0])
    assert {refs[p].element for p in found} == {"img", "background"}
    granted = ENGINE.render(copies[0], None, Policy.GRANTED, lambda url: LINK,
                            diffed=references_at(refs, found))
    actions = {i.reference.element: i.action for i in granted.trackers}
    assert actions == {"img": Action.KEEP, "background": Action.REWRITE}
    assert LINK.encode() in granted.data and refs[1].url.encode() in granted.data


def test_a_strut_found_personal_keeps_its_size_and_goes_to_the_open_endpoint() -> None:
    """A 600x1 strut in a content-id folder (a layout image for one message) whose id
    differs per recipient."""
    ids = ["4922d873-8315-4f8e-8587-169eebb74dd0", "0c1f5e2a-77b3-4d2e-9a41-5e6f7a8b9c0d",
           "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"]
    copies = [ENGINE.analyse(_newsletter(
        n, "https://img.shop.example/hero.jpg",
        extra=f'<img src="https://cdn.shop.example/s/{i}/strut.gif" width="600" height="1">'))
        for n, i in zip(NAMES[:3], ids, strict=True)]
    plain = ENGINE.render(copies[0], None, Policy.REFUSED)
    assert {i.action for i in plain.items if i.reference.box is not None
            and i.reference.url.endswith("strut.gif")} == {Action.INLINE}  # layout, alone
    found = personal_urls([_pairs(a) for a in copies])
    refs = loaded(copies[0])
    assert [refs[p].url.endswith("strut.gif") for p in found] == [True]
    diffed = references_at(refs, found)
    refused = ENGINE.render(copies[0], None, Policy.REFUSED, diffed=diffed)
    (strut,) = [i for i in refused.trackers if REASON in i.finding.reasons]
    assert strut.action is Action.INLINE and b'width="600" height="1"' in refused.data
    assert refs[found.popitem()[0]].url.encode() not in refused.data
    granted = ENGINE.render(copies[0], None, Policy.GRANTED, lambda url: LINK, diffed=diffed)
    (strut,) = [i for i in granted.trackers if REASON in i.finding.reasons]
    assert strut.action is Action.REWRITE and LINK.encode() in granted.data


def test_no_campaign_info_renders_as_before() -> None:
    analysis = _copies()[0]
    plain = ENGINE.render(analysis, None, Policy.REFUSED)
    assert plain.trackers == () and not plain.changed
    items = ENGINE.items(analysis, None, Policy.REFUSED)
    assert all(item.action is Action.KEEP for item in items)


def test_content_choices_and_segments_repeat_so_they_are_not_personal() -> None:
    products = ["sku48213a", "sku77120b", "sku90311c"]  # identifier-like, three variants
    copies = [[("img", BANNER), ("img", f"https://img.shop.example/p/{products[n % 3]}.jpg")]
              for n in range(12)]
    assert personal_urls(copies) == {}
    # Two copies share the first value before a third differs: a repeat too.
    shared = [[("img", "https://t.example/o?seg=gold123")]] * 2 + [
        [("img", "https://t.example/o?seg=silver45")]]
    assert personal_urls(shared) == {}


def test_different_article_images_are_not_personal() -> None:
    a = [("img", "https://cdn.shop.example/2026/12/a7Kd93xQ2m.jpg")]
    b = [("img", "https://cdn.shop.example/2025/11/Zt81nq3Lpw.jpg")]  # folders differ too
    c = [("img", "https://cdn.shop.example/2026/12/summer-dress.jpg")]  # not an identifier
    assert personal_urls([a, b]) == {} and personal_urls([a, c]) == {}
    other = [("img", "https://img.shop.example/2026/12/a7Kd93xQ2m.jpg")]  # host differs
    assert personal_urls([a, other]) == {}
    longer = [("img", "https://cdn.shop.example/2026/12/x/Zt81nq3Lpw.jpg")]  # pattern differs
    assert personal_urls([a, longer]) == {}
    assert personal_urls([a]) == {}


def test_a_per_recipient_host_label_is_personal() -> None:
    copies = [[("img", f"https://{pid.lower()}.ct.mailer.example/o.gif")] for pid in _ids(3)]
    assert personal_urls(copies) == {0: "host[0]"}


def test_two_newsletters_do_not_group_and_merge_fields_do() -> None:
    hero = "https://img.shop.example/hero/x.jpg"
    ann = campaign_key(ENGINE.analyse(_newsletter("Ann", hero)))
    bob = campaign_key(ENGINE.analyse(_newsletter("Bob", hero, subject="Your 12 deals, {name}")))
    bob2 = campaign_key(ENGINE.analyse(_newsletter("Bob", hero, subject="Your 3 deals, {name}")))
    assert bob == bob2 and ann != bob  # numbers and names are dropped, words are not
    other_sender = campaign_key(ENGINE.analyse(_newsletter("Ann", hero,
                                                           sender="news@books.example")))
    assert other_sender.sender == "books.example" and other_sender != ann
    other_layout = campaign_key(ENGINE.analyse(_newsletter(
        "Ann", hero, extra='<img src="https://cdn.shop.example/extra.png" width="100">')))
    assert other_layout.skeleton != ann.skeleton
    assert normalise_subject("Ann, your deals", ["Ann"]) == "your deals"


def test_split_url_and_its_bound() -> None:
    _pattern, parts = split_url("//Host.example/a?k=v") or ("", [])
    assert parts == [("scheme", ""), ("host[0]", "host"), ("host[1]", "example"),
                     ("path[0]", "a"), ("query k", "v")]
    assert split_url("https://h.example/" + "a/" * 40) is None


def test_hostile_input_stays_bounded() -> None:
    memory = CampaignMemory()
    huge = "https://t.example/" + "x" * 1_000_000
    many = [("img", f"https://t.example/{n}/{'a' * 50}?{'&'.join(['k=v'] * 40)}")
            for n in range(5000)]
    for seed in range(20):
        ids = _ids(1200, seed)
        copy = [("img", huge), *many[:1200],
                *[("img", f"https://t.example/{a}/{b}/{c}/{d}/{e}?u={f}")
                  for a, b, c, d, e, f in zip(*[iter(ids)] * 6, strict=True)]]
        memory.learn(copy)
        assert len(memory.judge(copy)) <= memory.max_positions
    assert memory.judge([("img", huge)]) == {}
    stored = memory.to_json()
    assert len(stored["positions"]) == memory.max_positions == 1024
    size = len(json.dumps(stored))
    assert size < 1_300_000  # the documented bound: about 1.2 MB serialised


def test_the_worst_memory_stays_within_its_documented_size() -> None:
    memory = CampaignMemory()
    fixed = "/".join(["s"] * 24)  # scheme + 3 host labels + 28 path segments = 32 components
    for copy_number in range(18):  # past max_values distinct values everywhere
        ids = _ids(4, seed=copy_number)
        memory.learn([("img", f"https://a.b.example/{fixed}/{p}{ids[0]}/{ids[1]}/{ids[2]}/{ids[3]}")
                      for p in range(1100)])
    stored = memory.to_json()
    assert len(stored["positions"]) == 1024
    assert all(len(p[5]) == 4 for p in stored["positions"])  # four differing components
    assert len(json.dumps(stored)) < 1_300_000  # the documented bound: about 1.2 MB
    assert CampaignMemory.from_json(stored).to_json() == stored


def test_bad_memory_and_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="not a campaign memory"):
        CampaignMemory.from_json({"bounds": [1, 2], "copies": 0, "positions": []})
    with pytest.raises(ValueError, match="not a campaign memory"):
        CampaignMemory.from_json({"bounds": [1, 32, 4, 16, 100], "copies": 1,
                                  "positions": [None, None]})
    stored = CampaignMemory().to_json()
    stored["positions"] = [[1, 2, "AAAAAAAAAAA=", 0, False, []]]  # 8 bytes, padded: fine
    assert CampaignMemory.from_json(stored).judge([("img", "https://x.example/")]) == {}
    stored["positions"] = [[1, 2, "AAAA", 0, False, []]]  # 3 bytes: not a hash
    with pytest.raises(ValueError, match="8 bytes"):
        CampaignMemory.from_json(stored)
    stored["positions"] = [[1, 2, "AAAAAAAAAAA=", 0, False, [[5, "", True, False]]]]
    with pytest.raises(ValueError, match="past the bounds"):
        CampaignMemory.from_json(stored)
    with pytest.raises(ValueError, match="positive"):
        CampaignMemory(max_values=0)


def test_work_is_one_split_per_reference_and_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import beacon_proxy.rewrite.campaign as campaign

    calls: list[int] = []
    real = campaign.split_url

    def counted(url: str, max_components: int = 32) -> tuple[str, list[tuple[str, str]]] | None:
        calls.append(len(url))
        return real(url, max_components)

    monkeypatch.setattr(campaign, "split_url", counted)
    long_tail = "/".join(["seg"] * 25)  # 4000-character URLs within the bound
    copies = [[("img", f"https://t.example/{long_tail}/{pid}?{'x' * 3800}")] * 3000
              for pid in _ids(12)]
    found = personal_urls(copies)
    assert len(found) == 1024  # every remembered position, none past the bound
    assert len(calls) == 2 * 12 * 1024  # learn and judge: once per remembered reference


def test_diffed_indexes_that_are_not_loaded_references_are_ignored() -> None:
    analysis = _copies()[0]
    rendered = ENGINE.render(analysis, None, Policy.REFUSED,
                             diffed={(0, 10_000), (5, 0), (0, -1)})
    assert rendered.trackers == () and not rendered.changed


def test_loads_are_made_once_per_analysis_and_equal_a_fresh_reading() -> None:
    for analysis in _copies():
        found = loads(analysis)
        assert loads(analysis) is found
        assert found.refs == tuple(loaded(analysis))
        assert list(found.copy) == _pairs(analysis)
        for rcpt in (None, "ann@example.org"):
            assert (campaign_key(analysis, rcpt).skeleton == found.skeleton
                    == _skeleton(len(analysis.parts), loaded(analysis)))


def test_a_rebased_analysis_shares_the_loads_and_reads_its_own_header() -> None:
    data = _newsletter("Ann", ARTICLES[2])
    analysis = ENGINE.analyse(data)
    other = data.replace(b"Subject: Ann, your", b"Subject: Ann, all your")
    derived = ENGINE.rebase(analysis, other, other.index(b"\r\n\r\n") + 4)
    assert derived is not None
    assert loads(derived) is loads(analysis)
    fresh = ENGINE.analyse(other)
    assert loads(derived) == loads(fresh)
    key = campaign_key(derived, "ann@example.org")
    assert key == campaign_key(fresh, "ann@example.org") != campaign_key(analysis,
                                                                          "ann@example.org")


def test_the_loads_are_not_pickled_and_the_names_kept_are_bounded() -> None:
    analysis = ENGINE.analyse(_newsletter("Ann", ARTICLES[2]))
    found = loads(analysis)
    copy = pickle.loads(pickle.dumps(analysis))
    assert copy == analysis and loads(copy) == found and loads(copy) is not found
    for n in range(20):  # names past the bound are made on every call, never kept
        assert analysis.shared(f"test{n}", lambda a: len(a.parts)) == len(analysis.parts)
    calls: list[Analysis] = []
    analysis.shared("test-last", calls.append)
    analysis.shared("test-last", calls.append)
    assert len(calls) == 2
