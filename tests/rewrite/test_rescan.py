"""Rescanning a campaign's further copies: always the full scan's result, only faster."""

from __future__ import annotations

import quopri
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from beacon_proxy.rewrite.rescan import (
    QpChecks,
    ScanCache,
    ScanTemplate,
    _common_prefix_at,
    _common_suffix,
    checked_regions,
    cut_of,
    rescan,
)
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.transfer import qp_two_readings

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
    b"display:none", b"<title>", b"</title>", b" hidden", b"<div hidden>",
    b'<img src="https://t.test/h.gif" hidden>', b"<style>.a{display:block}</style>",
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


def _full(view: bytes, max_tags: int = 200_000
          ) -> tuple[list[Reference], str | None, str | None]:
    entries, base, truncated = scan_entries(view, max_tags=max_tags)
    return [materialize(e) for e in entries], base, truncated


def _cached(template_of: bytes, view: bytes, max_tags: int = 200_000
            ) -> tuple[list[Reference], str | None, str | None] | None:
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
                                      b"<math>", b'<meta charset="utf-7">', b"<noscript>x"])
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


# -- minified newsletters: cut at ">" (issue 12 item 5) ---------------------------------------

def _minified(doc: bytes) -> bytes:
    """``doc`` as a minifier leaves it: no line feeds, no indentation."""
    return re.sub(rb"[\r\n]+[\t ]*", b"", doc)


def _one_line(doc: bytes) -> bytes:
    """``doc`` with its line breaks as blanks (words stay apart), on one line."""
    return re.sub(rb"\s*[\r\n]\s*", b" ", doc)


MINIFIED = [m(doc) for doc in DOCUMENTS for m in (_minified, _one_line)]


def _template(doc: bytes) -> ScanTemplate | None:
    """The template ``doc`` 's scan leaves (None: none, e.g. amp-analytics, a remote base)."""
    cache = ScanCache()
    scan_entries(doc, learner=cache)
    return next(iter(cache._templates.values()), None)


def _split_regions(template: bytes, cut: bytes, copy: bytes
                   ) -> list[tuple[int, int, int, int]] | None:
    """The changed regions the plain way: both views split at ``cut``, line i against line i,
    each changed line narrowed byte by byte (what ScanTemplate.regions() skips past)."""
    old_lines, new_lines = template.split(cut), copy.split(cut)
    if len(old_lines) != len(new_lines):
        return None
    out = []
    a = b = 0
    for old, new in zip(old_lines, new_lines, strict=True):
        if old != new:
            head = 0
            while head < min(len(old), len(new)) and old[head] == new[head]:
                head += 1
            tail = 0
            while (tail < min(len(old), len(new)) - head
                   and old[len(old) - 1 - tail] == new[len(new) - 1 - tail]):
                tail += 1
            out.append((a + head, a + len(old) - tail, b + head, b + len(new) - tail))
        a, b = a + len(old) + 1, b + len(new) + 1
    return None if len(out) * 4 > len(old_lines) else out


def test_a_minified_view_is_cut_at_each_tag_end() -> None:
    assert cut_of(b"<p>a</p>\n" * 100) == (b"\n", 101)
    long = b"<p>" + b"x" * 300 + b"</p>"
    assert cut_of(long) == (b">", 3)
    assert cut_of(long + b"\n" + long) == (b">", 5)
    assert cut_of(b"x" * 1000) == (b"\n", 1)  # no ">" to cut at: not finer
    assert cut_of(b"x" * 1000 + b">") == (b">", 2)
    for doc in DOCUMENTS:
        if len(doc) > 2000:  # the real templates and fixtures are formatted...
            assert cut_of(doc)[0] == b"\n"
            assert cut_of(_minified(doc))[0] == b">"  # ...and minified, cut at tags
            assert cut_of(_one_line(doc))[0] == b">"


