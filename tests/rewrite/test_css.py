"""The CSS scanner and the inline-style declaration reader."""

from __future__ import annotations

import pytest

from beacon_proxy.rewrite.css import CssRef, css_unescape, declarations, scan_css
from beacon_proxy.rewrite.html import scan_html


def _found(css: bytes) -> list[tuple[str, str, bytes, bytes]]:
    return [(r.kind, r.url, css[slice(*r.url_span)], css[slice(*r.removal_span)])
            for r in scan_css(css)]


@pytest.mark.parametrize("prop", [b"background", b"background-image", b"border-image",
                                  b"list-style-image", b"list-style", b"content", b"cursor",
                                  b"mask", b"mask-image", b"-webkit-mask-image", b"shape-outside"])
@pytest.mark.parametrize("form", [b"url(%s)", b"url('%s')", b'url("%s")', b"URL(  %s  )",
                                  b"url(\n'%s'\n)"])
def test_url_in_any_property(prop: bytes, form: bytes) -> None:
    token = form % b"https://t.test/p.png"
    css = b".a{" + prop + b": " + token + b" no-repeat}"
    assert _found(css) == [("url", "https://t.test/p.png", b"https://t.test/p.png", token)]


def test_strings_and_comments_are_not_loads() -> None:
    css = (b'.a::before{content:"url(https://t.test/1)"} /* url(https://t.test/2) */'
           b".b::after{content:'\\'url(https://t.test/3)'}")
    assert scan_css(css) == []


def test_region_without_paren_at_or_backslash_is_skipped() -> None:
    assert scan_css(b"p { color: red; font-family: 'Helvetica Neue' }") == []


def test_import_forms_remove_the_whole_rule() -> None:
    css = (b"@import url(https://t.test/a.css);\n"
           b"@IMPORT 'https://t.test/b.css' screen and (min-width:0);\n.x{}")
    refs = scan_css(css)
    assert [(r.kind, r.url, r.neutral) for r in refs] == [
        ("import", "https://t.test/a.css", b""), ("import", "https://t.test/b.css", b"")]
    assert css[slice(*refs[0].removal_span)] == b"@import url(https://t.test/a.css);"
    assert css[slice(*refs[1].removal_span)] == (
        b"@IMPORT 'https://t.test/b.css' screen and (min-width:0);")


def test_font_face_sources() -> None:
    css = (b'@font-face { font-family: "X"; src: url(https://t.test/x.woff2) format("woff2"),'
           b' url("https://t.test/x.woff") format("woff"), local("X"); }'
           b" .y { background: url(https://t.test/bg.png) }")
    assert [(r.kind, r.url) for r in scan_css(css)] == [
        ("font", "https://t.test/x.woff2"), ("font", "https://t.test/x.woff"),
        ("url", "https://t.test/bg.png")]


def test_image_set_removes_the_whole_set() -> None:
    css = (b'.h{background-image:-webkit-image-set("https://t.test/1.png" 1x, '
           b'url(https://t.test/2.png) 2x, "https://t.test/3.avif" type("image/avif"))}')
    refs = scan_css(css)
    assert [r.url for r in refs] == ["https://t.test/1.png", "https://t.test/2.png",
                                    "https://t.test/3.avif"]
    whole = css[slice(*refs[0].removal_span)]
    assert whole.startswith(b"-webkit-image-set(") and whole.endswith(b'"image/avif"))')
    assert {r.removal_span for r in refs} == {refs[0].removal_span}
    assert all(r.in_image_set and r.neutral == b"none" for r in refs)


def test_escapes() -> None:
    css = b".a{cursor:u\\72 l(https://t.test/c\\2e cur)} .b{background:url('https://t.test/q\\'x')}"
    assert [r.url for r in scan_css(css)] == ["https://t.test/c.cur", "https://t.test/q'x"]
    assert css_unescape("\\41 BC\\\n") == "ABC"


def test_unterminated_url_at_end_still_loads() -> None:
    css = b"div{background:url(https://t.test/end"
    (ref,) = scan_css(css)
    assert ref.url == "https://t.test/end" and css[slice(*ref.removal_span)] == b"url(https://t.test/end"


def test_bad_urls_load_nothing() -> None:
    assert scan_css(b"a{b:url(has space.png)} c{d:url(a\"b)} e{f:url()}") == []


def test_a_backslash_at_the_end_ends_a_string() -> None:
    assert scan_css(b'a{content:"\\') == scan_css(b"a{content:'x\\") == []
    (ref,) = scan_css(b'@import "https://t.test/a.css\\')
    assert ref.kind == "import" and ref.url.startswith("https://t.test/a.css")
    doc = b'<style>p{background:url("https://t.test/x")} q{content:"\\</style>'
    assert [r.url for r in scan_css(doc, 7, len(doc) - 8)] == ["https://t.test/x"]


def test_offsets_are_absolute_with_a_window() -> None:
    doc = b"<style>.a{background:url(https://t.test/x)}</style>"
    (ref,) = scan_css(doc, 7, len(doc) - 8)
    assert doc[slice(*ref.url_span)] == b"https://t.test/x"
    assert isinstance(ref, CssRef)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("css", [b"/*" + b"x" * 2_000_000, b"url(" * 500_000, b'"' * 1_000_000,
                                 b"image-set(" * 200_000, b"@font-face{" * 200_000,
                                 b"\\" * 1_000_000, b"@import " * 200_000],
                         ids=["comment", "url", "quotes", "image-set", "font-face", "escapes",
                              "import"])
def test_adversarial_css_ends(css: bytes) -> None:
    scan_css(css)


def test_declarations() -> None:
    style = b"Display: None !important; width:1px;height : 2PX; max-height:0; opacity:.0; x:y"
    assert declarations(style) == {"display": "none", "width": "1px", "height": "2px",
                                   "max-height": "0", "opacity": ".0"}
    assert declarations(b"max-width: 600px; line-height: 1px; border-width: 1px") == {
        "max-width": "600px"}
    assert declarations(b"") == {}


# -- found by the differential oracle (tests/rewrite/test_oracle.py) -------------------------

@pytest.mark.parametrize("css", [
    b"@import/**/'https://t.test/a.css';",
    b"@import /* x */ \"https://t.test/a.css\" screen;",
    b"@import/* a **/ /**/url(https://t.test/a.css);",
    b"@\\69mport 'https://t.test/a.css';",
    b"@IM\\50 ORT \"https://t.test/a.css\";",
])
def test_import_after_a_comment_or_with_an_escaped_name(css: bytes) -> None:
    (ref,) = scan_css(css)
    assert (ref.kind, ref.url, css[slice(*ref.removal_span)]) == (
        "import", "https://t.test/a.css", css)


def test_escaped_font_face_is_read_as_font_face() -> None:
    css = b"@font\\-face{font-family:x;src:url(https://t.test/f.woff)}"
    (ref,) = scan_css(css)
    assert ref.url == "https://t.test/f.woff"


@pytest.mark.parametrize("css", [b"'\\", b'a{b:"x\\', b'url("\\'])
def test_a_backslash_ending_a_string_at_the_end_of_the_css(css: bytes) -> None:
    # found by tests/rewrite/test_fuzz.py: it raised AssertionError out of Engine.analyse
    scan_css(css)
    scan_html(b"<style>" + css)
