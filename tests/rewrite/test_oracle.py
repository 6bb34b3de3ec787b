"""Differential test: the scanner finds every remote load an independent oracle finds.

The oracle (:mod:`tests.rewrite.oracle`) parses with html5lib (HTML5, as browsers do)
and, separately, with lxml; where they disagree the scanner must find the union.  Every
URL the oracle reports must be among the scanner's remote references for the same
document (URLs compared after :func:`~tests.rewrite.oracle.normalise`).

Inputs: the project's fixtures (HTML, and the HTML parts of the MIME fixtures as
Python's ``email`` package decodes them), the real templates in
``../shared/data/templates`` when present, and generated hostile HTML.

Intentional differences (the oracle sees more than the scanner, on purpose):

* none today.  Where the scanner is *more* lenient than the oracle (it reads
  ``<image src>`` in SVG, scans raw text of ``<noscript>``, treats ``\\\\host`` as
  remote) that is allowed: the property is one-way.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite.charsets import (
    UNKNOWN_CHARSET,
    effective_charset,
    is_transcoded,
    normalise_charset,
    scan_view,
    to_utf8,
)
from beacon_proxy.rewrite.html import scan_entries, scan_html
from beacon_proxy.rewrite.markup import neutralise_markup
from beacon_proxy.rewrite.unmodelled import unmodelled_markup
from tests.rewrite import oracle

#: KNOWN BUG (reported): the scanner reads SVG/MathML foreign content as HTML, so a
#: ``<style>``/``<title>``/``<textarea>``/``<script>``... inside ``<svg>``/``<math>`` hides
#: what a browser sees there.  While True, generated documents may miss what
#: :func:`foreign_content_misses` explains; set to False once the scanner models it.
FOREIGN_CONTENT_IS_A_KNOWN_MISS = True

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = Path(__file__).resolve().parents[3] / "shared" / "data" / "templates"


def scanner_urls(view: bytes, charset: str = "utf-8") -> set[str]:
    """The scanner's remote references, normalised as the oracle's."""
    return {oracle.normalise(r.url)
            for r in scan_html(scan_view(view, charset), charset=charset).references
            if r.remote}


def misses(html: str, view: bytes, charset: str = "utf-8") -> dict[str, list[str]]:
    """What each oracle parser finds and the scanner does not (empty when all is found)."""
    found = scanner_urls(view, charset)
    out = {}
    for parser, urls in oracle.remote_urls(html).items():
        missing = sorted(urls - found)
        if missing:
            out[parser] = missing
    return out


_FOREIGN_ROOT = re.compile(r"<(/?)(svg|math)(?=[\t\n\f\r />]|$)", re.I)


def foreign_content_misses(html: str, found: dict[str, list[str]]) -> dict[str, list[str]]:
    """The misses explained by SVG/MathML foreign content (KNOWN BUG, see the flag above).

    A miss is explained when the oracle no longer sees that URL once ``<svg>`` and
    ``<math>`` are renamed to ordinary unknown elements: it is then due to foreign-content
    parsing (no raw text, CDATA sections, entities in ``<svg><style>``, breakout tags).
    """
    if not _FOREIGN_ROOT.search(html):
        return {}
    plain = oracle.remote_urls(_FOREIGN_ROOT.sub(r"<\1x-\2", html))
    out = {}
    for parser, urls in found.items():
        explained = [url for url in urls if url not in plain[parser]]
        if explained:
            out[parser] = explained
    return out


def _compare(data: bytes, charset: str = "utf-8") -> int:
    """Assert the scanner finds the oracle's union; returns how many URLs the oracle saw."""
    html = data.decode(charset, "replace")
    assert misses(html, data, charset) == {}
    return len(set[str]().union(*oracle.remote_urls(html).values()))


# -- (a) the project's fixtures ---------------------------------------------------------------

HTML_FIXTURES = sorted((FIXTURES / "html").glob("*.html"))
MIME_FIXTURES = sorted((FIXTURES / "mime").glob("*.eml"))


@pytest.mark.parametrize("path", HTML_FIXTURES, ids=lambda p: p.stem)
def test_html_fixture(path: Path) -> None:
    _compare(path.read_bytes())


