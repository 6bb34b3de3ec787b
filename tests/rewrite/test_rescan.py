"""Rescanning a campaign's further copies: always the full scan's result, only faster."""

from __future__ import annotations

import quopri
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.html import (
    Entry,
    Mark,
    Reference,
    _Scan,
    finish_scan,
    materialize,
    scan_entries,
)
from beacon_proxy.rewrite.rescan import ScanCache, ScanTemplate, rescan
from beacon_proxy.rewrite.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "html"
TEMPLATES = ROOT.parent / "shared" / "data" / "templates"

sys.path.insert(0, str(ROOT / "bench"))
from newsletter import newsletter  # noqa: E402


def _newsletter_html() -> bytes:
    data = newsletter()
    body = data[data.index(b"<!DOCTYPE"):]
    return quopri.decodestring(body).split(b"\n--")[0]


def _documents() -> list[bytes]:
    docs = [_newsletter_html()]
    docs += [p.read_bytes() for p in sorted(FIXTURES.glob("*.html"))]
    docs += [p.read_bytes() for p in sorted(TEMPLATES.rglob("*.htm*"))]
    return docs


DOCUMENTS = _documents()

#: What an edit inserts: text, and every construct whose meaning depends on what is
#: around it (quotes, comments, conditional comments, raw text, hiding, base, AMP).
PIECES = [
    b"<", b">", b'"', b"'", b"=", b" ", b"\n", b"-->", b"<!--", b"<!--[if mso]>",
    b"<![endif]-->", b"<style>", b"</style>", b"url(https://x.test/y)", b"</div>",
    b'<div style="display:none">', b'<img src="https://t.test/p.gif" width=1>', b"abc",
    b"123", b"&amp;", b'<a href="x">', b"<script>", b'<base href="https://b.test/">',
    b"<amp-analytics>", b'<td background="https://q.test/r.png">', b"<svg>",
    b'<picture><source srcset="https://s.test/1.png">', b'<meta charset="utf-7">',
    b"display:none", b"<title>", b"</title>",
]


def _edit(doc: bytes, rng: random.Random) -> bytes:
    out = bytearray(doc)
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        at = rng.randrange(len(out) + 1)
        kind = rng.random()
        if kind < 0.4:
            out[at:at] = rng.choice(PIECES)
        elif kind < 0.7:
            del out[at : at + rng.randrange(1, 20)]
        else:
            end = min(len(out), at + rng.randrange(1, 10))
            out[at:end] = bytes(rng.choice(b'abcXYZ019"<>=/ -') for _ in range(end - at))
    return bytes(out)


def _full(view: bytes, max_tags: int = 200_000) -> tuple[list[Reference], str | None, bool]:
    entries, base, truncated = scan_entries(view, max_tags=max_tags)
    return [materialize(e) for e in entries], base, truncated


def _cached(template_of: bytes, view: bytes, max_tags: int = 200_000
            ) -> tuple[list[Reference], str | None, bool] | None:
    cache = ScanCache()
    scan_entries(template_of, max_tags=max_tags, learner=cache)
    scan = cache.rescan(view, "utf-8", max_tags)
    if scan is None:
        return None
    entries, base, truncated = finish_scan(scan)
    return [materialize(e) for e in entries], base, truncated


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_random_edits_rescan_to_the_full_scan(index: int) -> None:
    doc = DOCUMENTS[index]
    rng = random.Random(index)
    reused = 0
    for _ in range(40):
        copy = _edit(doc, rng)
        got = _cached(doc, copy)
        if got is not None:
            reused += 1
            assert got == _full(copy)
    if doc.count(b"\n") >= 40 and b"<base" not in doc and b"<amp-analytics" not in doc:
        assert reused >= 10  # most edits keep the number of lines


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_random_edits_of_a_broken_template_rescan_to_the_full_scan(index: int) -> None:
    """The template itself hostile too (an unclosed quote, comment or tag left by an edit),
    and the copy an edit of it."""
    rng = random.Random(1000 + index)
    for _ in range(25):
        template = _edit(DOCUMENTS[index], rng)
        copy = _edit(template, rng)
        got = _cached(template, copy)
        if got is not None:
            assert got == _full(copy)


def test_personalised_copies_rescan_to_the_full_scan() -> None:
    doc = _newsletter_html()
    for k in range(20):
        copy = (doc.replace(b"OGYzYjIx", f"Q{k:07d}".encode())
                .replace(b"SKU100770", f"SKU{k}x".encode())
                .replace(b"Classic", b"Klassisch" * (k % 3)))
        got = _cached(doc, copy)
        assert got is not None
        assert got == _full(copy)


