"""URLs inside markup that no browser loads or follows from where they stand.

The precise path removes what a browser loads.  Other readers parse the same bytes
otherwise, and their differences have no end: Roundcube's washer parses with libxml2
or Masterminds' HTML5 parser, which keep a tag cut off at the end of the part, open a
new tag at a ``<`` inside one, recover an attribute a browser reads as a name, read
``<!-`` as text, and its filters re-parse CSS and decode what a browser leaves alone
(session 18's attack found sixteen such differences).  Rather than model each reader,
the precise path checks what is left for them to find: a URL that stands inside markup
- between a ``<`` and the next ``>``: a tag, a comment, a declaration, a tag cut off at
the end - where the browser's reading has no load and that is no ``href`` (links are
followed, never loaded: the scanner does not list them).

Such a *stray* URL decides a refused copy when a tracker rule names it (the part is
not read precisely: every refused copy takes the fallback, which neutralises every
load in any reading) or when it names the recipient (that recipient's copy takes the
fallback: :meth:`~beacon_proxy.rewrite.engine.Engine.render`'s caller,
:func:`~beacon_proxy.rewrite.copies.decide`).  A URL in text (a newsletter's "view it
online: https://..." after a ``>``) is no concern: no reader loads text.

>>> view = b'<p title="https://t.example/p?u=1">x</p> https://shop.example/ <img src=//a.example/i>'
>>> stray_urls(view, view.lower(), [(62, 84)])
['https://t.example/p?u=1']
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import unquote

from beacon_proxy.rewrite.htmlattr import html_unescape
from beacon_proxy.rewrite.htmlrefs import Entry, PendingImg, Span

__all__ = ["stray_urls", "url_spans"]

#: Something a reader may take for a remote URL (in lower-cased text): the ":" of a
#: special scheme and what follows it (slashes, backslashes or control characters
#: between, as browsers and Roundcube skip them: ``https:t.example`` is
#: ``https://t.example``); two slashes and a host; two backslashes, or one of each, and
#: a host.  Three patterns with a literal start each, so that the search skips in C.
_URL_REST: Final = rb"[^\s\"'<>()`\\]++"  # (a host may start with anything: "@", "%74")
_COLON: Final = re.compile(
    rb":(?:(?<=https:)|(?<=http:)|(?<=ftp:)|(?<=wss:)|(?<=ws:))[\\/\x00-\x20]*+" + _URL_REST)
_SLASHES: Final = re.compile(rb"//" + _URL_REST)
_BACKSLASHES: Final = re.compile(rb"(?:\\[\\/]|/\\)" + _URL_REST)
#: A link's URL (in lower-cased text): an ``href`` attribute's value, which no reader
#: loads (links are followed, not loaded).
_LINK: Final = re.compile(
    rb"(href[\t\n\f\r ]*=[\t\n\f\r ]*[\"']?)(?:[a-z][a-z0-9+.-]*:)?[\\/\x00-\x20]*+" + _URL_REST)
#: The characters of a URL's start spelled as character references (lower-cased).
_ENTITIES: Final = tuple((re.compile(pattern), char) for pattern, char in (
    (rb"&(?:#0*47(?![0-9])|#x0*2f(?![0-9a-f])|sol);?", b"/"),
    (rb"&(?:#0*58(?![0-9])|#x0*3a(?![0-9a-f])|colon);?", b":"),
    (rb"&(?:#0*92(?![0-9])|#x0*5c(?![0-9a-f])|bsol);?", b"\\"),
    # tabs and line breaks, which URL parsers drop ("http:/&#9;/host" is "http://host")
    (rb"&(?:#0*(?:9|10|13)(?![0-9])|#x0*[9ad](?![0-9a-f])|tab|newline);?", b"")))
_SCHEME: Final = re.compile(r":?[\\/\x00-\x20]*")


def url_spans(entries: Iterable[Entry], low: bytes) -> list[Span]:
    """Where the browser's reading loads a remote URL, in order: a remote reference's
    URL (the precise path strips it when it tracks), a plain ``<img>`` 's whole tag (the
    fast path read it: its attributes are well-formed, every reader reads them alike).
    A URL the browser does not load (relative, a fragment: ``url('#a), url(https://...')``
    is one) is no cover: another reader may read a remote one in it."""
    return sorted((entry.start, low.find(b">", entry.start) % (len(low) + 1))
                  if isinstance(entry, PendingImg) else entry.url_span
                  for entry in entries if entry.remote)


def stray_urls(view: bytes, low: bytes, spans: Sequence[Span]) -> list[str]:
    """The URLs inside tags in ``view`` (``low``: lower-cased) that start in none of
    ``spans`` (:func:`url_spans`) and are no link, each as ``https://`` and what follows
    its scheme, entity references decoded.

    Inside a tag: the last ``<`` before it, with no ``>`` between, opens a tag or a
    declaration (not a comment: what a comment holds as text no reader loads, however
    it reads the comment).  The covered spans are blanked and the links deleted first,
    so that the search meets only what is left (a few URLs in a newsletter)."""
    if spans:
        masked = bytearray(low)
        for start, end in spans:
            masked[start:end] = b" " * (end - start)
        text = bytes(masked)
    else:
        text = low
    if b"&" in text:  # "https:&#47;&#47;" is "https://" to a parser that decodes it
        for entity, char in _ENTITIES:
            text = entity.sub(char.replace(b"\\", b"\\\\"), text)  # (a template)
    text = _LINK.sub(rb"\1", text)
    found = [m.span() for m in _COLON.finditer(text)]
    found += [m.span() for m in _SLASHES.finditer(text)]
    if b"\\" in text:
        found += [m.span() for m in _BACKSLASHES.finditer(text)]
    found.sort()
    out: list[str] = []
    until = last = 0
    lt = -1  # the last "<" before ``last`` with no ">" after it (-1: none)
    for at, end in found:
        if at < until:  # inside the URL before (the "//" after "https:")
            continue
        until = end
        gt = text.rfind(b">", last, at)  # (each stretch searched once: linear)
        seen = text.rfind(b"<", max(gt, last), at)
        lt = seen if gt >= 0 or seen >= 0 else lt
        last = at
        if lt < 0 or text.startswith(b"<!--", lt):
            continue
        url = text[at:end].decode("utf-8", "replace")
        scheme = _SCHEME.match(url)
        assert scheme is not None  # (it matches "")
        out.append(_as_browsers_read(html_unescape(url[scheme.end() :])))
    return out


def _as_browsers_read(rest: str) -> str:
    """``https://`` and ``rest`` (what follows a URL's scheme and slashes), its host as a
    browser reads it: user information dropped, percent-escapes decoded, full-width and
    other compatibility forms folded (``%74.example``, ``@t.example`` and
    ``\\uff54.example`` (full-width) are all ``t.example``), so that a tracker rule finds it.

    >>> _as_browsers_read("u@%74.Example/p?q=%40")
    'https://t.example/p?q=%40'
    """
    cut = min((i for i in (rest.find(c) for c in "/?#\\") if i >= 0), default=len(rest))
    host = unicodedata.normalize("NFKC", unquote(rest[:cut].rpartition("@")[2])).lower()
    return "https://" + host + rest[cut:]
