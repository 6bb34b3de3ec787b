"""Content the precise engine does not model: found, and handled by the fallback."""

from __future__ import annotations

import binascii
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import unmodelled
from beacon_proxy.rewrite.charsets import is_transcoded, normalise_charset
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.labels import roundcube_name
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.unmodelled import (
    hide_encoded_files,
    remote_base,
    unmodelled_markup,
    unread_meta_charset,
)

ENGINE = Engine(load_rules())
PIXEL = b'<img src="https://t.test/o.gif" width="1" height="1">'


def _refused(data: bytes) -> tuple[Outcome, bytes | None]:
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), "a@x.example", Policy.REFUSED,
                  CopyPolicy())
    return copy.outcome, copy.data


def test_markup_contexts_the_scanner_does_not_model() -> None:
    assert unmodelled_markup(b"<math><title><img src=x></title></math>") == "math content"
    assert unmodelled_markup(b"<select><xmp><img src=x></xmp>") == "select content"
    assert unmodelled_markup(b"<p>an svg-like <svgx> tag</p>") is None
    assert unmodelled_markup(b"<frameset><title><!--[if mso]><img src=x><![endif]-->"
                             b"</title>") == "frameset content"
    assert unmodelled_markup(b"<framesets><frame src=x>") is None
    assert unmodelled_markup(b'<meta http-equiv=content-type content="text/html; '
                             b'charset=utf-16">') is not None
    assert unread_meta_charset(b'<meta content="text/html; charset=iso-8859-1">') is None


def test_a_utf7_meta_charset_in_an_ascii_part_is_held() -> None:
    body = b'<meta charset="UTF-7"><p>+ADw-img src+AD0AIg-https://t.test/o.gif+ACI-+AD4-'
    outcome, data = _refused(b"Content-Type: text/html; charset=us-ascii\r\n\r\n" + body)
    assert (outcome, data) == (Outcome.HELD, None)


def test_a_utf7_meta_charset_after_svg_is_held_too() -> None:
    # The <svg> sends the part to the fallback, which must still see the UTF-7 <meta>.
    body = (b'<svg></svg><meta charset="UTF-7"><p>+ADw-img src+AD0AIg-https://t.test/o.gif'
            b"+ACI-+AD4-")
    assert unread_meta_charset(body.lower()) is not None
    outcome, data = _refused(b"Content-Type: text/html; charset=us-ascii\r\n\r\n" + body)
    assert (outcome, data) == (Outcome.HELD, None)


def test_meta_charsets_as_html_declares_them() -> None:
    assert unread_meta_charset(b"<meta " + b"x" * 500 + b" charset=utf-7>") is not None
    assert unread_meta_charset(b"<meta " + b"x" * 520 + b" charset=utf-7>") is None  # too far
    assert unread_meta_charset(b"<meta x> charset=utf-7") is None  # past the tag
    assert unread_meta_charset(b"<meta charset=utf-8 charset=utf-7>") is None  # the first
    assert unread_meta_charset(b"<meta charset=utf-8><meta charset=utf-7>") is not None
    assert unmodelled_markup(b"<meta charset=utf-7><svg>") == (
        "a <meta> charset (utf-7) that is not ascii-compatible")


def test_a_uuencoded_html_file_in_plain_text_is_hidden() -> None:
    encoded = binascii.b2a_uu(PIXEL[:45]) + binascii.b2a_uu(PIXEL[45:])
    body = b"Hello\r\nbegin 644 news.html\r\n" + encoded.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    data = b"Subject: uu\r\nTo: a@x.example\r\n\r\n" + body
    assert hide_encoded_files(body)[1] == 1
    outcome, out = _refused(data)
    assert outcome is Outcome.FALLBACK and out is not None
    assert b"\r\n begin 644 news.html\r\n" in out and b"\r\nbegin " not in out
    assert hide_encoded_files(b"begin 644 photo.jpg\n`\nend\n") == (
        b"begin 644 photo.jpg\n`\nend\n", 0)


def test_a_remote_content_base_falls_back() -> None:
    assert remote_base(b"Content-Base: \"https://t.test/\"\r\n")
    assert remote_base(b"Content-Location:\r\n https://t.test/x/\r\n")
    assert not remote_base(b"Content-Location: cid:part1\r\nContent-Type: text/html\r\n")
    assert not remote_base(b"Content-Location: (the page) news/index.html\r\n")


