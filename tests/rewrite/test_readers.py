"""Other readers' checks, and a campaign's copies checked from the last (rewrite/readers.py)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite.test_webmail import U, _message

TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                   .glob("*.html"))
RULES = load_rules()


def _edited(doc: bytes, rng: random.Random, alphabet: bytes) -> bytes:
    copy = bytearray(doc)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(copy))
        copy[at : at + rng.randint(0, 4)] = bytes(
            rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    return bytes(copy)


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_campaigns_copies_are_checked_as_in_full(seed: int) -> None:
    """An engine that keeps the last part that passed answers every copy as one that
    keeps nothing: the same problems, the same stray URLs."""
    rng = random.Random(seed)
    alphabet = b"abcXYZ019 .@%-" * 4 + b"<>\"'=&/\\:\n!?[]()*" + U.encode()
    docs = [path.read_bytes() for path in TEMPLATES[:6]]
    _assert_as_in_full(docs, lambda doc: _edited(doc, rng, alphabet), 25)


def _assert_as_in_full(docs: list[bytes], edit: Callable[[bytes], bytes], copies: int
                       ) -> None:
    """An engine that keeps the last part that passed answers ``copies`` edits of each
    of ``docs`` as one that keeps nothing."""
    warm = Engine(RULES)
    for doc in docs:
        warm.analyse(_message(doc))
        for _ in range(copies):
            copy = _message(edit(doc))
            cold = Engine(RULES, templates=0).analyse(copy)
            again = warm.analyse(copy)
            assert again.problems == cold.problems
            assert again.strays == cold.strays
            assert [p.references for p in again.parts] == [p.references for p in cold.parts]


def test_plain_text_that_finishes_a_base_on_its_line_is_checked_in_full() -> None:
    """Session 18's third attack: the base replacer reads "href=http..." anywhere on the
    line of a <base>, plain text too; a copy whose inert difference finishes one is not
    washed from the copy before (which had none)."""
    first = (b'<base target="_blank"><p>Our site: hreX=https://ct.sendgrid.net/wf/ </p>\n'
             b'<p>a</p>\n<p>b</p>\n<p>c</p>\n<img src="open?upn=r1" width="1" height="1">\n')
    second = first.replace(b"hreX", b"href")
    warm = Engine(RULES)
    warm.analyse(_message(first))
    cold = Engine(RULES, templates=0).analyse(_message(second))
    again = warm.analyse(_message(second))
    assert again.problems == cold.problems and again.problems


#: Session 18's fourth attack: the washer's straightened curly quotes and the base
#: replacer's quotes open a value that swallows text or a comment; Masterminds' parser
#: then opens a tag at the "<" where an attribute should start, libxml2 skips a name with
#: "@" to the next blank.  Each loaded the tracker once washed from a "stripped" copy.
REQUOTED = {
    "curly_then_comment": '<p title=\u201ca><!-- " <img alt=">" src={U}> -->x</p>',
    "curly_inside_quotes": '<p title="a \u201c c=">x <!-- <img alt=">" src={U}> --></p>',
    "base_requoting": '<base href="https://shop.example/"><p title="a src=\'b\' c=">x '
                      '<!-- <img alt=">" src={U}> --></p>',
    "curly_then_text": "<p>Hi</p><img title=\u201ca>Quote: \" a@b='x src={U} '.</p>",
    "curly_then_lt": '<img title=\u201ca><!-- " x< ="z a=">" src={U} -->',
}


@pytest.mark.parametrize("case", list(REQUOTED))
def test_markup_the_washer_requotes_into_what_its_parsers_cut_otherwise(case: str) -> None:
    html = REQUOTED[case].replace("{U}", U).encode()
    analysis = Engine(RULES).analyse(_message(html))
    assert analysis.problems and "rewrites into markup its parsers cut otherwise" in (
        analysis.problems[0])


def test_a_campaign_copy_whose_washed_text_is_requoted_is_checked_again() -> None:
    first = ("<p>\u201cHello\u201d, X</p>\n<p>a</p>\n<p>b</p>\n<p>c</p>\n"
             "<p>d</p>\n").encode()
    warm = Engine(RULES)
    warm.analyse(_message(first))
    assert not warm.analyse(_message(first.replace(b"X", b"Y"))).problems  # honest: kept


#: Markup whose over-reads the washer model makes (``style=`` read wherever it stands, a
#: ``<body`` in a comment reading on past its ">", ``<style`` anywhere) reach a value or
#: text a campaign's copies differ in.
_OVER_READ = (
    b'<!-- <body x="--> <a title=" backgrounX=https://t.example/b x">y</a>\n'
    b'<p>Xstyle=url(https://t.example/s)</p>\n<a title="/xtyle=url(https://t.example/v)" '
    b'href="https://shop.example/q?u=1">z</a>\n'
    b'<p title="x]]>y">a</p>\n<!-- <style> --><a href="https://shop.example/?c=1">w</a>\n'
    b'<a href="/x" title="a<3 b" data-x="x]]3>y" alt="<= 5 <-1 <%x%>">v</a>\n')


def _in_values(doc: bytes, rng: random.Random, alphabet: bytes) -> bytes:
    """``doc`` with a stretch inside one to three quoted values replaced."""
    values = [m.span(1) for m in re.finditer(rb'=[ \t\r\n]*"([^"]{2,})"', doc)]
    copy = bytearray(doc)
    for start, end in sorted(rng.sample(values, min(3, len(values))), reverse=True):
        at = rng.randrange(start, end)
        copy[at : min(end, at + rng.randint(0, 6))] = bytes(
            rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    return bytes(copy)


#: A newsletter's shapes, for where the shared templates are not at hand: links, images,
#: cells and boxes with values, a <style>, a conditional comment.
_NEWSLETTER = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>News</title>\n'
    b'<style>.b{color:#123} a[href^="https"]{x:y}</style></head>\n<body class="body">\n'
    b'<!--[if mso]><v:rect fill="true"><v:fill src="https://shop.example/bg.png"/>'
    b"</v:rect><![endif]-->\n"
    + b"".join(b'<table role="presentation"><tr><td class="c%d" align="left">'
               b'<a href="https://shop.example/p/%d?utm=news&amp;u=r1" title="Item %d">'
               b'<img src="https://shop.example/i/%d.png" alt="Item %d" width="90"></a>'
               b'</td></tr></table>\n' % (n, n, n, n, n) for n in range(12))
    + b'<div style="font-size:12px" data-id="r1"><p>Hello r1, <span title="x">y</span></p>'
    b'</div>\n<img src="https://shop.example/o.gif?u=r1" width="1" height="1" alt="">\n'
    b"</body></html>\n")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_copies_that_differ_inside_values_are_checked_as_in_full(seed: int) -> None:
    """A campaign's copies that differ inside attribute values (a recipient's token in
    every link, a name in an ``alt``) are checked from the last that passed: the same
    problems and stray URLs as a check from nothing, hostile values and the model's
    over-reads included."""
    rng = random.Random(seed)
    alphabet = (b"abcXYZ0189.%-_=&;/:?+" * 6 + b"style url( ) ]] > < \" ' \n\\`"
                + "\u201c".encode())
    docs = [path.read_bytes() + _OVER_READ for path in TEMPLATES[:6]] + [
        _NEWSLETTER + _OVER_READ, _OVER_READ * 3]
    _assert_as_in_full(docs, lambda doc: _in_values(doc, rng, alphabet), 30)


@pytest.mark.parametrize(("value", "copy"), [("a<3", "a<img"), ("a<3", "a<!x"),
                                            ("<-1", "</p"), ("x]]3>y", "x]]>y")])
def test_a_difference_next_to_a_lt_or_a_cdata_end_in_a_value_is_checked_in_full(
        value: str, copy: str) -> None:
    """A value's difference right after a "<" (which then opens a tag to other readers)
    or between "]]" and ">" (a CDATA section's end once it is gone) is not taken from the
    copy before: the copy is checked as from nothing."""
    rows = "".join(f"<p>row {n}</p>\n" for n in range(12))
    doc = f'<p><a href="https://shop.example/a" title="VAL">a</a></p>\n{rows}'
    warm = Engine(RULES)
    assert warm.analyse(_message(doc.replace("VAL", value).encode())).problems == ()
    data = _message(doc.replace("VAL", copy).encode())
    assert warm.analyse(data).problems == Engine(RULES, templates=0).analyse(data).problems


@pytest.mark.parametrize(("before", "after"), [
    (b"<p>Xstyle=url(https://t.example/s)</p>", b"<p> style=url(https://t.example/s)</p>"),
    (b'<p title="/xtyle=url(https://t.example/s)">a</p>',
     b'<p title="/style=url(https://t.example/s)">a</p>'),
    (b'<!-- <body x="--> <a title=" backgrounX=https://t.example/b x">y</a>',
     b'<!-- <body x="--> <a title=" background=https://t.example/b x">y</a>'),
])
def test_a_difference_that_makes_the_washer_model_read_more_is_read_again(
        before: bytes, after: bytes) -> None:
    """What a campaign's copy changes where the washer model reads CSS or a
    ``<body>`` 's attributes (or may start to) is read again, not taken from the copy
    before: the text that passed first and its copy that loads more once washed."""
    tail = b"\n<p>a</p>\n<p>b</p>\n<p>c</p>\n<p>d</p>\n"
    warm = Engine(RULES)
    assert not warm.analyse(_message(before + tail)).problems
    cold = Engine(RULES, templates=0).analyse(_message(after + tail))
    assert cold.problems
    assert warm.analyse(_message(after + tail)).problems == cold.problems


def test_a_token_in_every_link_is_checked_from_the_copy_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A newsletter whose copies carry the recipient's token in every link is washed
    once: each further copy is washed from the last that passed."""
    from beacon_proxy.rewrite import webmail

    links = "".join(f'<p><a href="https://shop.example/p/{n}?u=TOKEN">{n}</a></p>\n'
                    for n in range(8))
    rows = "".join(f'<tr><td class="c{n}">Item {n}</td></tr>\n' for n in range(40))
    doc = ('<html><body><table><tr><td class="x">Hi</td></tr>\n' + rows + "</table>\n" + links
           + '<img src="https://shop.example/logo.png" alt="TOKEN" width="90">\n'
           "</body></html>\n")
    washed: list[bytes] = []
    real = webmail.wash

    def counted(data: bytes) -> webmail.Washing | None:
        washed.append(data)
        return real(data)

    monkeypatch.setattr(webmail, "wash", counted)
    warm = Engine(RULES)
    for n in range(5):
        copy = _message(doc.replace("TOKEN", f"r{n:04d}x9Z").encode())
        assert warm.analyse(copy).problems == ()
    assert len(washed) == 1


@pytest.mark.parametrize("value", [
    U,  # a tracker's URL: every refused copy to the fallback
    "https://shop.example/u?e=reader%40example.org",  # names a recipient: kept as stray
    "//shop.example/plain",
])
def test_a_value_that_becomes_a_stray_url_is_found_in_the_copy(value: str) -> None:
    """A copy whose changed value now holds a URL no browser loads there (a ``title``, a
    ``data-`` attribute) has it among its stray URLs, as a check from nothing finds;
    the tag searched apart (:meth:`~beacon_proxy.rewrite.readers._Passed.strays_kept`)."""
    rows = "".join(f"<p>row {n}</p>\n" for n in range(12))
    doc = (f'<p><a href="https://shop.example/a" title="x TOKEN" data-u="TOKEN">a</a></p>\n'
           f'{rows}<img src="https://shop.example/i.png?u=TOKEN" alt="i">\n')
    warm = Engine(RULES)
    assert warm.analyse(_message(doc.replace("TOKEN", "r0001").encode())).problems == ()
    copy = _message(doc.replace("TOKEN", value).encode())
    cold = Engine(RULES, templates=0).analyse(copy)
    again = warm.analyse(copy)
    assert (again.problems, again.strays) == (cold.problems, cold.strays)
    assert cold.problems or cold.strays


def _links_doc(n: int, rows: int = 40) -> str:
    """A newsletter of ``rows`` table rows and ``n`` links whose URLs end in "TOKEN"."""
    table = "".join(f'<tr><td class="c{k}">Item {k}</td></tr>\n' for k in range(rows))
    links = "".join(f'<p><a href="https://shop.example/p/{k}?u=TOKEN" title="T{k}">{k}</a>'
                    f'<img src="https://shop.example/i/{k}.png" alt="i"></p>\n'
                    for k in range(n))
    return f"<html><body><table>\n{table}</table>\n{links}</body></html>\n"


@pytest.mark.parametrize("value", [
    "T9",  # another title: the same stray URLs (none)
    U,  # a tracker's URL where the browser loads nothing: every refused copy to the fallback
    "//shop.example/u?e=reader%40example.org",  # names a recipient: kept as stray
])
def test_a_token_in_thirty_links_is_checked_tag_by_tag(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that changes 30 tags (a recipient's token in every link: more than the
    eight the search took apart at first) is searched tag by tag, each tag of the copy
    before searched once; the answer is a check's from nothing, whichever tag's title
    becomes a stray URL."""
    from beacon_proxy.rewrite import readers, stray

    searched: list[int] = []
    real = stray.stray_urls

    def counted(view: bytes, low: bytes, spans: list[tuple[int, int]]) -> list[str]:
        searched.append(len(view))
        return real(view, low, spans)

    monkeypatch.setattr(readers, "stray_urls", counted)
    doc = _links_doc(30, rows=900)  # (40 KB: 30 tags are searched apart, not the whole)
    warm = Engine(RULES)
    for n in range(3):
        assert warm.analyse(_message(doc.replace("TOKEN", f"r{n:04d}x9Z").encode())).problems == ()
    assert len(searched) == 1 + 30 + 30 + 30  # the whole once, then each tag of both
    for k in (0, 17, 29):  # the title of one link, every link a token of its own
        copy_doc = doc.replace(f'title="T{k}"', f'title="{value}"')
        copy = _message(copy_doc.replace("TOKEN", f"r{k:04d}x8Y").encode())
        cold = Engine(RULES, templates=0).analyse(copy)
        searched.clear()
        again = warm.analyse(copy)
        assert (again.problems, again.strays) == (cold.problems, cold.strays)
        assert value == "T9" or cold.problems or cold.strays
        if value == "T9":  # the copy's 30 tags (the title's among them), the rest kept
            assert len(searched) == 30


def test_a_copys_regions_are_diffed_once_for_the_scan_and_the_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks of other readers take the regions the rescan found against the same
    earlier view, and the washed text's scan those the washer model put in
    (``Washing.changed``): one diff a copy, of its view."""
    from beacon_proxy.rewrite import readers, rescan

    calls: list[int] = []
    real = rescan.diff_regions

    def counted(*args: object) -> object:
        calls.append(len(args[0]))  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rescan, "diff_regions", counted)
    monkeypatch.setattr(readers, "diff_regions", counted)
    doc = _links_doc(12)
    warm = Engine(RULES)
    warm.analyse(_message(doc.replace("TOKEN", "r0000x9Z").encode()))
    calls.clear()
    copy = _message(doc.replace("TOKEN", "r0001x9Z").encode())
    assert warm.analyse(copy).problems == ()
    assert len(calls) == 1
    cold = Engine(RULES, templates=0).analyse(copy)
    assert warm.analyse(copy).strays == cold.strays


_LIST_MANAGE = b"https://list-manage.com/track/open.php?u=1"
#: Session 19's attack on the copies checked from the last: (first copy, second copy).
#: A: the washer's tag clean-up reads "<3..." in a value as a tag's name and drops what
#: a changed value puts into it ("." "/" "@"), making the host the tracker's;
#: B: a ">" and a "<" in quoted values around a change in names or unquoted values made
#: it look like text between tags.
SESSION_19 = {
    "name_in_value_host": (
        b'<img src="https://a><3xmgxexamplex\t@t.oracle-tracker.example/p" alt="">',
        b'<img src="https://a><3@img.example/\t@t.oracle-tracker.example/p" alt="">'),
    "name_in_value_dot": (b'<img src="https://img.example/a><3xy>b" alt="">',
                          b'<img src="https://img.example/a><3.y>b" alt="">'),
    "name_in_background": (b'<td background="https://img.example/a><-xy>b">x</td>',
                           b'<td background="https://img.example/a><-x.y>b">x</td>'),
    "unquoted_type": (b'<input alt="x>" type=image title="< " src="' + _LIST_MANAGE + b'">',
                      b'<input alt="x>" type=imagx title="< " src="' + _LIST_MANAGE + b'">'),
    "attribute_name": (b'<input alt="x>" type="image" title="< " src="' + _LIST_MANAGE + b'">',
                       b'<input alt="x>" typx="image" title="< " src="' + _LIST_MANAGE + b'">'),
    "refresh_name": (
        b'<p>x</p><meta name="a>" http-equiv=refresh title="< " content="0;url='
        + _LIST_MANAGE + b'">',
        b'<p>x</p><meta name="a>" http-equiv=refresxh title="< " content="0;url='
        + _LIST_MANAGE + b'">'),
    "at_in_name": (
        b'<img alt="a>" data-ab=" src=https://t.oracle-tracker.example/p " title="< " width="1">',
        b'<img alt="a>" data-a@b=" src=https://t.oracle-tracker.example/p " title="< " '
        b'width="1">'),
    # the second round: a blank that ended an unquoted style= value in text (the model's
    # over-read) made ";", or put into a style= match the model did not read, so that a
    # later "style=" stands alone; the list repair's budget, which counts bytes
    "style_value_lengthened": (b"<p>a style=abc url(https://img.example/p.png)</p>",
                               b"<p>a style=abc;url(https://img.example/p.png)</p>"),
    "style_match_split": (b"<p>xstyle=abcdefghijklmn/style=url(https://img.example/p.png)</p>",
                          b"<p>xstyle=abcdef hijklmn/style=url(https://img.example/p.png)</p>"),
    "list_budget_text": (b"<ol><li>x</li><ol><ol>\n" * 38 + b"<p>Ann</p></ol>",
                         b"<ol><li>x</li><ol><ol>\n" * 38 + b"<p>Ann-Marie Louise Smith</p></ol>"),
    # the third round: the blanks between </nobr> and <nobr>, which the washer rewrites
    # (" &nbsp; "), read by the model's style= over-read in text
    "nobr_blank": (
        b'<img src="https://t.example/ax.gif"><img src="https://t.example/a .gif">'
        b'<p>" style="background:url(https://t.example/a</nobr>x<nobr>.gif)"</p>',
        b'<img src="https://t.example/ax.gif"><img src="https://t.example/a .gif">'
        b'<p>" style="background:url(https://t.example/a</nobr> <nobr>.gif)"</p>'),
    # the fourth round: text put in right after "<!doctype ...>", which the washer
    # deletes with the doctype up to the next "<" (read as a style element's text once
    # the washer has cut "<style:x>" to "<style>")
    "after_doctype": (
        b'<img src="https://t.example/p.gif"><img src="https://t.example/p&amp;#46;gif">'
        b"<style:x>a{background:url(https://t.example/p&#46;gif)}<!doctype html></style:x>",
        b'<img src="https://t.example/q.gif"><img src="https://t.example/p&amp;#46;gif">'
        b"<style:x>a{background:url(https://t.example/p&#46;gif)}<!doctype html>@import"
        b"</style:x>"),
    "list_budget_value": (
        b"<ol><li>x</li><ol><ol>\n" * 36 + b'<p><a href="https://shop.example/?u=1">x</a></p></ol>',
        b"<ol><li>x</li><ol><ol>\n" * 36
        + b'<p><a href="https://shop.example/?u=1234567890abcdefghij">x</a></p></ol>'),
}


@pytest.mark.parametrize("case", list(SESSION_19))
def test_session_19_attack_pairs_are_checked_as_in_full(case: str) -> None:
    first, second = SESSION_19[case]
    rows = b"".join(b"<p>row %d</p>\n" for n in range(12))
    warm = Engine(RULES)
    assert warm.analyse(_message(rows + first + b"\n" + rows)).problems == ()
    data = _message(rows + second + b"\n" + rows)
    cold = Engine(RULES, templates=0).analyse(data)
    again = warm.analyse(data)
    assert cold.problems
    assert (again.problems, again.strays) == (cold.problems, cold.strays)


def _cpu(run: Callable[[], object]) -> float:
    """The least CPU time of three runs (process_time: a preempted run is not slow)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize(("unit", "kilobytes"), [
    # one text run of long lines (no "<" for megabytes): each text region's search for
    # the next "<" and ">" read the rest of the run again (webmail.rewash)
    (b"lorem ipsum dolor sit amet, consectetur adipiscing " * 5 + b"xyz", 4096),
    # many style attributes: each changed region was compared with every place the
    # washer model read CSS (webmail.reread)
    (b"<b style=a>xyz</b> " * 14 + b"<i>xyz</i>", 1024),
])
def test_a_copy_changed_on_every_fourth_line_costs_what_its_full_analysis_costs(
        unit: bytes, kilobytes: int) -> None:
    """The adversarial review of session 24: two shapes of a campaign's further copy made
    the checks of other readers quadratic in the copy's size (4 MB: 0.58 CPU s against
    0.10 for a full analysis; 1 MB: 1.65 against 0.14, 25 s at 4 MB: past the analysis
    budget, so the worker was killed for every copy).  Now a further copy costs about
    what analysing it afresh costs, with the same result."""
    lines = kilobytes * 1024 // (len(unit) + 1)

    def doc(changed: bool) -> bytes:
        body = b"\n".join(unit.replace(b"xyz", b"xYz") if changed and i % 4 == 0 else unit
                          for i in range(lines))
        return _message(b'<html><body><img src="https://shop.example/a.png" alt="a"><p>'
                        + body + b"\n</p></body></html>")

    first, copy = doc(False), doc(True)

    def warm() -> Analysis:
        engine = Engine(RULES)
        engine.analyse(first)
        started = time.process_time()
        analysis = engine.analyse(copy)
        warm_times.append(time.process_time() - started)
        return analysis

    warm_times: list[float] = []
    cold = _cpu(lambda: Engine(RULES, templates=0).analyse(copy))
    for _ in range(3):
        analysis = warm()
    assert analysis.problems == Engine(RULES, templates=0).analyse(copy).problems
    assert min(warm_times) < 3 * cold, (min(warm_times), cold)
