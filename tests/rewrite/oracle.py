"""An independent oracle for the HTML scanner: every remote load a browser's parse shows.

It shares no code with :mod:`beacon_proxy.rewrite` (no regex, no tokenizer, no URL
helper): documents are parsed by BeautifulSoup with **html5lib** (the HTML5 tree
builder, as browsers parse) and, separately, with **lxml** (libxml2's HTML parser);
CSS is tokenized by **tinycss2** (CSS Syntax Level 3).  The oracle then walks the tree
and lists what a mail client could fetch:

* ``img`` ``src``/``srcset``/``lowsrc``/``dynsrc``; ``input type=image`` ``src``;
  ``picture``/``source`` ``src``/``srcset``; ``video`` ``src``/``poster``; ``audio``,
  ``track``, ``iframe``/``frame`` ``src``; ``object`` ``data``; ``embed`` ``src``;
  SVG ``image``/``use``/``feImage`` ``href``/``xlink:href`` (and ``image src``, which is
  what lxml leaves of an HTML ``<image>``);
* ``link`` ``href`` (and ``imagesrcset``) when ``rel`` has a loading keyword;
* ``background`` attributes on any element;
* CSS ``url()``, ``src()``, strings in ``image-set()``, ``@import "x"`` in ``style``
  attributes and ``<style>`` elements (HTML or SVG), ``@font-face`` included;
* ``meta http-equiv=refresh`` (the HTML standard's ``content`` algorithm);
* VML ``v:*`` ``src`` (``v:fill``, ``v:image``, ``v:imagedata``, ...), AMP ``amp-*`` ``src``
  (``amp-img``, ``amp-pixel``, ...) and ``amp-img`` ``srcset``;
* ``iframe srcdoc`` documents (two levels deep, as the scanner), and the contents of
  Outlook conditional comments (``<!--[if mso]>...<![endif]-->``), parsed as HTML again
  because Outlook renders them.

Remote means ``http``/``https``/``ftp``/``ws``/``wss`` or protocol-relative (``//host``,
with either slash spelled as a backslash, as URL parsers read it for web schemes); a
relative URL is resolved against the document's first ``<base href>`` when that is
remote.  URLs are cleaned as the URL standard does (C0 controls and spaces stripped at
the ends, tabs and newlines removed) and NUL is U+FFFD, as the HTML parser makes it.

The oracle is deliberately lenient where it can be: every srcset candidate counts (no
descriptor validation), every CSS ``url()`` token counts (not only in properties that
load), elements are considered wherever the parser put them (``<template>``,
``<noscript>``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin

import tinycss2
from bs4 import (
    BeautifulSoup,
    Comment,
    Declaration,
    Doctype,
    GuessedAtParserWarning,
    MarkupResemblesLocatorWarning,
    ProcessingInstruction,
    Tag,
    XMLParsedAsHTMLWarning,
)
from bs4.element import NavigableString

__all__ = ["PARSERS", "Load", "Parser", "css_urls", "is_remote", "loads", "normalise",
           "refresh_url", "remote_urls", "srcset_urls"]

Parser = Literal["html5lib", "lxml"]
PARSERS: tuple[Parser, ...] = ("html5lib", "lxml")

_WS = "\t\n\f\r "
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_REMOTE_SCHEMES = frozenset({"http", "https", "ftp", "ws", "wss"})
_C0_SPACE = "".join(chr(c) for c in range(0x21))
_LOAD_RELS = frozenset({"stylesheet", "prefetch", "preload", "modulepreload", "dns-prefetch",
                        "preconnect", "prerender", "icon", "apple-touch-icon", "manifest"})
#: element -> (attribute, kind) for plain URL attributes
_URL_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    "img": (("src", "img"), ("lowsrc", "img"), ("dynsrc", "img")),
    "image": (("src", "img"), ("href", "svg-image"), ("xlink:href", "svg-image")),
    "input": (("src", "input"),),
    "source": (("src", "source"),),
    "video": (("src", "video"), ("poster", "video-poster")),
    "audio": (("src", "audio"),),
    "track": (("src", "track"),),
    "iframe": (("src", "iframe"),),
    "frame": (("src", "iframe"),),
    "object": (("data", "object"),),
    "embed": (("src", "embed"),),
    "use": (("href", "svg-use"), ("xlink:href", "svg-use")),
    "feimage": (("href", "svg-image"), ("xlink:href", "svg-image")),
}
_SRCSET_TAGS = frozenset({"img", "source", "amp-img"})
_CONDITIONAL = re.compile(r"\[if\b[^\]]*\]>(.*?)(?:<!\[endif\]\s*)?\Z", re.I | re.S)
_MAX_SRCDOC_DEPTH = 2
_NOT_TEXT = (Comment, Declaration, Doctype, ProcessingInstruction)


@dataclass(frozen=True, slots=True)
class Load:
    """One remote load: the normalised URL and the construct it comes from."""

    url: str
    kind: str


def normalise(url: str) -> str:
    """A URL as a URL parser reads it: ends stripped, tabs and newlines gone, NUL as U+FFFD."""
    url = url.replace("\x00", "\ufffd").strip(_C0_SPACE)
    return url.replace("\t", "").replace("\n", "").replace("\r", "")


def is_remote(url: str) -> bool | None:
    """True (remote), False (local: another scheme, empty) or None (relative: a path, a
    query, a fragment alone; against a remote base a browser loads ``<img src="#a">``
    from the base's own URL)."""
    if url[:2].replace("\\", "/") == "//":
        return True
    m = _SCHEME.match(url)
    if m is None:
        return False if not url else None
    return m.group(1).lower() in _REMOTE_SCHEMES


# -- attribute micro-syntaxes, from the HTML standard -----------------------------------------

def srcset_urls(value: str) -> list[str]:
    """The URL of every candidate of a ``srcset`` (HTML "parse a srcset attribute")."""
    out: list[str] = []
    pos, n = 0, len(value)
    while True:
        while pos < n and (value[pos] in _WS or value[pos] == ","):
            pos += 1
        if pos >= n:
            return out
        start = pos
        while pos < n and value[pos] not in _WS:
            pos += 1
        url = value[start:pos]
        if url.endswith(","):
            out.append(url.rstrip(","))
            continue
        out.append(url)
        # the descriptor tokenizer: skip to the comma that ends this candidate
        in_parens = False
        while pos < n:
            c = value[pos]
            pos += 1
            if in_parens:
                in_parens = c != ")"
            elif c == "(":
                in_parens = True
            elif c == ",":
                break


def refresh_url(content: str) -> str | None:
    """The URL of a ``meta http-equiv=refresh`` (HTML "shared declarative refresh steps")."""
    pos, n = 0, len(content)

    def skip_ws() -> None:
        nonlocal pos
        while pos < n and content[pos] in _WS:
            pos += 1

    skip_ws()
    start = pos
    while pos < n and content[pos].isascii() and content[pos].isdigit():
        pos += 1
    if pos == start and not content.startswith(".", pos):
        return None
    while pos < n and (content[pos] == "." or (content[pos].isascii()
                                                and content[pos].isdigit())):
        pos += 1
    if pos >= n:
        return None
    if content[pos] not in ";," + _WS:
        return None
    skip_ws()
    if pos < n and content[pos] in ";,":
        pos += 1
        skip_ws()
    if pos >= n:
        return None
    url = content[pos:]
    rest = url
    if rest[:1] in ("U", "u"):
        rest = rest[1:]
        if rest[:1] in ("R", "r"):
            rest = rest[1:]
            if rest[:1] in ("L", "l"):
                rest = rest[1:].lstrip(_WS)
                if rest[:1] == "=":
                    url = rest[1:].lstrip(_WS)
    if url[:1] in ("'", '"'):
        quote, url = url[0], url[1:]
        url = url.split(quote, 1)[0]
    return url


# -- CSS ---------------------------------------------------------------------------------------

def css_urls(text: str) -> list[tuple[str, str]]:
    """(kind, URL) of every ``url()``/``src()``/``image-set()`` string/``@import`` in CSS."""
    out: list[tuple[str, str]] = []
    _walk_css(tinycss2.parse_component_value_list(text, skip_comments=True), out, False)
    return out


def _walk_css(tokens: list[object], out: list[tuple[str, str]], in_set: bool) -> None:
    after_import = False
    for token in tokens:
        kind: str = getattr(token, "type", "")
        if kind in ("whitespace", "comment"):
            continue
        if kind == "url":
            out.append(("css-url", str(getattr(token, "value", ""))))
        elif kind == "string" and (after_import or in_set):
            out.append(("css-import" if after_import else "css-url",
                        str(getattr(token, "value", ""))))
        elif kind == "function":
            name = str(getattr(token, "lower_name", ""))
            arguments: list[object] = list(getattr(token, "arguments", []))
            if name in ("url", "src"):
                out.extend(("css-url", str(getattr(t, "value", ""))) for t in arguments
                           if getattr(t, "type", "") == "string")
            _walk_css(arguments, out, name in ("image-set", "-webkit-image-set"))
        elif kind.endswith(" block"):
            _walk_css(list(getattr(token, "content", [])), out, False)
        after_import = kind == "at-keyword" and getattr(token, "lower_value", "") == "import"


# -- the document walk -----------------------------------------------------------------------

def _parse(html: str, parser: Parser) -> BeautifulSoup:
    with warnings.catch_warnings():  # bs4 warns about documents that look like URLs or XML
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", GuessedAtParserWarning)
        return BeautifulSoup(html, parser, multi_valued_attributes=None)


def _attr(tag: Tag, name: str) -> str | None:
    value = tag.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else " ".join(value)


def _text(tag: Tag) -> str:
    """The character data of an element (a ``<style>``), CDATA included, comments not."""
    return "".join(str(s) for s in tag.descendants
                   if isinstance(s, NavigableString) and not isinstance(s, _NOT_TEXT))


def _raw(soup: BeautifulSoup, parser: Parser, depth: int) -> Iterator[tuple[str, str]]:
    """(kind, raw URL) of every load in one parsed document, conditional comments included."""
    for node in soup.descendants:
        if isinstance(node, Comment):
            m = _CONDITIONAL.match(str(node))
            if m is not None:
                yield from _raw(_parse(m.group(1), parser), parser, depth)
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name.lower()
        yield from _element(node, name, parser, depth)


def _element(tag: Tag, name: str, parser: Parser,
             depth: int) -> Iterator[tuple[str, str]]:
    def get(key: str) -> str | None:
        return _attr(tag, key)

    if name != "input" or (get("type") or "").strip().lower() == "image":
        for key, kind in _URL_ATTRS.get(name, ()):
            value = get(key)
            if value is not None:
                yield kind, value
    if name in _SRCSET_TAGS:
        value = get("srcset")
        if value is not None:
            yield from (("srcset", url) for url in srcset_urls(value))
    if name == "link" and not _LOAD_RELS.isdisjoint(
            (get("rel") or "").lower().split()):
        value = get("href")
        if value is not None:
            yield "link", value
        value = get("imagesrcset")
        if value is not None:
            yield from (("srcset", url) for url in srcset_urls(value))
    if name == "meta" and (get("http-equiv") or "").strip().lower() == "refresh":
        url = refresh_url(get("content") or "")
        if url is not None:
            yield "meta-refresh", url
    if name.startswith(("v:", "amp-")):
        value = get("src")
        if value is not None:
            yield "vml" if name.startswith("v:") else name, value
    value = get("background")
    if value is not None:
        yield "background", value
    value = get("style")
    if value is not None:
        yield from css_urls(value)
    if name == "style":
        yield from css_urls(_text(tag))
    if name == "iframe" and depth < _MAX_SRCDOC_DEPTH:
        value = get("srcdoc")
        if value is not None:
            yield from (("iframe-srcdoc", url) for _, url in
                        _raw(_parse(value, parser), parser, depth + 1))


def _base(soup: BeautifulSoup, parser: Parser) -> str | None:
    """The first ``<base href>`` (conditional comments included, as the scanner reads them)."""
    for node in soup.descendants:
        if isinstance(node, Tag) and node.name.lower() == "base" and node.get("href") is not None:
            return normalise(_attr(node, "href") or "")
        if isinstance(node, Comment):
            m = _CONDITIONAL.match(str(node))
            if m is not None:
                inner = _base(_parse(m.group(1), parser), parser)
                if inner is not None:
                    return inner
    return None


def loads(html: str, parser: Parser) -> list[Load]:
    """Every remote load of ``html`` as ``parser`` parses it, in document order."""
    soup = _parse(html, parser)
    base = _base(soup, parser)
    remote_base = base is not None and is_remote(base) is True
    out: list[Load] = []
    for kind, raw in _raw(soup, parser, 0):
        url = normalise(raw)
        # only an empty value loads nothing: a blank one (" ", "\x1c") is the base URL
        remote = is_remote(url) if url or not raw else None
        if remote is None and remote_base:
            assert base is not None
            try:
                url, remote = urljoin(base, url), True
            except ValueError:  # an unparsable base: nothing can be resolved
                remote = False
        if remote:
            out.append(Load(url, kind))
    return out


def remote_urls(html: str) -> dict[str, set[str]]:
    """The normalised remote URLs each parser finds, by parser name."""
    return {parser: {load.url for load in loads(html, parser)} for parser in PARSERS}