@pytest.mark.parametrize("index", range(len(MINIFIED)))
def test_regions_are_the_line_by_line_diff(index: int) -> None:
    """ScanTemplate.regions() skips the unchanged lines at memcmp speed: the same regions as
    splitting both views and comparing them line by line, for either cut."""
    for doc in (MINIFIED[index], DOCUMENTS[index // 2]):
        template = _template(doc)
        if template is None:
            continue
        rng = random.Random(2000 + index)
        for _ in range(30):
            copy = _edit(doc, rng)
            if rng.random() < 0.3:
                copy = _edit(copy, rng)
            got = template.regions(copy, copy.count(template.cut) + 1)
            assert got == _split_regions(doc, template.cut, copy)


def test_common_prefix_at_is_the_plain_one() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = bytes(rng.choice(b"ab") for _ in range(rng.randrange(0, 3000)))
        i, j = rng.randrange(len(a) + 1), rng.randrange(len(a) + 1)
        b = bytearray(a)
        if b and rng.random() < 0.8:
            k = rng.randrange(len(b))
            b[k] ^= 1
        plain = 0
        while i + plain < len(a) and j + plain < len(b) and a[i + plain] == b[j + plain]:
            plain += 1
        assert _common_prefix_at(a, i, memoryview(bytes(b)), j) == plain


#: What an edit that keeps the number of ">" inserts (a minified copy's lines stay in step):
#: every piece of PIECES without one, and the openings of the others.
OPENINGS = [p for p in PIECES if b">" not in p] + [
    p[: p.index(b">")] for p in PIECES if b">" in p and not p.startswith(b">")]


def _edit_within_lines(doc: bytes, rng: random.Random) -> bytes:
    """Like :func:`_edit`, but no ">" added or removed: a minified copy keeps its lines."""
    out = bytearray(doc)
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        at = rng.randrange(len(out) + 1)
        kind = rng.random()
        if kind < 0.4:
            out[at:at] = rng.choice(OPENINGS)
        elif kind < 0.7:
            end = at + rng.randrange(1, 20)  # deleted, but for its ">"
            out[at:end] = b">" * out.count(b">", at, end)
        else:
            end = min(len(out), at + rng.randrange(1, 10))
            out[at:end] = bytes(b if b == ord(">") else rng.choice(b'abcXYZ019"<=/ -')
                                for b in out[at:end])
    return bytes(out)


@pytest.mark.parametrize("index", range(len(MINIFIED)))
def test_random_edits_of_minified_documents_rescan_to_the_full_scan(index: int) -> None:
    """Random edits, hostile pieces included, of minified real templates: the rescan is the
    full scan, entry for entry; and the edits that keep the number of ">" are rescanned
    (mostly: a quote or unmodelled markup near a region still sends a copy to a full scan)."""
    doc = MINIFIED[index]
    rng = random.Random(3000 + index)
    reused = 0
    for i in range(60):
        copy = (_edit if i % 3 == 0 else _edit_within_lines)(doc, rng)
        got = _cached(doc, copy)
        if got is not None:
            reused += 1
            assert got == _full(copy)
    if cut_of(doc)[0] == b">" and doc.count(b">") >= 40 and not re.search(
            rb"<base|<amp-analytics", doc):
        # (The fixtures are small, ~45 lines of markup that the scanner does not model or
        # quotes near most edits; the templates are the size of real newsletters.)
        assert reused >= (20 if len(doc) > 5000 else 3)


@pytest.mark.parametrize("index", range(len(MINIFIED)))
def test_random_edits_of_a_broken_minified_template_rescan_to_the_full_scan(
        index: int) -> None:
    rng = random.Random(4000 + index)
    for _ in range(25):
        template = _edit(MINIFIED[index], rng)
        copy = _edit(template, rng)
        got = _cached(template, copy)
        if got is not None:
            assert got == _full(copy)


def _personalised(doc: bytes, k: int) -> bytes:
    return (doc.replace(b"OGYzYjIx", f"Q{k:07d}".encode())
            .replace(b"SKU100770", f"SKU{k}x".encode())
            .replace(b"Classic", b"Klassisch" * (k % 3)))


@pytest.mark.parametrize("minify", [_minified, _one_line])
def test_personalised_minified_copies_take_the_fast_path(
        minify: Callable[[bytes], bytes]) -> None:
    """The copies of a minified newsletter differ in a few bytes of its one line: each is
    rescanned (not scanned in full), only around what changed, to the full scan's result."""
    doc = minify(_newsletter_html())
    assert doc.count(b"\n") <= 1
    cache = ScanCache()
    entries, _, _ = scan_entries(doc, learner=cache)
    (template,) = cache._templates.values()
    assert template.cut == b">"
    for k in range(20):
        copy = _personalised(doc, k)
        scan = cache.rescan(copy, "utf-8", 200_000)
        assert scan is not None
        assert sum(n for _, n in scan.fresh) < len(entries) // 10  # most entries copied
        assert [materialize(e) for e in finish_scan(scan)[0]] == _full(copy)[0]


def test_an_engine_rescans_a_minified_campaigns_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    import beacon_proxy.rewrite.rescan as rescan_module

    results: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = rescan(*args, **kwargs)
        results.append(result is not None)
        return result

    monkeypatch.setattr(rescan_module, "rescan", spy)
    doc = _minified(_newsletter_html())
    warm = Engine(load_rules())
    warm.analyse(_message(doc))
    for k in range(4):
        copy = _message(_personalised(doc, k))
        again = warm.analyse(copy)
        cold = Engine(load_rules(), templates=0).analyse(copy)
        assert [p.references for p in again.parts] == [p.references for p in cold.parts]
        assert [p.findings for p in again.parts] == [p.findings for p in cold.parts]
        for policy in Policy:
            assert (warm.render(again, "a@example.net", policy).data
                    == warm.render(cold, "a@example.net", policy).data)
    assert results == [True] * 8  # each copy's view, and its text as webmail washes it


def test_a_minified_copy_with_another_number_of_tags_or_many_changes_scans_in_full() -> None:
    doc = b"".join(b'<p>%d <img src="https://c.test/%d.png"></p>' % (i, i) for i in range(40))
    assert cut_of(doc)[0] == b">"
    assert _cached(doc, doc + b"<br>") is None  # one ">" more: no template of that count
    assert _cached(doc, doc.replace(b"<p>3 ", b"<p>3 <b>")) is None
    changed = doc.replace(b"<p>1", b"<p>X")  # 11 of 121 lines, then more than a quarter:
    assert _cached(doc, changed) == _full(changed)
    changed = doc.replace(b".png", b".jpg")  # 40 of 121 lines
    assert _cached(doc, changed) is None
    template = _template(doc)
    assert template is not None
    assert rescan(template, doc + b"<br>", "utf-8", 200_000) is None  # called directly too
    copy = doc.replace(b"<p>7 ", b"<p>Y ")
    assert _cached(doc, copy) == _full(copy)


def test_formatted_and_minified_copies_keep_their_own_templates() -> None:
    doc = _newsletter_html()
    cache = ScanCache()
    scan_entries(doc, learner=cache)
    scan_entries(_minified(doc), learner=cache)
    assert sorted(t.cut for t in cache._templates.values()) == [b"\n", b">"]
    for view in (_personalised(doc, 3), _personalised(_minified(doc), 3)):
        scan = cache.rescan(view, "utf-8", 200_000)
        assert scan is not None
        assert [materialize(e) for e in finish_scan(scan)[0]] == _full(view)[0]


_TAGS = b"<p>a</p>" * 60 + b"<p>x</p><p>y</p>" + b"<p>b</p>" * 60


@pytest.mark.parametrize(("template", "copy", "rescanned"), [
    # A quote added in a minified line closes a value the template left open.
    (b"<div title='x>" + b"<p>a</p>" * 60 + b"<p>Hi Ann</p>" + b"<p>b</p>" * 60
     + b'<p>z  style="background:url(https://beacon.test/o.gif)">',
     b"<div title='x>" + b"<p>a</p>" * 60 + b"<p>Hi Ann'</p>" + b"<p>b</p>" * 60
     + b'<p>z  style="background:url(https://beacon.test/o.gif)">', False),
    # A comment or a conditional opened in one line and closed in another (as many ">").
    (_TAGS + _BANNER, _TAGS.replace(b"<p>x</p><p>y</p>", b"<!--<p>x</p><p>y-->") + _BANNER,
     True),
    (_TAGS + _BANNER,
     _TAGS.replace(b"<p>x</p><p>y</p>", b"<!--[if mso]><p>x</p><![endif]-->") + _BANNER,
     True),
    (_TAGS + b"<!--[if mso]>" + _BANNER + b"<![endif]-->",
     _TAGS.replace(b"<p>x</p><p>y</p>", b"<p>x</p><![endif]-->y</p>") + b"<!--[if mso]>"
     + _BANNER + b"<![endif]-->", True),
    # Raw text opened in a line: the rest of the view is read as script.
    (_TAGS + _BANNER, _TAGS.replace(b"<p>x</p>", b"<p><script</p>") + _BANNER, True),
    (_TAGS + _BANNER, _TAGS.replace(b"<p>x</p>", b"<p><style</p>") + _BANNER, True),
    # A hiding declaration split over two lines' regions.
    (_TAGS + _BANNER,
     _TAGS.replace(b"<p>x</p><p>y</p>", b'<div style="display</p><p>:none"></p>') + _BANNER,
     True),
])
def test_hostile_edits_of_a_minified_view(template: bytes, copy: bytes,
                                          rescanned: bool) -> None:
    assert cut_of(template)[0] == b">"
    got = _cached(template, copy)
    if rescanned:
        assert got is not None and got == _full(copy)
    else:
        assert got is None
    _assert_engines_agree(template, copy)


def test_a_region_in_a_noscript_is_not_rescanned() -> None:
    """What a <noscript> holds up to its "</noscript" decides whether the part is precise
    (unmodelled.noscript_spans): a copy changed there is scanned in full."""
    doc = (b"<p>Hi\n<noscript><img src='https://t.test/o.gif?u=TOKEN1'></noscript>\n"
           + b"".join(b"<p>line %d</p>\n" % i for i in range(30)) + b"<p>TOKEN2</p>\n")
    assert _cached(doc.replace(b"<noscript>", b"<div>"), doc.replace(b"<noscript>", b"<div>")
                   .replace(b"TOKEN2", b"token9")) is not None
    assert _cached(doc, doc.replace(b"TOKEN2", b"token9")) is not None  # elsewhere: rescanned
    assert _cached(doc, doc.replace(b"TOKEN1", b"'></noscript>")) is None


@pytest.mark.parametrize("touched", [0, 1, 2, 3, None])
def test_a_region_in_any_of_several_noscripts_is_not_rescanned(touched: int | None) -> None:
    """The spans are looked up by bisection: a region in the first, a middle or the last
    <noscript>, or in one with no end, is scanned in full; a region between them is not."""
    lines = b"".join(b"<p>line %d</p>\n" % i for i in range(12))
    doc = b"".join(b"<noscript><img src='https://t.test/o.gif?u=TOKEN%d'></noscript>\n" % n
                   + lines + b"<p>GAP%d</p>\n" % n + lines for n in range(3))
    doc += b"<noscript><p>TOKEN3</p>\n" + lines  # no end: raw text to the end, scripting on
    if touched is None:
        for n in range(3):  # between the spans: rescanned
            assert _cached(doc, doc.replace(b"GAP%d" % n, b"gap")) is not None
    else:
        assert _cached(doc, doc.replace(b"TOKEN%d" % touched, b"token")) is None


def test_an_engine_finds_a_noscript_breakout_in_a_further_copy() -> None:
    doc = (b"<p>Hi</p>\n<noscript><p title='x TOKEN1'></p></noscript>\n<p>Bye</p>\n" * 4)
    warm = Engine(load_rules())
    assert warm.analyse(_message(doc)).complete
    copy = doc.replace(b"TOKEN1", b"</noscript><img src=//t.test/o.gif>", 1)
    again = warm.analyse(_message(copy))
    assert not again.complete and "noscript" in again.unhandled[0]
    assert again.unhandled == Engine(load_rules()).analyse(_message(copy)).unhandled


_FILLER = b"".join(b"<p>line %d</p>\n" % i for i in range(12))
_MSO = (b'<!--[if mso]><v:rect fill="true"><v:fill src="https://t.test/bg.png"/>'
        b'</v:rect><![endif]-->\n')
_IMG = b"<img src=\"https://t.test/p.gif\" alt='x --> y'>\n"


@pytest.mark.parametrize("edit", [
    (b'<v:rect fill="true">', b'<v:rect title="-->" fill="true">'),  # parts the readings
    (b"<![endif]-->", b'<b title="<![endif]-->'),
    (b"<![endif]-->", b"<!--<![endif]>"),
    (b"<!--[if mso]>", b"<!--[if mso]><b title='"),
    (b"line 11", b"line 11 <!--[if mso]><b title='"),
])
def test_a_copy_that_parts_a_conditional_comments_readings_is_not_precise(
        edit: tuple[bytes, bytes]) -> None:
    """A campaign copy whose change makes a browser end a conditional comment inside a
    construct: never the template's verdict (rescan.py scans from the "<!--")."""
    doc = _FILLER + _MSO + _IMG + _FILLER
    copy = doc.replace(*edit, 1)
    assert _full(doc)[2] is None and _full(copy)[2] is not None
    got = _cached(doc, copy)
    assert got is None or got == _full(copy)


@pytest.mark.parametrize("edit", [
    (b"https://t.test/bg.png", b"https://t.test/bg2.png"),  # inside the conditional
    (b"<![endif]-->", b"<!-- note --><![endif]-->"),
    (b"line 11", b"line eleven"),
])
def test_a_copy_changed_in_or_near_a_conditional_comment_is_rescanned(
        edit: tuple[bytes, bytes]) -> None:
    doc = _FILLER + _MSO + _IMG + _FILLER
    copy = doc.replace(*edit, 1)
    got = _cached(doc, copy)
    assert got is not None and got == _full(copy) and got[2] is None


def _prefix(a: bytes, b: bytes) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize("seed", [1, 2])
def test_common_prefix_and_suffix_count_the_bytes_alike(seed: int) -> None:
    """The diff's prefix (galloping, halving, then two stretches read as numbers) and
    suffix (read as numbers) are a byte-by-byte count, at every length around the
    stretches they compare at once, with zero bytes and differences at the ends."""
    rng = random.Random(seed)
    for _ in range(1500):
        n = rng.choice([0, 1, 2, 7, 255, 256, 257, 1023, 1024, 1025, 2049, 5000])
        a = bytes(rng.choice(b"\x00\x01a") for _ in range(n))
        b = bytearray(a)
        for _ in range(rng.randint(0, 2)):
            if n:
                b[rng.choice([0, n - 1, rng.randrange(n)])] = rng.randrange(256)
        b = b[: rng.randint(0, n)] if rng.random() < 0.2 else b
        b += bytes(rng.randrange(3) for _ in range(rng.choice([0, 0, 3])))
        i, j = rng.randint(0, min(3, len(a))), rng.randint(0, min(3, len(b)))
        assert _common_prefix_at(a, i, memoryview(bytes(b)), j) == _prefix(a[i:], bytes(b[j:]))
        limit = rng.randint(0, min(len(a), len(b)))
        assert _common_suffix(a, bytes(b), limit) == min(limit, _prefix(a[::-1], bytes(b[::-1])))


def test_every_hiding_mark_holds_one_of_the_words_the_rescan_looks_for() -> None:
    """The rescan skips the search for hiding marks near a region whose surroundings hold
    none of ``_HIDING_WORDS``: each pattern of the search holds one of them."""
    import re as re_module

    from beacon_proxy.rewrite import hiding
    from beacon_proxy.rewrite import rescan as rescan_module

    words = rescan_module._HIDING_WORDS
    assert hiding._HIDDEN_ATTRIBUTE.pattern.startswith(b"hidden")
    values = re_module.search(rb"\(\?:([a-z|]+)\)", hiding._HIDING_VALUE.pattern)
    assert values is not None and set(values[1].split(b"|")) <= set(words)
    assert all(word in words for word in (b"opacity", b"overflow"))  # _HIDING_NAME's
    assert all(word in words for word in (b"\\", b"/*", b"&#", b"&colon;", b"&tab;",
                                          b"&newline;"))  # _OBSCURED and _REFERENCES
    for text in (b'<p hidden>', b'<p style="display: none">', b"<p style='overflow:hidden'>",
                 b'<td style="visibility:collapse">', b'<p style="opacity :0">',
                 b'<p style="overflow-y:auto">', b'<p style="disp\\lay:none">',
                 b'<p style="display:/**/none">', b'<p style="display&#58;none">',
                 b'<p style="display&Tab;:none">'):
        marks = list(hiding.hiding_marks(text.lower()))
        # (a mark from a ":" holds its value's word, or follows its property's name)
        assert marks and all(any(w in text[max(0, m.start() - 12):m.end() + 1].lower()
                                 for w in words) for m in marks)


@pytest.mark.parametrize("hide", [b' hidden', b' style="display:none"',
                                  b' style="visibility: collapse"', b' style="display :none"',
                                  b' style="opacity:0"', b' style="height:0;overflow:auto"',
                                  b' style="disp\\lay:none"', b' style="display:/**/none"',
                                  b' style="display&#58;none"', b' style="display&Tab;:none"'])
def test_a_region_that_hides_is_rescanned_to_the_full_scan(hide: bytes) -> None:
    """A copy whose change hides an image (a hiding mark put into a tag near a region)
    gets the full scan's hidden elements, whatever the words the rescan looked for."""
    doc = b"".join(b'<p>line %d <a href="https://s.example/p?u=1">x</a></p>\n' % n
                   for n in range(40))
    doc += b'<div><img src="https://t.example/p.gif" width="1" height="1"></div>\n' + doc
    copy = doc.replace(b"<div>", b"<div" + hide + b">", 1).replace(b"?u=1", b"?u=22", 3)
    got = _cached(doc, copy)
    assert got is not None and got == _full(copy)
    assert _cached(copy, doc) == _full(doc)  # and the other way round: no longer hidden


@pytest.mark.parametrize(("before", "after"), [
    (b'style="Xisplay      :none"', b'style="display      :none"'),  # the name, far back
    (b'style="display      :nonX"', b'style="display      :none"'),
    (b'style="opacity:0.5"', b'style="opacity:0.05"'),  # a value the mark does not hold
    (b'style="overflow:auto;height:5px"', b'style="overflow:auto;height:0px"'),
    (b'style="display:\\6f one"', b'style="display:\\6e one"'),
    (b'style="display:/**/nonX"', b'style="display:/**/none"'),
    (b'style="display&#59;none"', b'style="display&#58;none"'),
    (b'style="dis/**/play:none"', b'style="display:none/**/"'),
])
def test_an_edit_inside_a_declaration_rescans_to_the_full_scan(before: bytes,
                                                                after: bytes) -> None:
    """A copy that differs from its template inside a style that may hide (its name
    behind blanks, its value, an escape, a comment, a reference) gets the full scan's
    hidden elements, both ways."""
    doc = b"".join(b'<p>line %d <a href="https://s.example/p?u=1">x</a></p>\n' % n
                   for n in range(40))
    page = doc + b'<div ' + before + b'><img src="https://t.example/p.gif" width="600" ' \
        b'height="300"></div>\n' + doc
    copy = page.replace(before, after).replace(b"?u=1", b"?u=22", 3)
    for one, other in ((page, copy), (copy, page)):
        got = _cached(one, other)
        assert got is None or got == _full(other)
    (ref,) = [r for r in _full(copy)[0] if r.url.startswith("https://t.example")]
    assert ref.box is not None and ref.box.display == "none"


def _said_edits(doc: bytes, rng: random.Random) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """``doc`` with one to six stretches replaced (pieces without a line feed, as a
    washer's copy puts in values and text), and where: regions as a caller knows them,
    not as a diff finds them (several on a line, equal bytes at their edges)."""
    pieces = [p for p in PIECES if b"\n" not in p] + [b"", b"x", b"r0001x9Z"]
    cuts = sorted(rng.sample(range(len(doc) + 1), 2 * rng.randint(1, 6)))
    out, regions, shift, at = bytearray(), [], 0, 0
    for a0, a1 in zip(cuts[::2], cuts[1::2], strict=True):
        a1 = min(a1, a0 + rng.randrange(0, 12))
        if b"\n" in doc[a0:a1]:
            a1 = a0  # (a region holds no cut byte)
        put = rng.choice(pieces)
        out += doc[at:a0]
        regions.append((a0, a1, a0 + shift, a0 + shift + len(put)))
        out += put
        shift += len(put) - (a1 - a0)
        at = a1
    out += doc[at:]
    return bytes(out), regions


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_regions_a_caller_knows_rescan_to_the_full_scan(index: int) -> None:
    """A rescan from the regions the caller knows (the readers' washed text:
    ``webmail.rewash`` says where it put each difference) is the full scan, as one from a
    diff is; regions that are wrong are diffed instead."""
    doc = DOCUMENTS[index]
    rng = random.Random(1000 + index)
    taken = 0  # rescans from the regions said
    for n in range(30):
        copy, regions = _said_edits(doc, rng)
        if n % 5 == 4 and regions:  # wrong: the copy differs elsewhere too
            copy = copy[:-1] + (b"y" if copy.endswith(b"x") else b"x")
        cache = ScanCache()
        scan_entries(doc, max_tags=200_000, learner=cache)
        scan = cache.rescan(copy, "utf-8", 200_000, (doc, regions))
        if scan is None:
            continue
        entries, base, truncated = finish_scan(scan)
        assert ([materialize(e) for e in entries], base, truncated) == _full(copy)
        assert scan.template is not None
        checked = checked_regions(doc, scan.template.cut, copy, regions)
        if n % 5 == 4:
            assert checked is None
        taken += checked is not None
    if doc.count(b"\n") >= 40 and b"<base" not in doc and b"<amp-analytics" not in doc:
        assert taken >= 2


def test_a_copy_changed_every_few_bytes_is_scanned_in_full() -> None:
    """A region costs each reader's check tens of microseconds, a full scan ~0.1 us a
    byte: past 64 regions, a copy with more than one per 256 bytes is scanned in full
    (a text run of 3-byte lines with every 4th changed cost 20 times its full scan: the
    adversarial review of session 24).  Up to 64 regions, any view is rescanned."""
    def doc(lines: int, every: int, changed: bool) -> bytes:
        return b"<p>" + b"\n".join(b"xYz" if changed and i % every == 0 else b"xyz"
                                   for i in range(lines)) + b"\n</p>"

    dense = doc(4096, 4, False), doc(4096, 4, True)  # 1024 regions in 16 KB
    assert _cached(*dense) is None
    few = doc(256, 4, False), doc(256, 4, True)  # 64 regions in 1 KB
    assert _cached(*few) == _full(few[1])
    sparse = doc(4096, 64, False), doc(4096, 64, True)  # 64 regions: one per 256 bytes
    assert _cached(*sparse) == _full(sparse[1])
    more = doc(8192, 64, False), doc(8192, 64, True)  # 128 regions, one per 256 bytes
    assert _cached(*more) == _full(more[1])


# -- QpChecks: a campaign's quoted-printable bodies searched where they differ ------------

_QP_LINE = st.lists(st.sampled_from([b"=3D", b"a", b"=", b"==", b" ", b"\t", b"\r", b"3",
                                     b"C", b"=\r\n", b"<p>", b"\xbc"]), max_size=6).map(b"".join)


@settings(max_examples=1500)
@given(st.lists(_QP_LINE, min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 7), _QP_LINE), min_size=1, max_size=6))
def test_qp_checks_answer_as_the_whole_search(lines: list[bytes],
                                              changes: list[tuple[int, bytes]]) -> None:
    """A body and copies of it with lines replaced (as many lines, or a line feed more or
    less), checked in turn by one QpChecks: each answer that of qp_two_readings."""
    checks = QpChecks()
    body = list(lines)
    for at, new in [(0, body[0]), *changes]:
        body[at % len(body)] = new
        text = b"\n".join(body)
        assert checks.two_readings(text) is qp_two_readings(text), text


def test_qp_checks_keep_what_they_may() -> None:
    """Bodies over the bytes kept are searched whole and not kept; a body read two ways is
    not kept; with nothing to keep every body is searched whole."""
    honest = b"<a href=3D\"x\">=\r\nlink</a>\r\n" * 4
    small = QpChecks(max_bytes=len(honest) - 1)
    assert not small.two_readings(honest) and not small._bodies
    checks = QpChecks()
    assert checks.two_readings(honest.replace(b"=3D", b"==", 1))
    assert not checks._bodies
    assert not checks.two_readings(honest) and list(checks._bodies.values()) == [honest]
    none = QpChecks(keep=0)
    assert not none.two_readings(honest) and not none._bodies
    assert none.two_readings(honest.replace(b"=\r\nlink", b"= \r\nlink"))