def _html_parts(message: Message) -> list[tuple[bytes, str]]:
    out = []
    for part in message.walk():
        if part.get_content_type() in ("text/html", "text/x-amp-html"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append((payload, normalise_charset(part.get_content_charset() or "us-ascii")))
    return out


@pytest.mark.parametrize("path", MIME_FIXTURES, ids=lambda p: p.stem)
def test_mime_fixture_html_parts(path: Path) -> None:
    """Each HTML part as ``email`` (compat32, lenient) decodes it, scanned as the engine
    scans it: UTF-16/32/7 through its UTF-8 transcoding, an unknown label as UTF-8 bytes.
    """
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
    for payload, label in _html_parts(message):
        charset = effective_charset(payload, label)
        if is_transcoded(charset):
            payload, charset = to_utf8(payload, charset), "utf-8"
        elif charset == UNKNOWN_CHARSET:
            charset = "utf-8"
        _compare(payload, charset)


# -- (b) real templates -----------------------------------------------------------------------

TEMPLATE_FILES = sorted(TEMPLATES.glob("*.html")) if TEMPLATES.is_dir() else []


@pytest.mark.skipif(not TEMPLATE_FILES, reason=f"no shared templates at {TEMPLATES} "
                    "(CI lays ../shared beside the checkout; they are MIT-licensed and not "
                    "copied into this repository)")
@pytest.mark.parametrize("name", [p.name for p in TEMPLATE_FILES] or ["none"])
def test_real_template(name: str) -> None:
    _compare((TEMPLATES / name).read_bytes())


# -- (c) generated hostile HTML ---------------------------------------------------------------

_MARK = "\u00a7"  # each URL's number: filled in, in order, when the document is complete


def _host() -> str:
    return f"t{_MARK}.test/p"


@st.composite
def _url(draw: st.DrawFn, relative_ok: bool) -> str:
    """A fresh remote URL in one of the spellings a mail client still loads."""
    form = draw(st.sampled_from(["plain", "case", "pr", "query", "ws", "tab", "nul", "rel"]
                                if relative_ok else
                                ["plain", "case", "pr", "query", "ws", "tab", "nul"]))
    if form == "plain":
        return f"https://{_host()}"
    if form == "case":
        return f"HtTpS://{_host()}"
    if form == "pr":
        return f"//{_host()}"
    if form == "query":
        return f"http://{_host()}?a=1&b=2&copy=3"
    if form == "ws":
        return f" \n https://{_host()}\f "
    if form == "tab":
        return f"ht\ttps://{_host()}"
    if form == "nul":
        return f"https://{_host()}/\x00x"
    return f"rel{_MARK}/x.png"


_NAMED = {"/": "&sol;", ":": "&colon;", ".": "&period;", "h": "&#104;", "t": "&#x74;",
          "&": "&amp;", "?": "&quest;", "(": "&lpar;", "\\": "&bsol;", "@": "&commat;"}


@st.composite
def _attr_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with some characters written as character references."""
    if not draw(st.booleans()):
        return text.replace("&", "&amp;") if draw(st.booleans()) else text
    out = []
    for c in text:
        if c in _NAMED and draw(st.integers(0, 3)) == 0:
            out.append(_NAMED[c])
        elif c.isalnum() and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from([f"&#{ord(c)};", f"&#x{ord(c):X};",
                                             f"&#0000000{ord(c)};", f"&#{ord(c)}"])))
        elif c == "/" and draw(st.integers(0, 9)) == 0:  # oddities after a real character
            out.append(c + draw(st.sampled_from(["&#150;", "&#x80;", "&#0;", "&#xD800;",
                                                 "&#99999999999;", "&notin;", "&notit;",
                                                 "&amp", "&AMP;", "&#x2F"])))
        else:
            out.append(c)
    return "".join(out)


_DECOYS = [" alt='>'", ' a"b=1', " =x", " x<y=1", ' alt="x"', " title=a'b", " data-x", " \x00=1",
           " src", ' src=""', " src=cid:decoy", " src='#frag'", " srcset=''"]


@st.composite
def _attr(draw: st.DrawFn, name: str, value: str) -> str:
    """`` name=value`` with a random separator, case, spacing and quoting, maybe after a decoy
    (an attribute that must not hide it, or the same name first, which wins)."""
    decoy = draw(st.sampled_from(["", "", "", *_DECOYS]))
    if decoy.strip().startswith(("src", "srcset")) and name not in ("src", "srcset"):
        decoy = ""
    sep = draw(st.sampled_from([" ", "\n", "\t", "/", " / ", "  ", "\f", "\r\n", "\r"]))
    name = draw(st.sampled_from([name, name.upper(), name.capitalize()]))
    eq = draw(st.sampled_from(["=", " = ", "\n=\t"]))
    value = draw(_attr_text(value))
    choices = []
    if '"' not in value:
        choices.append(f'"{value}"')
    if "'" not in value:
        choices.append(f"'{value}'")
    if not any(c in value for c in " \t\n\f\r>\"'`=<") and value:
        choices.append(value)
    if not choices:
        value = value.replace('"', "&quot;")
        choices.append(f'"{value}"')
    return decoy + sep + name + eq + draw(st.sampled_from(choices))


def _css_escape_slashes(url: str) -> str:
    return url.replace("/", "\\2f ")


@st.composite
def _css(draw: st.DrawFn, in_attr: bool) -> str:
    url = draw(_url(relative_ok=True))
    if any(c in url for c in "\x00\t\n\f\r"):  # CSS tokenizes these differently: plain URL
        url = f"https://{_host()}"
    if draw(st.booleans()):
        url = _css_escape_slashes(url) if draw(st.booleans()) else url.replace("/", "\\/")
    pad = draw(st.sampled_from(["", " ", "/**/", "\n"]))
    quoted = draw(st.sampled_from(['"', "'"]))
    form = draw(st.sampled_from([
        "url({p}{u}{p})", "url({p}{q}{u}{q}{p})", "URL({q}{u}{q})", "u\\72 l({u})",
        "\\75 rl({q}{u}{q})", "image-set({q}{u}{q} 1x, {q}{u}2{q} 2x)",
        "-webkit-image-set(url({u}) 1x)", "src({q}{u}{q})", "\\55 RL({u})", "u\\rl({q}{u}{q})",
        "url(\n{q}{u}{q}\n)", "image-set(url({q}{u}{q}) 1x)", "-WEBKIT-image-set({q}{u}{q} 1x)"]))
    token = form.format(u=url, q=quoted, p=pad)
    if draw(st.booleans()) and not in_attr:
        return draw(st.sampled_from([
            "@import {q}{u}{q};", "@import url({u}) screen;", "@IMPORT url({q}{u}{q});",
            "@\\69mport {q}{u}{q};", "@import/**/{q}{u}{q};", "@import\n{q}{u}{q}",
            "@font-face{{font-family:x;src:url({u}) format('woff')}}"]
        )).format(u=url, q=quoted)
    prop = draw(st.sampled_from(["background", "background-image", "list-style",
                                 "content", "cursor", "border-image", "mask"]))
    decl = f"{prop}:{pad}{token}"
    if in_attr:
        return draw(st.sampled_from(["color:red;", "", "/* x */"])) + decl
    return draw(st.sampled_from([".a{%s}", "td>p{%s}", "@media screen{.x{%s}}"])) % decl


_LINK_RELS = ["stylesheet", "preload", "prefetch", "dns-prefetch", "preconnect", "icon",
              "shortcut icon", "Stylesheet"]


_TAG_START = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)")


@st.composite
def _loader(draw: st.DrawFn) -> str:
    """One construct that loads something remote, its tag names in a random case."""
    construct = draw(_construct())
    case = draw(st.sampled_from([str.lower, str.upper, str.title]))
    return _TAG_START.sub(lambda m: "<" + m.group(1) + case(m.group(2)), construct)


@st.composite
def _construct(draw: st.DrawFn) -> str:
    def a(name: str, value: str) -> str:
        return draw(_attr(name, value))

    def u() -> str:
        return draw(_url(relative_ok=True))

    kind = draw(st.sampled_from([
        "img", "img-srcset", "img-lowsrc", "input", "picture", "video", "audio", "track",
        "iframe", "object", "embed", "svg-image", "svg-use", "link", "background",
        "style-attr", "style-block", "meta", "vml", "amp", "image"]))
    if kind == "img":
        extra = draw(st.sampled_from(["", a("width", "1"), a("alt", "x > y")]))
        return f"<img{extra}{a('src', u())}{draw(st.sampled_from(['', '/', ' /']))}>"
    if kind == "img-srcset":
        first, second = u().strip(), u().strip()
        comma = draw(st.sampled_from([",", " ,", ",\n", ",,", " , "]))
        desc = draw(st.sampled_from(["", " 1x", " 480w", "\t2x", " (x, y)"]))
        value = f"{first}{desc}{comma}{second} 2x"
        return f"<img{a('srcset', value)}>"
    if kind == "img-lowsrc":
        return f"<img{a(draw(st.sampled_from(['lowsrc', 'dynsrc'])), u())}>"
    if kind == "input":
        return f"<input{a('type', draw(st.sampled_from(['image', 'IMAGE', ' image '])))}" \
               f"{a('src', u())}>"
    if kind == "picture":
        return f"<picture><source{a('srcset', u().strip() + ' 1x')}>" \
               f"<source{a('src', u())}></picture>"
    if kind == "video":
        return f"<video{a('poster', u())}{a('src', u())}></video>"
    if kind == "audio":
        return f"<audio{a('src', u())}></audio>"
    if kind == "track":
        return f"<video><track{a('src', u())}></video>"
    if kind == "iframe":
        return f"<iframe{a('src', u())}></iframe>"
    if kind == "object":
        return f"<object{a('data', u())}></object>"
    if kind == "embed":
        return f"<embed{a('src', u())}>"
    if kind == "svg-image":
        key = draw(st.sampled_from(["href", "xlink:href"]))
        return f"<svg><image{a(key, u())}/></svg>"
    if kind == "svg-use":
        return f"<svg><use{a('href', u())}/></svg>"
    if kind == "image":
        return f"<image{a('src', u())}>"
    if kind == "link":
        return f"<link{a('rel', draw(st.sampled_from(_LINK_RELS)))}{a('href', u())}>"
    if kind == "background":
        tag = draw(st.sampled_from(["table", "td", "th", "body", "div"]))
        if tag in ("td", "th"):
            return f"<table><tr><{tag}{a('background', u())}>x</{tag}></tr></table>"
        return f"<{tag}{a('background', u())}>x</{tag}>"
    if kind == "style-attr":
        tag = draw(st.sampled_from(["div", "td", "span", "p", "img"]))
        return f"<{tag}{a('style', draw(_css(in_attr=True)))}>x</{tag}>" if tag != "img" \
            else f"<img{a('style', draw(_css(in_attr=True)))}>"
    if kind == "style-block":
        return f"<style{draw(st.sampled_from(['', ' type=text/css', ' media=all']))}>" \
               f"{draw(_css(in_attr=False))}</style>"
    if kind == "meta":
        url = u().strip()
        content = draw(st.sampled_from(["0;url={u}", "5; URL='{u}'", "1, {u}", "0 ; url = {u}"]
                                       )).format(u=url)
        return f"<meta{a('http-equiv', draw(st.sampled_from(['refresh', 'Refresh'])))}" \
               f"{a('content', content)}>"
    if kind == "vml":
        tag = draw(st.sampled_from(["v:fill", "v:image", "v:imagedata", "V:Fill"]))
        return f"<v:rect><{tag}{a('src', u())} /></v:rect>"
    tag = draw(st.sampled_from(["amp-img", "amp-pixel", "amp-anim"]))
    return f"<{tag}{a('src', u())}></{tag}>"


_NOISE = ["<p>", "</p>", "<div class=x>", "</div>", "<br/>", "<table><tr><td>",
          "</td></tr></table>",
          "<a href='https://link.test/not-a-load'>", "</a>", "text & more", "a < b", "x > y",
          "&amp;", "&lt;img src=https://no.test/x&gt;", "<!-- c -->", "<!---->", "<!-->",
          "<!--->", "<!-- a -- b --!>", "<![CDATA[ x ]]>", "<?php echo 1 ?>", "<!DOCTYPE html>",
          "</ >", "</>", "<>", "< img>", "\x00", "<span title=\"a>b\">", "</span>",
          "<font face=x>", "<center>", "<template>", "</template>", "<noscript>",
          "</noscript>", "<select><option>", "</select>", "<b", "<frameset>",
          "<base href='https://base.test/dir/'>", "<base href=cid:x>", "</svg>", "</math>",
          "<math>", "<svg>", "<foreignObject>", "</foreignObject>", "<mtext>", "</mtext>"]


@st.composite
def _piece(draw: st.DrawFn, depth: int) -> str:
    kind = draw(st.sampled_from(["loader", "loader", "loader", "noise", "noise", "wrap"]
                                if depth < 2 else ["loader", "noise"]))
    if kind == "loader":
        return draw(_loader())
    if kind == "noise":
        return draw(st.sampled_from(_NOISE))
    inner = "".join(draw(st.lists(_piece(depth + 1), min_size=1, max_size=3)))
    opening, closing = draw(st.sampled_from([
        ("<!--[if mso]>", "<![endif]-->"), ("<!--[if gte mso 9]>", "<![endif]-->"),
        ("<!--[IF MSO]>", "<![ENDIF]-->"), ("<!--[if (gte mso 9)|(IE)]>", "<![endif]--->"),
        ("<!--[if mso]><!-- x -->", "<![endif]-->"), ("<!--[if mso]>", "<!--<![endif]-->"),
        ("<!--[if !mso]><!-->", "<!--<![endif]-->"), ("<![if !mso]>", "<![endif]>"),
        ("<!-- ", " -->"), ("<svg>", "</svg>"), ("<math>", "</math>"),
        ("<svg><foreignObject>", "</foreignObject></svg>"), ("<title>", "</title>"),
        ("<textarea>", "</textarea>"), ("<script>", "</script>"), ("<noscript>", "</noscript>"),
        ("<template>", "</template>"), ("<table>", "</table>"), ("<div>", "</div>"),
        ("<xmp>", "</xmp>"), ("<noembed>", "</noembed>"), ("<iframe>", "</iframe>"),
        ("<select>", "</select>"), ("<math><mi>", "</mi></math>"),
    ]))
    return opening + inner + closing


@st.composite
def _documents(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(_piece(0), min_size=1, max_size=8))
    ending = draw(st.sampled_from(["", "", "<!-- unterminated", "<img src=\"https://e.test/u",
                                   "<img src=https://e.test/v", "<style>a{b:url(",
                                   "<script>", "<!--[if mso]><img src=https://e.test/w>",
                                   "<title>", "<plaintext>"]))
    parts = ("".join(pieces) + ending).split(_MARK)
    return "".join(part + str(i) for i, part in enumerate(parts[:-1])) + parts[-1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
@example("<!--[IF MSO]><img src=https://t.test/a><![ENDIF]-->")
@example("<style>@import/**/'https://t.test/a';@\\69mport 'https://t.test/b';</style>")
@example('<img src="&#x0000000068;ttps://t.test/a"><img src="&#00000000104;ttps://t.test/b">')
# a <frameset> parser ignores <title>: the comment is one, and Outlook's markup (CI found it)
@example('<frameset><title><!--[if mso]><img lowsrc="https://t0.test/p"><![endif]--></title>')
@example('<img src="https://t0.test/p"><img src src="https://t1.test/p">'
         '<img srcset="https://t2.test/p">')  # a duplicate: the scan stops there
def test_property_scanner_finds_what_the_oracle_finds(html: str) -> None:
    if unmodelled_markup(html.encode("utf-8").lower()) or scan_entries(html.encode())[2]:
        # <svg>, <math>, <select>, or a scan that stops incomplete (an attribute Chromium's
        # preload scanner reads twice): the engine leaves such a part to the fallback,
        # after which nothing loads at all.
        neutralised = neutralise_markup(html.encode("utf-8"))[0].decode("utf-8")
        assert not any(oracle.remote_urls(neutralised).values())
        return
    found = misses(html, html.encode("utf-8"))
    if FOREIGN_CONTENT_IS_A_KNOWN_MISS:
        known = foreign_content_misses(html, found)
        found = {parser: rest for parser, urls in found.items()
                 if (rest := [url for url in urls if url not in known.get(parser, ())])}
    assert found == {}


@pytest.mark.xfail(strict=True, reason="KNOWN BUG: the scanner does not model SVG/MathML "
                   "foreign content (raw-text elements are markup there; breakout tags)")
@pytest.mark.parametrize("html", [
    '<svg><style><img src="https://t.test/breakout"></style></svg>',
    "<math><title><img src=https://t.test/title></title></math>",
    '<svg><textarea><input type=image src="https://t.test/input"></textarea></svg>',
    "<svg><style>.a{background:url(&#104;ttps://t.test/entity)}</style></svg>",
    '<svg><script><img src="https://t.test/script"></script></svg>',
])
def test_foreign_content(html: str) -> None:
    """Repros of the foreign-content miss (Apple Mail and other WebKit/Gecko readers render
    inline SVG).  When the scanner learns foreign content these pass: drop the xfail and
    set FOREIGN_CONTENT_IS_A_KNOWN_MISS to False."""
    assert misses(html, html.encode("utf-8")) == {}