@pytest.mark.parametrize("value", [
    b"<https://t.test/>", b"(company site) https://t.test/", b"'https://t.test/'",
    b"https://t.test/ (base)", b"< https://t.test/ >", b"\"<https://t.test/>\"",
    b"hxxp://t.test/", b"//t.test/", b"(a) (b) HTTPS://t.test/", b"foo://t.test/",
])
def test_a_base_in_any_lenient_spelling_counts_as_remote(value: bytes) -> None:
    """Clients strip what they like around the value: any spelling with ``//`` is remote
    (fail-closed), for Content-Base and Content-Location alike."""
    for field in (b"Content-Base: ", b"content-location:"):
        assert remote_base(field + value + b"\r\n"), field + value
    data = (b"Content-Type: text/html\r\nContent-Location: https://t.test/\r\n\r\n"
            b'<img src="o.gif" width="1" height="1">')
    outcome, out = _refused(data)
    assert outcome is Outcome.FALLBACK and out is not None and b'src="o.gif"' not in out


# -- the one search for contexts and <meta> tags, against the pattern it replaced ----------

_OLD_TAGS = re.compile(rb"<(?:(s(?:vg|elect)|math)[\t\n\f\r />]|meta)")


def _old_first(low: bytes, contexts: bool) -> str | None:
    """unmodelled._first as it was with a capturing group (the definition)."""
    pos = searched = 0
    declaration = -1
    found: re.Match[bytes] | None = None
    while (tag := _OLD_TAGS.search(low, pos)) is not None:
        if tag.group(1) is not None:
            if contexts:
                return f"{tag.group(1).decode()} content"
            pos = tag.end()
            continue
        start = tag.end()
        if declaration < start:
            stop = start + unmodelled._META_GAP + len(b"charset")
            declaration = low.find(b"charset", max(start, searched), stop)
            while declaration >= 0 and (found := unmodelled._CHARSET.match(low, declaration)) \
                    is None:
                declaration = low.find(b"charset", declaration + 1, stop)
            if declaration < 0:
                searched = stop - len(b"charset") + 1
        if declaration < start or low.find(b">", start, declaration) >= 0:
            pos = tag.start() + 1
            continue
        assert found is not None
        label = found.group(1).decode("ascii", "replace")
        webmail = roundcube_name(label)  # session 17: Roundcube's name for it too
        if is_transcoded(normalise_charset(label)) or (
                webmail is not None and is_transcoded(normalise_charset(webmail))):
            return f"a <meta> charset ({label}) that is not ascii-compatible"
        pos = found.end()
    return None


_MARKUP_PARTS = ["<svg", "<select", "<math", "<meta", "<s", "<m", "<sv", "<mat", "<metax",
                 " ", "/", ">", "\n", "\t", "<", "charset=", "charset =", "utf-7", "utf-8",
                 "utf-16", '"', "x", "<p>", "<span>", "<svg>", "<selected", "<mathx "]


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from(_MARKUP_PARTS), max_size=30))
def test_the_context_search_finds_what_the_old_pattern_found(parts: list[str]) -> None:
    low = "".join(parts).encode()
    assert unmodelled_markup(low) == _old_first(low, True)
    assert unread_meta_charset(low) == _old_first(low, False)


def test_each_context_is_named_as_before() -> None:
    for name in ("svg", "select", "math"):
        for delimiter in "\t\n\f\r />":
            low = f"<p>x</p><{name}{delimiter}".encode()
            assert unmodelled_markup(low) == f"{name} content" == _old_first(low, True)
    assert unmodelled_markup(b"<meta charset=utf-8><svg>") == "svg content"
    assert unmodelled_markup(b"<svg") is None  # no delimiter: not the element


# -- <noscript> read with scripting enabled (raw text to the first "</noscript") ---------------

