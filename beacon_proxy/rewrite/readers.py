"""Other readers of an HTML part: whether the precise path's reading holds for them.

The precise path reads a part as a browser does.  Three checks stand for the readers
that read it otherwise (session 18):

1. :mod:`~beacon_proxy.rewrite.wellformed`: markup every reader cuts into the same tags;
2. :mod:`~beacon_proxy.rewrite.webmail`: what Roundcube's washer rewrites it into is such
   markup too (straightened curly quotes and the base replacer's quotes can open a value
   that swallows text: its two parsers then cut it otherwise, session 18's fourth
   attack), and loads nothing the browser's reading does not;
3. :mod:`~beacon_proxy.rewrite.stray`: no URL a tracker rule names stands inside a tag
   where the browser loads nothing (the part's stray URLs are kept: a copy to a
   recipient one of them names takes the fallback).

A part that fails one is not read precisely (every refused copy takes the fallback).

The checks cost more than the scan itself, and a campaign sends one copy per recipient,
a few bytes apart.  So a part that passed is kept (the last per charset, cut and number
of lines, as :class:`~beacon_proxy.rewrite.rescan.ScanCache` keeps scans), and the next
copy whose differences from it are all plain text between a ``>`` and a ``<``
(:data:`~beacon_proxy.rewrite.webmail._INERT`: no markup, quote, reference, escape,
slash, colon or line break) is checked from it: such text changes no tag, so the markup
is as well-formed and its stray URLs are the same; the washed text is the earlier one
with the differences put in (:func:`~beacon_proxy.rewrite.webmail.rewash`), scanned
again where it differs from the earlier one's scan.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.htmlrefs import Entry
from beacon_proxy.rewrite.rescan import MAX_TEMPLATES, ScanCache, cut_of, diff_regions
from beacon_proxy.rewrite.rules import TrackerRules
from beacon_proxy.rewrite.stray import stray_urls, url_spans
from beacon_proxy.rewrite.wellformed import malformed, quoted_values, token_starts

__all__ = ["ReaderChecks", "ReadersDiffer"]


@dataclass(frozen=True, slots=True)
class ReadersDiffer:
    """Why some reader reads a part otherwise than the precise path."""

    reason: str


@dataclass(slots=True)
class _Passed:
    """A part's view that passed the checks, washed, and its stray URLs."""

    view: bytes
    lines: int
    washing: webmail.Washing
    read: webmail.Readings
    strays: tuple[str, ...]
    # The washer put quotes in (curly ones straightened): plain text may then stand in a
    # tag of the washed text, so a copy's washed text is checked for its markup again.
    requoted: bool
    # The view lower-cased and its tokens (wellformed.token_starts), made when a copy
    # first differs from it inside a tag (copies may check in threads: a race makes two
    # equal ones).
    tokens: tuple[bytes, array[int]] | None = None

    def in_values(self, regions: Sequence[tuple[int, int, int, int]]) -> frozenset[int]:
        """Which of ``regions`` lie inside a quoted value of a tag the washer reads by
        nothing but its name (:data:`_PLAIN_TAGS`; not a ``style``: CSS)."""
        if self.tokens is None:
            low = self.view.lower()
            starts = token_starts(low)
            assert starts is not None  # (it passed malformed())
            self.tokens = (low, starts)
        low, starts = self.tokens
        return frozenset(
            index for index, value in enumerate(quoted_values(
                low, starts, [(a0, a1) for a0, a1, _, _ in regions]))
            if value is not None and value[0] in _PLAIN_TAGS and value[1] != b"style")


class ReaderChecks:
    """The checks, with the last part that passed per (charset, cut, lines)."""

    def __init__(self, rules: TrackerRules, max_tags: int, templates: int = MAX_TEMPLATES
                 ) -> None:
        self._rules, self._max_tags = rules, max_tags
        self._keep = templates
        # The washed texts' scans, so that a copy's washed text is scanned where it differs.
        self._scans = ScanCache(templates) if templates else None
        self._passed: OrderedDict[tuple[str, bytes, int], _Passed] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, decoded: bytes, view: bytes, charset: str, entries: Sequence[Entry]
              ) -> ReadersDiffer | tuple[str, ...]:
        """Why other readers read the part otherwise (``decoded``: its text in
        ``charset``; ``view``: the scan's view; ``entries``: the scan's), or its stray
        URLs when they do not."""
        mine = webmail.loaded(entries)
        cut, lines = cut_of(view)
        key = (charset, cut, lines)
        with self._lock:
            prior = self._passed.get(key)
        if prior is not None:
            regions = diff_regions(prior.view, cut, prior.lines, view, lines)
            values: frozenset[int] = frozenset()
            washing = None if regions is None else webmail.rewash(prior.washing, view, regions)
            if washing is None and regions:  # (not all in text: some in values?)
                values = prior.in_values(regions)
                if values:
                    washing = webmail.rewash(prior.washing, view, regions, values)
            if washing is not None and decoded == view and webmail.washed_as_is(view, charset):
                if prior.requoted and malformed(washing.washed.lower()) is not None:
                    return ReadersDiffer(_REQUOTED)
                if webmail.loads_more(webmail.reread(prior.read, washing), charset, mine,
                                      max_tags=self._max_tags, templates=self._scans):
                    return ReadersDiffer(_WASHED)
                if not values:
                    return prior.strays
                # A value changed: its URLs may be stray ones now (the markup is as
                # well-formed: a quoted value without quotes or "<" ends where it did).
                return self._strays(view, view.lower(), entries)
        low = view.lower()
        unlike = malformed(low)
        if unlike is not None:
            return ReadersDiffer(f"markup other readers cut into other tags ({unlike})")
        washing = webmail.wash(webmail.text_of(decoded, charset))
        if washing is not None and malformed(washing.low or washing.washed.lower()):
            return ReadersDiffer(_REQUOTED)
        read = None if washing is None else webmail.readings(washing)
        if read is None or webmail.loads_more(read, charset, mine, max_tags=self._max_tags,
                                              templates=self._scans):
            return ReadersDiffer(_WASHED)
        strays = self._strays(view, low, entries)
        if isinstance(strays, ReadersDiffer):
            return strays
        if self._keep and washing is not None and washing.edits is not None and (
                washing.text == view):
            with self._lock:
                self._passed[key] = _Passed(view, lines, washing, read, strays,
                                            webmail.requoted(washing))
                self._passed.move_to_end(key)
                while len(self._passed) > self._keep:
                    self._passed.popitem(last=False)
        return strays


    def _strays(self, view: bytes, low: bytes, entries: Sequence[Entry]
                ) -> ReadersDiffer | tuple[str, ...]:
        strays = tuple(stray_urls(view, low, url_spans(entries, low)))
        if any(self._rules.match(url) for url in strays):
            return ReadersDiffer("a tracker's URL inside markup where browsers load nothing "
                                 "(other readers may)")
        return strays


#: Tags whose names no step of the washer reads (:func:`~.webmail.rewash`): where a
#: campaign's recipient-specific tokens and names stand in values (links, images,
#: cells, boxes).
_PLAIN_TAGS: Final = frozenset({
    b"a", b"img", b"area", b"table", b"tr", b"td", b"th", b"div", b"span", b"p", b"font",
    b"center", b"b", b"i", b"u", b"em", b"strong", b"h1", b"h2", b"h3", b"h4", b"h5",
    b"h6", b"button", b"section", b"article"})
_WASHED: Final = "markup that webmail's washer (Roundcube) makes load more"
_REQUOTED: Final = ("markup that webmail's washer (Roundcube) rewrites into markup its "
                    "parsers cut otherwise")
