"""Where the footer goes in an HTML part: exact cases, html5lib as an oracle, hostile input."""

from __future__ import annotations

import re
import warnings

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite.bodyend import body_end
from beacon_proxy.rewrite.charsets import scan_view


@pytest.mark.parametrize(("document", "expected"), [
    (b"<body><p>x</p></body></html>", 14),
    (b"<body><p>x</p></BODY >", 14),
    (b"<body><!--[if mso]><table></body><![endif]--><p>x</p></body>", 53),
    (b"<body><p>x</p></body><!--[if mso]></body><![endif]-->", 14),
    (b"<body><p>x</p></body><!-- </body> -->", 14),
    (b"<body><p>x</p></body><script>document.write('</body>')</script>", 14),
    (b"<body><p>x</p></body><style>/*</body>*/</style><textarea></body></textarea>", 14),
    (b"<body><p>x</p></body><title></body></title><xmp></body></xmp>", 14),
    (b"<body><p>x</p></body><noscript></body></noscript>", 14),
    (b"<body><p>x</p></body><![if !mso]></body><![endif]>", 14),
    (b"<body><p>x</p></body><!--[if !mso]><!--></body><!--<![endif]-->", 14),
    (b"<body><p>x</p></body><a title='</body>'>", 14),
    (b"<body><p>x</p></body><!DOCTYPE </body>>", 14),
    (b"<body><p>x</p><!-->a</body>", 20),
    (b"<body><p>x</p></bodyx>", None),
    (b"<body><p>x</p>", None),
    (b"<body><p>x</p><!-- </body>", None),
    (b"<body><p>x</p><script></body>", None),
    (b"<body><plaintext></body>", None),
    (b"<body><p>x</p><!--[if !mso]><!--><p>web</p></body><!--<![endif]-->", None),
    (b"<body><![if !mso]><p>web</p><![endif]><p>all</p></body>", 48),
    # A script's escaped states: "<!--<script>" makes the next "</script" script text.
    (b"<body><p>x</p></body><script><!--<script></script></body>", 14),
    (b"<body><script><!--<script></script>--></script></body>", 47),
])
def test_body_end(document: bytes, expected: int | None) -> None:
    assert body_end(document) == expected


_FRAGMENTS = st.sampled_from([
    "<body>", "</body>", "</BODY >", "</body", "<p>x</p>", "text", ">", "<", "'", '"', "=",
    "<!-- ", " -->", "--!>", "<!-->", "<!--[if mso]>", "<![endif]-->", "<!--[if !mso]><!-->",
    "<!--<![endif]-->", "<![if !mso]>", "<![endif]>", "<script>", "</script>", "<style>",
    "</style>", "<title>", "</title>", "<textarea>", "</textarea>", "<xmp>", "</xmp>",
    "<!DOCTYPE html>", "<?xml x?>", "<a title='</body>'>", "<a title=\"x > </body>\">",
    "<a title=</body>>", "<a title='", "'>", "<img src=x>", "</ body>", "<b", "<a b=\"",
])
_MARK = "<i id=zzfooter></i>"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAGMENTS, max_size=30).map("".join))
@example("<p>x</p><a title='a > </body>'>")
@example("<body><script>'</script></body>")
@example("<script><!--[if mso]><script></script></body>")
def test_body_end_is_where_an_html5_parser_sees_the_end_tag(document: str) -> None:
    """Differential: html5lib (the HTML5 tree builder) parses a marker put at body_end()
    as an element, never as comment, raw text or attribute value.  (Not generated: a
    ``<`` inside a quoted attribute value before the ``</body>`` -- see body_end().)"""
    assume(not re.search(r"""<a (?:title|b)=(?:'[^']*<|"[^"]*<)""", document))
    at = body_end(document.encode())
    if at is None:
        return
    assert document[at:at + 6].lower() == "</body"
    with warnings.catch_warnings():  # bs4 warns about documents that look like file names
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(document[:at] + _MARK + document[at:], "html5lib")
    assert soup.find("i", id="zzfooter") is not None, document


def test_body_end_in_iso_2022_jp_skips_jis_text() -> None:
    jis = b"\x1b$B</body>\x1b(B"  # JIS X 0208 bytes that look like "</body>"
    document = b"<body><p>x</p></body>" + jis
    assert body_end(document) == 24
    assert body_end(scan_view(document, "iso-2022-jp")) == 14


@pytest.mark.parametrize("prefix", [b"", b"<a title='", b"<b", b"<p>"])
@pytest.mark.parametrize("unit", [b"<!", b"<!--", b"<script", b"</body>", b"<![if",
                                  b"<!--[if x]><!-->", b"<", b"<<!--", b"<b<script>", b"'<!--",
                                  b"<!---->", b"<a '>", b"<x</body>",
                                  b"<script><!--<script>", b"<script><!--<script></script>"])
def test_body_end_is_linear_on_hostile_input(prefix: bytes, unit: bytes) -> None:
    document = prefix + unit * 50_000  # quadratic work here would not finish
    at = body_end(document)
    assert at is None or document.startswith(b"</body", at)