#: Each loads PIXEL in Chromium with JavaScript on (tests/rewrite/test_rendered_refusal.py,
#: ``*_js``): the markup reading, which the scanner follows, is elsewhere at "</noscript".
NOSCRIPT_BREAKOUTS = {
    "in_a_quoted_value": b'<noscript><p title="</noscript>' + PIXEL + b'"></p></noscript>',
    "in_an_unquoted_value": b"<noscript><p title=</noscript>" + PIXEL + b"></noscript>",
    "in_a_style": b"<noscript><style></noscript>" + PIXEL + b"</style></noscript>",
    "in_a_comment": b"<noscript><!--</noscript>" + PIXEL + b"--></noscript>",
    "in_a_textarea": b"<noscript><textarea></noscript>" + PIXEL + b"</textarea></noscript>",
    "in_a_bogus_comment": b"<noscript><?</noscript>" + PIXEL + b"></noscript>",
    "quote_in_a_name_opens_a_value": b"<noscript><img a\"=\" src='x'></noscript>" + PIXEL
                                     + b'"></noscript>',
    "in_the_second_noscript": b"<noscript>x</noscript><p><noscript><p title='</noscript>"
                              + PIXEL + b"'></noscript>",
    "upper_case": b"<NOSCRIPT><P TITLE='</NOSCRIPT>" + PIXEL + b"'></NOSCRIPT>",
}


@pytest.mark.parametrize("name", NOSCRIPT_BREAKOUTS)
def test_noscript_content_read_otherwise_with_scripting_falls_back(name: str) -> None:
    html = NOSCRIPT_BREAKOUTS[name]
    assert unmodelled.noscript_breakout(html.lower()) is not None
    outcome, data = _refused(b"Content-Type: text/html\r\n\r\n" + html)
    assert outcome is Outcome.FALLBACK
    assert data is not None and b' src="https://t.test' not in data


@pytest.mark.parametrize("html", [
    b"<p>no noscript at all",
    # MJML's Outlook settings, and the usual tracking-pixel fallback (the scanner finds it)
    b"<!--[if mso]>\n<noscript>\n<xml>\n<o:OfficeDocumentSettings>\n  <o:AllowPNG/>\n"
    b"  <o:PixelsPerInch>96</o:PixelsPerInch>\n</o:OfficeDocumentSettings>\n</xml>\n"
    b"</noscript>\n<![endif]-->",
    b'<noscript><img height="1" width="1" style="display:none" alt=\'a>b\' '
    b'src="https://t.test/tr?id=1&amp;ev=PageView"/></noscript>',
    b'<noscript class="x">it\'s 3 < 4 > 2 "quoted" text</noscript >',
    b"<noscript><p>never closed",  # raw text to the end: that reading sees less
])
def test_plain_noscript_content_stays_on_the_precise_path(html: bytes) -> None:
    assert unmodelled.noscript_breakout(html.lower()) is None
    outcome, data = _refused(b"Content-Type: text/html\r\n\r\n" + html)
    assert outcome is Outcome.STRIPPED and data is not None


@pytest.mark.parametrize("unit", [b"<noscript>", b"<noscript><p a='x' b=y>", b"<noscript><a\"",
                                  b"<noscript>" + b"<p " * 8, b"<noscript></noscript"])
def test_noscript_check_stays_linear(unit: bytes) -> None:
    small, big = unit * 2_000, unit * 40_000
    times = [min(_seconds(html) for _ in range(3)) for html in (small, big)]  # a busy VM
    assert times[1] < 0.5 and times[1] < 20 * 20 * max(times[0], 1e-4)


def _seconds(html: bytes) -> float:
    start = time.perf_counter()
    unmodelled.noscript_breakout(html)
    return time.perf_counter() - start


@pytest.mark.parametrize("name", [b"a.shtml", b"a.EHTML", b"a.xhtml", b"fwd.eml", b"b.svg"])
def test_every_name_gecko_renders_counts_for_a_uuencoded_file(name: bytes) -> None:
    assert hide_encoded_files(b"hi\nbegin 644 " + name + b"\n`\nend\n")[1] == 1


@pytest.mark.parametrize("text", [
    b"hi\nbegin 644 " + b"a" * 600 + b".html\n`\nend\n",  # a name past the old 500 bytes
    b"begin 644 " + b"a" * 700 + b".html\n`\nend\n",  # the first line
    b"hi\r\n=ybegin line=128 size=9 name=" + b"b" * 900 + b".htm\r\nx\r\n=yend\r\n",
    b"hi\nbegin 644 news.mail\n`\nend\n",  # a message to Gecko on Debian
])
def test_a_long_or_system_typed_name_of_an_encoded_file_counts(text: bytes) -> None:
    """Thunderbird reads the name to the end of the begin line, however long, and types
    it as :data:`~beacon_proxy.rewrite.mime.RENDERED_EXTENSIONS` say (session 26)."""
    assert hide_encoded_files(text)[1] == 1