def test_a_scan_resumes_from_every_mark() -> None:
    """The invariant rescanning rests on: from any mark, with the state recorded there,
    a scan finds exactly what the full scan found from there (documents whose state reaches
    further - a remote base, amp-analytics - are never templates)."""
    for doc in DOCUMENTS:
        low = doc.lower()
        full = _Scan(doc, "utf-8", 200_000, low=low)
        marks: list[Mark] = []
        full.marks = marks
        full.run()
        if full.base is not None or full.analytics_end >= 0:
            continue
        for pos, refs, budget, (opaque, styles, cond) in marks[:: max(1, len(marks) // 25)]:
            part = _Scan(doc, "utf-8", budget, low=low)
            part.cond = list(cond)
            part.run(pos)
            assert part.refs == full.refs[refs:]
            assert part.opaque == full.opaque[opaque:]
            assert part.styles == full.styles[styles:]
            assert part.budget == full.budget


def test_nothing_changed_gives_the_templates_entries() -> None:
    doc = _newsletter_html()
    assert _cached(doc, doc) == _full(doc)


@pytest.mark.parametrize("addition", [b"<svg><style>x</style></svg>", b"<select>",
                                      b"<math>", b'<meta charset="utf-7">'])
def test_unmodelled_markup_in_a_region_is_not_rescanned(addition: bytes) -> None:
    doc = _newsletter_html()
    at = doc.index(b"<center")
    assert _cached(doc, doc[:at] + addition + doc[at:]) is None


def test_a_region_near_a_meta_charset_is_not_rescanned() -> None:
    doc = b'<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\n<p>Hi\n'
    assert _cached(doc, doc.replace(b"utf-8", b"utf-7")) is None


def test_another_number_of_lines_or_too_many_changes_scan_in_full() -> None:
    doc = b"".join(b'<p>%d <img src="https://c.test/%d.png"></p>\n' % (i, i) for i in range(40))
    assert _cached(doc, doc + b"\n") is None
    changed = doc.replace(b"<p>1", b"<p>X")  # 11 of 41 lines: more than a quarter
    assert _cached(doc, changed) is None
    assert _cached(doc, doc.replace(b"<p>7 ", b"<p>Y ")) == _full(doc.replace(b"<p>7 ", b"<p>Y "))


@pytest.mark.parametrize("copy", [
    b'<base href="https://b.test/">\n<img src="a.png">\n',  # a base in a region
    b"<amp-analytics>\n<img src=\"a.png\">\n",
])
def test_state_that_reaches_far_is_not_rescanned(copy: bytes) -> None:
    doc = b"<p>hello</p>\n<img src=\"a.png\">\n"
    assert _cached(doc, copy) is None


def test_a_template_with_a_remote_base_is_not_kept() -> None:
    cache = ScanCache()
    doc = b'<base href="https://b.test/">\n<img src="a.png">\n'
    scan_entries(doc, learner=cache)
    assert cache.rescan(doc, "utf-8", 200_000) is None


def test_the_budget_is_the_full_scans() -> None:
    doc = b"".join(b'<img src="https://c.test/%d.png">\n' % i for i in range(20))
    copy = doc.replace(b"/3.png", b'/3.png"><img src="https://c.test/x.png')
    # 40 units in the template; the copy needs 2 more: a budget of 41 truncates it.
    assert _cached(doc, copy, max_tags=41) is None
    assert _full(copy, max_tags=41)[2]
    assert _cached(doc, copy, max_tags=100) == _full(copy, max_tags=100)


def test_the_cache_is_bounded() -> None:
    cache = ScanCache(max_templates=2, max_bytes=10_000)
    docs = [b"<p>x</p>\n" * n for n in (1, 2, 3)]
    for doc in docs:
        scan_entries(doc, learner=cache)
    assert cache.rescan(docs[0], "utf-8", 200_000) is None  # the oldest went
    assert cache.rescan(docs[2], "utf-8", 200_000) is not None
    big = b"<p>y</p>\n" * 1000  # 9 000 bytes, counted four times: never kept
    scan_entries(big, learner=cache)
    assert cache.rescan(big, "utf-8", 200_000) is None


def test_another_charset_or_budget_does_not_use_the_template() -> None:
    doc = b"<p>x</p>\n<img src=\"https://c.test/1.png\">\n"
    cache = ScanCache()
    scan_entries(doc, learner=cache)
    (template,) = cache._templates.values()
    assert isinstance(template, ScanTemplate)
    assert rescan(template, doc, "iso-8859-1", 200_000) is None
    assert rescan(template, doc, "utf-8", 1000) is None
    assert rescan(template, doc, "utf-8", 200_000) is not None


def test_hidden_elements_are_reused_only_away_from_changes() -> None:
    doc = _newsletter_html()
    cache = ScanCache()
    scan_entries(doc, learner=cache)
    # The pixel's id changes, far from the hidden preheader: the template's spans, moved.
    copy = doc.replace(b"OGYzYjIx", b"QQ")
    scan = cache.rescan(copy, "utf-8", 200_000)
    assert scan is not None and scan.hidden is not None and len(scan.hidden) == 1
    # A change inside the preheader (what hidden_ranges read): computed again.
    copy = doc.replace(b"Our biggest spring", b"Our big spring")
    scan = cache.rescan(copy, "utf-8", 200_000)
    assert scan is not None and scan.hidden is None
    # A new hiding declaration in a changed line: computed again, and found.
    copy = doc.replace(b'<a href="https://shop.example/p/SKU100770',
                       b'<div style="display:none"><a href="https://shop.example/p/SKU100770')
    scan = cache.rescan(copy, "utf-8", 200_000)
    assert scan is not None and scan.hidden is None
    got = [materialize(e) for e in finish_scan(scan)[0]]
    assert got == _full(copy)[0]
    assert sum(r.box is not None and r.box.display == "none" for r in got) == 1


def _message(html: bytes) -> bytes:
    body = quopri.encodestring(html).replace(b"\n", b"\r\n")
    return (b"From: news@shop.example\r\nTo: a@example.net\r\nSubject: Spring\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)


def test_an_engine_analyses_a_further_copy_as_a_new_engine_does() -> None:
    doc = _newsletter_html()
    warm = Engine(load_rules())
    warm.analyse(_message(doc))
    for k in range(5):
        copy = _message(doc.replace(b"OGYzYjIx", f"Z{k}{k}".encode())
                        .replace(b"Vintage Bike Light", b"Bike" * k))
        cold = Engine(load_rules()).analyse(copy)
        again = warm.analyse(copy)
        assert [p.references for p in again.parts] == [p.references for p in cold.parts]
        assert [p.findings for p in again.parts] == [p.findings for p in cold.parts]
        assert [(p.noted, p.trackers, p.layout) for p in again.parts] == [
            (p.noted, p.trackers, p.layout) for p in cold.parts]
        assert (again.problems, again.unhandled, again.urls) == (
            cold.problems, cold.unhandled, cold.urls)
        for policy in Policy:
            assert (warm.render(again, "a@example.net", policy).data
                    == warm.render(cold, "a@example.net", policy).data)


def test_findings_of_copied_entries_are_the_templates() -> None:
    doc = _newsletter_html()
    cache = ScanCache()
    entries, _, _ = scan_entries(doc, learner=cache)
    calls: list[int] = []

    def classify(some: Sequence[Entry]) -> dict[int, str]:
        calls.append(len(some))
        return {i: e.url for i, e in enumerate(some) if "esp-mailer" in e.url}

    cache.classified(doc, "utf-8", classify(entries))
    copy = doc.replace(b"OGYzYjIx", b"Q1234567").replace(b"SKU100770-240", b"SKU1x")
    scan = cache.rescan(copy, "utf-8", 200_000)
    assert scan is not None
    finished = finish_scan(scan)[0]
    found = scan.findings(finished, classify)
    assert found == classify(finished)
    assert calls[1:-1] and sum(calls[1:-1]) < len(finished) // 4  # only the new entries


def _assert_engines_agree(template: bytes, copy: bytes) -> None:
    """A warm engine (``template`` seen first) analyses and renders ``copy`` as a new one."""
    warm = Engine(load_rules())
    warm.analyse(_message(template))
    cold = Engine(load_rules()).analyse(_message(copy))
    again = warm.analyse(_message(copy))
    assert [p.references for p in again.parts] == [p.references for p in cold.parts]
    assert [p.findings for p in again.parts] == [p.findings for p in cold.parts]
    for policy in Policy:
        assert (warm.render(again, "a@example.net", policy).data
                == warm.render(cold, "a@example.net", policy).data)


_BANNER = b'<img src="https://beacon.test/banner.png?u=1" width="600" height="300">'


def test_an_element_hidden_in_the_copy_takes_fresh_findings() -> None:
    """The template's findings are for its boxes: when a change hides an element (and
    hidden_ranges() runs again), the copied entries are classified again."""
    head = b"".join(b"<p>line %d</p>\n" % i for i in range(12))
    doc = (head + b'<div style="display:block">\n' + b"<p>x</p>\n" * 4 + _BANNER + b"\n"
           + b"<p>y</p>\n" * 4 + b"</div>\n" + head)
    copy = doc.replace(b"display:block", b"display:none")
    scan = ScanCache()
    scan_entries(doc, learner=scan)
    again = scan.rescan(copy, "utf-8", 200_000)
    assert again is not None and again.hidden is None and not again.hidden_reused
    _assert_engines_agree(doc, copy)


@pytest.mark.parametrize(("template", "copy", "rescanned"), [
    # A quote a region adds closes a value the template never closed: the tag now runs
    # past the region, and its style loads a beacon.
    (b"<div title='x>\n" + b"<p>a</p>\n" * 8 + b"<p>Hi Ann</p>\n"
     + b"<p>b</p>\n" * 8 + b'<p>z  style="background:url(https://beacon.test/o.gif)">\n',
     b"<div title='x>\n" + b"<p>a</p>\n" * 8 + b"<p>Hi Ann'</p>\n"
     + b"<p>b</p>\n" * 8 + b'<p>z  style="background:url(https://beacon.test/o.gif)">\n',
     False),
    # The other way round: a quote a region removes leaves a value unclosed (that value
    # reached into the region in the template, so its tag is scanned again).
    (b"<div title=\"x>\n" + b"<p>a</p>\n" * 8 + b'<p>Hi "Ann</p>\n'
     + b"<p>b</p>\n" * 8 + b'<img src="https://beacon.test/o.gif" width=1 height=1>\n',
     b"<div title=\"x>\n" + b"<p>a</p>\n" * 8 + b"<p>Hi Ann</p>\n"
     + b"<p>b</p>\n" * 8 + b'<img src="https://beacon.test/o.gif" width=1 height=1>\n',
     True),
    # A quote in an attribute name (names may start with one) in an <img>.
    (b"<img x='1\" src=\"https://c.test/a.png\">\n" + b"<p>a</p>\n" * 8 + b"<p>Ann</p>\n"
     + b"<p>b</p>\n" * 8,
     b"<img x='1\" src=\"https://c.test/a.png\">\n" + b"<p>a</p>\n" * 8 + b"<p>Ann'</p>\n"
     + b'<p>b</p>\n' * 7 + b'<p src="https://beacon.test/o.gif">\n', False),
])
def test_a_quote_that_may_close_an_unclosed_value_is_scanned_in_full(
        template: bytes, copy: bytes, rescanned: bool) -> None:
    got = _cached(template, copy)
    if rescanned:
        assert got == _full(copy)
    else:
        assert got is None
    _assert_engines_agree(template, copy)


def test_a_region_next_to_a_quote_is_still_rescanned() -> None:
    doc = _newsletter_html()
    copy = doc.replace(b"OGYzYjIx", b"Q9")  # inside a quoted URL: no quote changes
    assert _cached(doc, copy) == _full(copy)


def test_a_meta_declaration_with_long_blanks_is_in_reach() -> None:
    """A charset declaration's blanks have no length limit: a region that far after a
    ``<meta`` still changes what unmodelled_markup() reads."""
    doc = (b'<meta name="x" charset' + (b" " * 300 + b"\n") * 10 + b"=utf-8>\n"
           + b"<p>b</p>\n" * 8 + b"<p>c</p>\n")
    copy = doc.replace(b"=utf-8>", b"=utf-7>")
    assert _cached(doc, copy) is None
    far = doc.replace(b"<p>c</p>", b"<p>d</p>")
    assert _cached(doc, far) == _full(far)  # past the declaration: rescanned
    _assert_engines_agree(doc, copy)


def test_a_conditional_comment_does_not_read_into_the_next_construct() -> None:
    """``<!--[if !mso]><!-- x-->``: the empty comment after a conditional is a construct of
    its own, so a copy that changes it is scanned from there as the full scan reads it
    (a pattern with an optional tail read past the conditional's end)."""
    filler = b"".join(b"<p>line %d</p>\n" % i for i in range(12))
    doc = (filler + b"<!--[if !mso]><!-- x-->;display:none\n"
           + b'<div style="display:none">' + _BANNER + b"</div>\n" + filler)
    copy = doc.replace(b"<!-- x-->", b"<!-- -->")
    got = _cached(doc, copy)
    assert got is not None and got == _full(copy)
    _assert_engines_agree(doc, copy)
