"""Attacks on the refusal: messages a real client renders and loads a tracker from.

Each case is a message carrying ``PIXEL`` (a 1x1 image, a tracker by size) where a
mail client would find it; the refused copy must not keep it where that client
would look (or must be held).  Client behaviour cited is from Thunderbird's libmime
(``mailnews/mime/src``): ``MimeHeaders_get`` cuts Content-Type and
Content-Transfer-Encoding at ``;``, ``,`` or whitespace; ``mime_LineBuffer`` ends a
line at a bare CR (so does Python's ``email``); ``MimeMultipart_check_boundary``
strips trailing ``isspace`` bytes (``\\f``, ``\\v``) from a delimiter line;
``MimeInlineTextHTML_parse_begin`` turns ``Content-Base``/``Content-Location`` into
``<BASE HREF>``; ``x-uuencode``/``uue``/``uuencode``/``x-uue`` bodies are decoded.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import markup
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.fallback import neutralise_message, still_loads
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.transfer import decode
from tests.rewrite import oracle
from tests.rewrite.decoders import (
    libbase64_decode,
    libqp_decode,
    node_base64_decode,
    php_qp_decode,
)

ENGINE = Engine(load_rules())
RCPT = "reader@example.org"
HOST = "pixel.tracker-host.example"
URL = f"https://{HOST}/o.gif?u=5f3a9"
PIXEL = f'<img src="{URL}" width="1" height="1">'
B64 = base64.b64encode(PIXEL.encode()).decode()
HEAD = ("From: news@shop.example\nTo: reader@example.org\nSubject: offers\n"
        "MIME-Version: 1.0\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("latin-1")


def _uuencoded(data: bytes) -> str:
    lines = [binascii.b2a_uu(data[i:i + 45]).decode() for i in range(0, len(data), 45)]
    return "begin 644 a.html\n" + "".join(lines) + "`\nend\n"


def _refused(data: bytes) -> Decided:
    prepared = prepare(ENGINE, data, CopyPolicy())
    return decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())


def _leaves_pixel(copy: bytes) -> bool:
    """Whether a loadable PIXEL survives in any reading: raw, base64, QP or uuencoded."""
    if URL.encode() in copy and b' src="' + URL.encode() in copy:
        return True
    for chunk in copy.split(b"\r\n\r\n"):
        uu = b"uue" in copy.lower()  # x-uuencode, uue, x-uue, uuencode: decoded by Thunderbird
        for reading in (decode(chunk, "base64"), decode(chunk, "quoted-printable"),
                        _uudecode(chunk) if uu else b""):
            if b'src="' + URL.encode() in reading:
                return True
    return False


def _uudecode(chunk: bytes) -> bytes:
    out = []
    for line in chunk.splitlines():
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            continue
    return b"".join(out)


def _mixed(first_part: str, rest: str) -> str:
    return (HEAD + "Content-Type: multipart/mixed; boundary=b\n\n--b\n" + first_part
            + rest + "\n--b--\n")


# Leaks found and fixed: each message loads PIXEL in the client named.
LEAKS: dict[str, tuple[Callable[[], bytes], Outcome]] = {
    # Thunderbird reads "text/html" (cut at whitespace / ","): the part was taken as
    # text/plain (invalid type) and neither scanned nor neutralised.
    "content_type_with_junk_after_the_type_is_html_to_thunderbird": (
        lambda: _crlf(HEAD + "Content-Type: text/html charset=utf-8\n\n" + PIXEL + "\n"),
        Outcome.STRIPPED),
    "content_type_with_a_comma_list_is_html_to_thunderbird": (
        lambda: _crlf(HEAD + "Content-Type: text/html, text/plain\n\n" + PIXEL + "\n"),
        Outcome.STRIPPED),
    "content_type_with_space_around_the_slash_is_html_to_lenient_parsers": (
        lambda: _crlf(HEAD + "Content-Type: text /\n html\n\n" + PIXEL + "\n"),
        Outcome.STRIPPED),
    # The 101st Content-* field was not read at all: every client reads it.
    "content_type_after_100_other_content_fields_is_read": (
        lambda: _crlf(HEAD + "".join(f"Content-X{i}: y\n" for i in range(101))
                      + "Content-Type: text/html\n\n" + PIXEL + "\n"),
        Outcome.STRIPPED),
    # Two Content-Type fields, same type, different boundary: a client taking the last
    # one sees a text/html part inside what the first one calls text/plain.  No one copy
    # is safe for both splits (one's preamble is the other's part): held.
    "second_content_type_with_another_boundary_is_a_conflict": (
        lambda: _crlf(HEAD + "Content-Type: multipart/mixed; boundary=a\n"
                      "Content-Type: multipart/mixed; boundary=b\n\n--a\n"
                      "Content-Type: text/plain\n\n--b\nContent-Type: text/html\n\n"
                      + PIXEL + "\n--b--\n--a--\n"),
        Outcome.HELD),
    "boundary_and_rfc2231_boundary_that_disagree_are_a_conflict": (
        lambda: _crlf(HEAD + "Content-Type: multipart/mixed; boundary=ab; boundary*0=a\n\n"
                      "--a\nContent-Type: text/plain\n\n--ab\nContent-Type: text/html\n\n"
                      + PIXEL + "\n--ab--\n--a--\n"),
        Outcome.HELD),
    # Bare CR: a line end to Thunderbird and Python's email, not to the parser: the
    # base64 text/html part hid inside a text/plain body.
    "bare_cr_delimiter_hides_a_base64_html_part": (
        lambda: _crlf(_mixed("Content-Type: text/plain\n\nhi", "")).replace(
            b"hi\r\n--b--", b"hi\r--b\rContent-Type: text/html\rContent-Transfer-Encoding:"
            b" base64\r\r" + B64.encode() + b"\r\n--b--"),
        Outcome.FALLBACK),
    "bare_cr_in_a_part_header_hides_its_content_type": (
        lambda: _crlf(_mixed("X-A: 1\n", "\n" + PIXEL)).replace(
            b"X-A: 1\r\n", b"X-A: 1\rContent-Type: text/html\r\n"),
        Outcome.FALLBACK),
    # Thunderbird strips \f / \v after a delimiter: a second part to it, text to others.
    # Neither reading can be neutralised for both: held.
    "delimiter_line_ending_in_form_feed_is_held": (
        lambda: _crlf(_mixed("Content-Type: text/plain\n\nhi",
                             "\n--b\f\nContent-Type: text/html\nContent-Transfer-Encoding:"
                             " base64\n\n" + B64)),
        Outcome.HELD),
    "delimiter_line_ending_in_vertical_tab_is_held": (
        lambda: _crlf(_mixed("Content-Type: text/plain\n\nhi",
                             "\n--b\v\nContent-Type: text/html\n\n" + PIXEL)),
        Outcome.HELD),
    # Thunderbird turns these headers into <base href>: "o.gif" is remote there.
    "content_location_makes_a_relative_pixel_remote": (
        lambda: _crlf(HEAD + f"Content-Type: text/html\nContent-Location: https://{HOST}/\n\n"
                      '<img src="o.gif?u=1" width="1" height="1">\n'),
        Outcome.FALLBACK),
    "content_base_on_the_multipart_makes_a_relative_pixel_remote": (
        lambda: _crlf(HEAD + "Content-Type: multipart/related; boundary=b\n"
                      f'Content-Base: "https://{HOST}/"\n\n--b\nContent-Type: text/html\n\n'
                      '<img src="o.gif?u=1" width="1" height="1">\n--b--\n'),
        Outcome.FALLBACK),
    # Unknown encodings Thunderbird decodes: the fallback neutralised the encoded text.
    "transfer_encoding_base64_with_junk_is_base64_to_thunderbird": (
        lambda: _crlf(HEAD + "Content-Type: text/html\nContent-Transfer-Encoding: base64 x\n\n"
                      + B64 + "\n"),
        Outcome.FALLBACK),
    "transfer_encoding_qp_with_junk_hides_src_behind_a_soft_break": (
        lambda: _crlf(HEAD + "Content-Type: text/html\n"
                      "Content-Transfer-Encoding: quoted-printable; x\n\n"
                      '<img s=\nrc=3D"' + URL.replace("=", "=3D")
                      + '" width=3D"1" height=3D"1">\n'),
        Outcome.FALLBACK),
    "transfer_encoding_x_uuencode_is_decoded_by_thunderbird": (
        lambda: _crlf(HEAD + "Content-Type: text/html\nContent-Transfer-Encoding: x-uuencode\n\n"
                      + _uuencoded(PIXEL.encode())),
        Outcome.FALLBACK),
}


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_refused_copy_keeps_no_pixel_a_client_would_load(name: str) -> None:
    make, expected = LEAKS[name]
    data = make()
    assert _leaves_pixel(data) or b"o.gif?u=1" in data
    copy = _refused(data)
    assert copy.outcome is expected, copy.problems
    if copy.data is not None:
        assert not _leaves_pixel(copy.data)
        assert b'src="o.gif?u=1"' not in copy.data
        # No encoding left that a client decodes differently (the "(" the fallback spaces
        # out may corrupt uuencoded text by chance: the encoding must go, not rely on it).
        assert b"uue" not in copy.data.lower()


# Verified non-leaks (regression guards): the refused copy loads nothing from HOST.
SAFE: dict[str, str] = {
    "space_before_colon": HEAD + "Content-Type : text/html\n\n" + PIXEL + "\n",
    "folded_content_type": HEAD + "Content-Type:\n text/html\n\n" + PIXEL + "\n",
    "comment_before_type": HEAD + "Content-Type: (c) text/html\n\n" + PIXEL + "\n",
    "quoted_transfer_encoding_name": HEAD + 'Content-Type: text/html\n'
    'Content-Transfer-Encoding: "base64"\n\n' + B64 + "\n",
    "base64_with_junk_characters": HEAD + "Content-Type: text/html\n"
    "Content-Transfer-Encoding: base64\n\n!!" + B64 + "\n",
    "utf7_label": HEAD + "Content-Type: text/html; charset=utf-7\n\n"
    + PIXEL.encode("utf-7").decode() + "\n",
    "utf16_bom_under_utf8_label": HEAD + "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n\n"
    + base64.b64encode(b"\xff\xfe" + PIXEL.encode("utf-16-le")).decode() + "\n",
    "utf16le_without_bom": HEAD + "Content-Type: text/html; charset=utf-16\n"
    "Content-Transfer-Encoding: base64\n\n"
    + base64.b64encode(PIXEL.encode("utf-16-le")).decode() + "\n",
    "iso2022jp_empty_escape": HEAD + "Content-Type: text/html; charset=iso-2022-jp\n\n"
    "\x1b$B\x1b(B" + PIXEL + "\n",
    "hz_escape": HEAD + "Content-Type: text/html; charset=hz-gb-2312\n\n~{~}" + PIXEL + "\n",
    "part_without_blank_line": _mixed("", PIXEL),
    "mbox_from_line_in_a_part": _mixed("From x\nContent-Type: text/html\n\n", PIXEL),
    "multipart_without_boundary": HEAD + "Content-Type: multipart/mixed\n\n" + PIXEL + "\n",
    "base64_message_rfc822": HEAD + "Content-Type: message/rfc822\n"
    "Content-Transfer-Encoding: base64\n\n"
    + base64.encodebytes(_crlf("Content-Type: text/html\n\n" + PIXEL + "\n")).decode(),
    "image_element": HEAD + "Content-Type: text/html\n\n"
    f'<image src="{URL}" width=1 height=1>\n',
    "vml_fill_in_conditional_comment": HEAD + "Content-Type: text/html\n\n"
    f'<!--[if gte mso 9]><v:fill type="frame" src="{URL}?e={RCPT}"/><![endif]-->\n',
    "escaped_css_url_with_address": HEAD + "Content-Type: text/html\n\n"
    f"<style>p{{background:\\75rl({URL}&e={RCPT})}}</style>\n",
    "srcdoc_entity_escaped": HEAD + "Content-Type: text/html\n\n"
    f'<iframe srcdoc="&lt;img src=&quot;{URL}&quot; width=1 height=1&gt;"></iframe>\n',
    "svg_feimage_falls_back": HEAD + "Content-Type: text/html\n\n"
    f'<svg><filter><feImage href="{URL}"/></filter></svg>\n',
}


@pytest.mark.parametrize("name", sorted(SAFE))
def test_verified_non_leak_stays_safe(name: str) -> None:
    copy = _refused(_crlf(SAFE[name]))
    assert copy.data is None or not _leaves_pixel(copy.data), copy.outcome
    if copy.data is not None:
        assert f'src="{URL}'.encode() not in copy.data
        assert f"{URL}&e={RCPT}".encode() not in copy.data


# Stalls: the new checks stay linear (n vs 4n, CPU time, with a generous factor for noise).
FAMILIES: dict[str, Callable[[int], bytes]] = {
    "bare_cr": lambda n: _crlf(HEAD + "Content-Type: text/html\n\n") + b"<p>a\r" * n,
    "control_char_false_hits": lambda n: _crlf(
        _mixed("Content-Type: text/plain\n\n", "--bx\n" * n)),
    "repeated_content_type": lambda n: _crlf(
        HEAD + "Content-Type: text/html\n" * n + "\n<p>"),
    "many_parts_with_content_location": lambda n: _crlf(
        HEAD + "Content-Type: multipart/mixed; boundary=b\nContent-Location: https://t.example/"
        "\n\n" + "--b\nContent-Type: text/html\nContent-Location: x\n\n<img src=a>\n" * n
        + "--b--\n"),
    "many_unknown_encodings": lambda n: _crlf(
        HEAD + "Content-Type: multipart/mixed; boundary=b\n\n"
        + "--b\nContent-Type: text/html\nContent-Transfer-Encoding: x-uue\n\nbegin\n" * n
        + "--b--\n"),
}


def _best_of(f: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        f()
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_new_checks_stay_linear(name: str) -> None:
    small, large = FAMILIES[name](200), FAMILIES[name](800)
    for f in (_refused, neutralise_message, parse_message):
        t_small = _best_of(lambda: f(small))  # noqa: B023
        t_large = _best_of(lambda: f(large))  # noqa: B023
        assert t_large < 10 * t_small + 0.02, (f.__name__, t_small, t_large)


def test_quoted_printable_with_padded_soft_breaks_goes_to_the_fallback() -> None:
    """``s= `` then a line break: decoders that delete trailing blanks first (RFC 2045
    6.7: Dovecot, Roundcube) read ``src=``; Python and Thunderbird do not.  Neither
    reading may be left: the fallback neutralises the RFC one and re-encodes."""
    data = _crlf(HEAD + "Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable"
                 '\n\n<p>News</p><img s= \nrc=3D"' + URL.replace("=", "=3D")
                 + '" width=3D"1" height=3D"1">\n')
    copy = _refused(data)
    assert copy.outcome is Outcome.FALLBACK
    assert any("soft line break" in p for p in copy.problems), copy.problems
    assert copy.data is not None
    body = copy.data.split(b"\r\n\r\n", 1)[1]
    assert decode(body, "quoted-printable").startswith(b'<p>News</p><img x-bp-src="" ')
    assert b"= " not in body


_SVG_PIXEL = ("<svg xmlns='http://www.w3.org/2000/svg'><image href='" + URL
              + "' width='1' height='1'/></svg>")


@pytest.mark.parametrize("element", [
    '<iframe src="cid:s1"></iframe>', '<embed src="CID:s1" type="image/svg+xml">',
    '<object data="cid:s1"></object>', '<frameset><frame src="cid:s1"></frameset>',
    '<iframe src="mid:m1/s1"></iframe>'])
def test_a_part_a_frame_loads_by_cid_goes_to_the_fallback(element: str) -> None:
    """A client that resolves ``cid:`` for a frame, ``<object>`` or ``<embed>`` renders
    that part as a document: an SVG part then loads its ``<image>``.  The copy goes to
    the fallback, which neutralises every part a frame can load."""
    data = _crlf(HEAD + 'Content-Type: multipart/related; boundary="r"\n\n--r\n'
                 "Content-Type: text/html\n\n<p>News</p>" + element + "\n--r\n"
                 "Content-Type: image/svg+xml\nContent-ID: <s1>\n\n" + _SVG_PIXEL + "\n--r--\n")
    copy = _refused(data)
    assert copy.outcome is Outcome.FALLBACK, copy.problems
    assert copy.data is not None and f"href='{URL}'".encode() not in copy.data
    assert b"x-bp-href" in copy.data


def test_an_image_shown_by_cid_stays_precise() -> None:
    """``<img src="cid:...">`` of an SVG part loads nothing from inside it."""
    data = _crlf(HEAD + 'Content-Type: multipart/related; boundary="r"\n\n--r\n'
                 'Content-Type: text/html\n\n<p>News</p><img src="cid:s1">\n--r\n'
                 "Content-Type: image/svg+xml\nContent-ID: <s1>\n\n" + _SVG_PIXEL + "\n--r--\n")
    assert _refused(data).outcome is Outcome.STRIPPED


# -- bodies other readers decode otherwise (session 26's attack) ---------------------------------

_QP_READERS = {"python": binascii.a2b_qp, "php": php_qp_decode, "libqp": libqp_decode}
_B64_READERS = {"python": lambda b: decode(b, "base64"), "node": node_base64_decode,
                "libbase64": libbase64_decode}
_QP = '<img src=3D"' + URL.replace("=", "=3D") + '" width=3D"1" height=3D"1">'
_TWO_READINGS = {
    "qp_double_equals": ("quoted-printable", "<p>Offers</p>==3C" + _QP[1:]),
    "qp_double_equals_style": ("quoted-printable",
                               "==3Cstyle>body{background:url(" + URL.replace("=", "=3D")
                               + ")}==3C/style><p>x</p>"),
    "qp_split_escape": ("quoted-printable", "<p>Offers</p>=3=\nC" + _QP[1:]),
    "qp_equals_soft_break": ("quoted-printable", "<p>Offers</p>x==\n3C" + _QP[1:]),
    # Python skips from a soft break's "=" at a bare CR to the LF: the image too
    "qp_bare_cr_soft_break": ("quoted-printable", "<p>Offers</p>=\r" + _QP + "\nx"),
    "base64url": ("base64", base64.b64encode(("<p>Offers</p>" + PIXEL).encode()).decode()
                  .replace("+", "-").replace("/", "_")),
    # mailparser reads both as ASCII: the high bit cleared, "\xbc" is "<" (the review)
    "qp_high_bit": ("quoted-printable", "<p>Offers</p>\xbc" + _QP[1:-1] + "\xbe"),
    "base64_high_bit": ("base64", base64.b64encode(b"<p>Hello there, friend.</p>").decode()
                        + "\n" + "".join(chr(ord(c) | 0x80) for c in base64.b64encode(
                            PIXEL.encode()).decode())),
}


def _tracker_loads(html: bytes) -> set[str]:
    text = html.decode("latin-1")
    return {url for urls in oracle.remote_urls(text).values() for url in urls if HOST in url}


@pytest.mark.parametrize("case", sorted(_TWO_READINGS))
def test_a_body_decoders_read_in_two_ways_reaches_every_reader_neutralised(case: str) -> None:
    """PHP (Roundcube) and nodemailer read ``==3C``, an escape cut by a soft break, a soft
    break at a bare CR or base64url as markup that Python reads as text (or not at all).
    The copy goes to the fallback, which writes the part back canonically: every reader
    then reads one text, and it loads nothing.  The control: some reader of the original
    loads the tracker."""
    cte, body = _TWO_READINGS[case]
    data = _crlf(HEAD + f"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: "
                 f"{cte}\n\n{body}\n")
    readers = _QP_READERS if cte == "quoted-printable" else _B64_READERS
    original = data.split(b"\r\n\r\n", 1)[1]
    assert any(_tracker_loads(read(original)) for read in readers.values()), "no control"
    copy = _refused(data)
    assert copy.outcome is Outcome.FALLBACK, copy.problems
    assert copy.data is not None
    part = copy.data.split(b"\r\n\r\n", 1)[1]
    texts = {name: read(part) for name, read in readers.items()}
    assert len({text.rstrip(b"\r\n") for text in texts.values()}) == 1, texts
    assert not _tracker_loads(texts["python"])


# -- a hex escape takes one blank as its end (session 26's attack) --------------------------------

_T1 = f"https://{HOST}/import.css?e=reader%40example.org"  # the address: a beacon
_T2 = f"https://{HOST}/joined.gif?e=reader%40example.org"
_ESCAPE_JOINS = {
    # removing the @import (as Chromium's preload scanner reads it) left one blank, which
    # the escape took: "ur\6c" + blank + "(" is url(
    "import_removal_joins_url": f"<style>p{{background:ur\\6c@import '{_T1}';(\"{_T2}\")}}"
                                "</style><p>Offers</p>",
    "import_removal_joins_u72": f"<style>p{{background:u\\72@import '{_T1}';l(\"{_T2}\")}}"
                                "</style><p>Offers</p>",
    "import_removal_joins_import": f"<style>@im\\70@import '{_T1}';ort \"{_T2}\";</style>"
                                   "<p>Offers</p>",
    # the fallback (an <svg> sends the copy there) put one blank before every "("
    "fallback_paren": f'<svg width="1" height="1"></svg><p title="<title>"><b style="'
                      f'background:ur\\6c&#40;&quot;{_T2}&quot;)">Offers</b></title></p>',
    "fallback_paren_style": f"<svg></svg><style>b{{background:ur\\6c(\"{_T2}<\")}}</style>"
                            "<b>x</b>",
}


@pytest.mark.parametrize("case", sorted(_ESCAPE_JOINS))
def test_an_edit_after_a_css_escape_joins_no_load(case: str) -> None:
    """What the copy inserts to keep tokens apart is two blanks: a hex escape just before
    takes one as its end.  The refused copy, read as browsers read it (the scanner and
    the html5lib/lxml oracle), loads nothing of the tracker's."""
    data = _crlf(HEAD + "Content-Type: text/html; charset=utf-8\n\n" + _ESCAPE_JOINS[case]
                 + "\n")
    copy = _refused(data)
    assert copy.data is not None, copy.problems
    html = copy.data.split(b"\r\n\r\n", 1)[1]
    assert not _tracker_loads(html)
    assert not still_loads(html, "utf-8", "text/html")


def test_the_fallback_holds_a_copy_its_edits_would_make_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The net under the fallback's patterns: what they leave is read once more as a
    browser reads it.  With the one blank of before, the copy is held, not sent."""
    monkeypatch.setattr(markup, "SEPARATOR", b" ")
    data = _crlf(HEAD + "Content-Type: text/html; charset=utf-8\n\n"
                 + _ESCAPE_JOINS["fallback_paren"] + "\n")
    copy = _refused(data)
    assert copy.data is None
    assert any("still loads once neutralised" in p for p in copy.problems), copy.problems
