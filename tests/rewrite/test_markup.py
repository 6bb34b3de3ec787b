"""The fallback's reading of markup: after it, a browser-conformant parser finds no remote load."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from beacon_proxy.config import SmtpConfig
from beacon_proxy.rewrite.markup import (
    MAX_CONSTRUCTS,
    Budget,
    TooMuchMarkup,
    markup_edits,
    neutralise_markup,
)
from tests.rewrite.test_fallback import loads_left
from tests.rewrite.test_oracle import FIXTURES, TEMPLATE_FILES, TEMPLATES, _documents


def _neutralised(html: str) -> str:
    return neutralise_markup(html.encode("utf-8"))[0].decode("utf-8")


@pytest.mark.parametrize("path", sorted((FIXTURES / "html").glob("*.html")), ids=lambda p: p.stem)
def test_no_load_survives_in_fixtures(path: Path) -> None:
    html = path.read_text("utf-8", "replace")
    assert loads_left(html), "the fixture loads something to begin with"
    assert loads_left(_neutralised(html)) == {}


@pytest.mark.skipif(not TEMPLATE_FILES, reason=f"no shared templates at {TEMPLATES}")
@pytest.mark.parametrize("name", [p.name for p in TEMPLATE_FILES] or ["none"])
def test_no_load_survives_in_real_templates(name: str) -> None:
    html = (TEMPLATES / name).read_text("utf-8", "replace")
    out = _neutralised(html)
    assert loads_left(out) == {}
    assert out.count("<a ") + out.count("<a\n") == html.count("<a ") + html.count("<a\n")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
@example("<link title='<a x=\"' u\" href=https://t.test/x.css>")  # a quote trick on <a href
@example("<link title=<a href=https://t.test/y.css rel=stylesheet>")
@example("<svg><style><img src=https://t.test/svg></style></svg>")
@example("<svg><image><set attributeName=href to=https://t.test/smil /></image></svg>")
@example("<p style=\"background:u&#114;l(https://t.test/e)\">")
@example("<style>@\\69mport 'https://t.test/i';@import url(https://t.test/j);</style>")
@example("<meta http-equiv=refresh content='0;url=https://t.test/r'>")
def test_no_load_survives_in_hostile_html(html: str) -> None:
    assert loads_left(_neutralised(html)) == {}


def test_links_cid_images_and_harmless_css_keep_working() -> None:
    html = ('<a href="https://shop.example/sale">Sale</a><img src="cid:logo@x" alt="">'
            '<td style="color:rgb(1,2,3);width:calc(100% - 2px)">')
    assert neutralise_markup(html.encode()) == (html.encode(), 0)


def test_the_edits_are_what_neutralise_markup_applies() -> None:
    html = b'<img src="https://t.test/p"><p style="background:url(https://t.test/b)">'
    edits = markup_edits(html)
    assert edits == [(5, 5, b"x-bp-"), (10, 26, b""), (52, 52, b"  "), (53, 69, b"")]
    out = html
    for start, end, replacement in reversed(edits):
        out = out[:start] + replacement + out[end:]
    assert (out, 2) == neutralise_markup(html)


# -- at-keywords split by markup ------------------------------------------------------------

@pytest.mark.parametrize("css", [
    '@&#105;mport "https://t.test/a";', '@&#x69;mport "https://t.test/a";',
    '&#64;&#105;mport "https://t.test/a";', '@&bsol;69mport "https://t.test/a";',
    '@imp<![CDATA[ort "https://t.test/a";]]>', '@<![CDATA[import "https://t.test/a";]]>',
    '<![CDATA[@]]>import "https://t.test/a";', '@imp<!---->ort "https://t.test/a";',
    '@IMP<g/>ORT "https://t.test/a";', '@i<?x?>mport "https://t.test/a";',
    '&commat;im<!---->port "https://t.test/a";'])
def test_an_at_import_split_by_markup_is_broken(css: str) -> None:
    """In an SVG ``<style>`` (and any XML style sheet) references are decoded and
    comments, CDATA markers, processing instructions and elements left out of the
    text: an ``@`` then a start of ``import`` then such a split gets the ``_``."""
    out = _neutralised(f"<svg><style>{css}</style></svg>")
    assert "@_" in out or "&#64;_" in out or "&commat;_" in out
    assert loads_left(out) == {}


@pytest.mark.parametrize("text", [
    "write to ann@example.org &amp; bob@shop.example", "<a href=mailto:ann@example.org>",
    "@media screen{p{color:red}}", "@font-face{font-family:x}", "a@i.example", "@impo rt"])
def test_addresses_and_other_at_rules_are_left_alone(text: str) -> None:
    assert neutralise_markup(text.encode()) == (text.encode(), 0)
    # text that only may be a split "@import" pays a "_": "@im<b>portant</b>"
    assert neutralise_markup(b"@im<b>portant</b>")[0] == b"@_im<b>portant</b>"


# -- bounded: the fallback runs in the relay's own process -----------------------------------------

@pytest.mark.parametrize("piece", [b"(", b"rgb(", b"<p src=x>", b"@import", b"&lpar;"])
def test_more_constructs_than_the_bound_raise_at_the_bound(piece: bytes) -> None:
    """Each match counts, harmless or not: ``rgb(`` costs the loop as much as ``url(``."""
    view = b"<style>" + piece * (MAX_CONSTRUCTS + 1)
    with pytest.raises(TooMuchMarkup, match=f"more than {MAX_CONSTRUCTS} constructs"):
        markup_edits(view)
    assert markup_edits(b"<style>" + piece * 1000) is not None  # well below: read


def test_a_budget_is_shared_by_the_texts_it_is_given_to() -> None:
    budget = Budget()
    markup_edits(b"(" * (MAX_CONSTRUCTS - 10), budget)
    assert budget.left == 10
    markup_edits(b"(" * 10, budget)
    with pytest.raises(TooMuchMarkup):
        neutralise_markup(b"<img src=x>", budget=budget)


def test_exactly_the_bound_is_still_neutralised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("beacon_proxy.rewrite.markup.MAX_CONSTRUCTS", 3)
    text = b'<img src="https://t.test/a"><p style="background:url(https://t.test/b)">@x'
    assert neutralise_markup(text)[1] == 2  # src=, "(", "@": three matches
    with pytest.raises(TooMuchMarkup):
        markup_edits(text + b"@y")


@pytest.mark.skipif(not TEMPLATE_FILES, reason=f"no shared templates at {TEMPLATES}")
def test_real_newsletters_of_the_default_size_limit_stay_below_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound scaled to each real template's length as MAX_CONSTRUCTS is to the default
    ``[smtp] max_message_size`` (25 MiB): none reaches it, so a real newsletter of that size
    with the same density of markup would not either (they hold one match per 300-2000
    bytes; the bound allows one per 105)."""
    for path in TEMPLATE_FILES:
        data = path.read_bytes()
        monkeypatch.setattr("beacon_proxy.rewrite.markup.MAX_CONSTRUCTS",
                            len(data) * MAX_CONSTRUCTS // SmtpConfig().max_message_size)
        markup_edits(data)


@pytest.mark.parametrize("prefix", [b"xlink", b"_", b"_x.y-z", "\u00e9x".encode(), b"X"])
def test_a_loading_attribute_under_any_xml_prefix_is_renamed(prefix: bytes) -> None:
    """An XML part a frame loads by ``cid:`` binds any NCName to xlink (``_:href`` too)."""
    for name in (b"href", b"src", b"base"):
        text = b'<image ' + prefix + b":" + name + b'="https://t.test/x"/>'
        out = neutralise_markup(text, text)[0]
        assert b"https://t.test/x" not in out and b"x-bp-" + prefix in out
