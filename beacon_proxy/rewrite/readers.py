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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.htmlrefs import Entry
from beacon_proxy.rewrite.rescan import MAX_TEMPLATES, ScanCache, cut_of, diff_regions
from beacon_proxy.rewrite.rules import TrackerRules
from beacon_proxy.rewrite.stray import stray_urls, url_spans
from beacon_proxy.rewrite.wellformed import malformed

__all__ = ["ReaderChecks", "ReadersDiffer"]


@dataclass(frozen=True, slots=True)
class ReadersDiffer:
    """Why some reader reads a part otherwise than the precise path."""

    reason: str


@dataclass(frozen=True, slots=True)
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
            washing = None if regions is None else webmail.rewash(prior.washing, view, regions)
            if washing is not None and decoded == view and webmail.washed_as_is(view, charset):
                if prior.requoted and malformed(washing.washed.lower()) is not None:
                    return ReadersDiffer(_REQUOTED)
                if webmail.loads_more(webmail.reread(prior.read, washing), charset, mine,
                                      max_tags=self._max_tags, templates=self._scans):
                    return ReadersDiffer(_WASHED)
                return prior.strays
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
        strays = tuple(stray_urls(view, low, url_spans(entries, low)))
        if any(self._rules.match(url) for url in strays):
            return ReadersDiffer("a tracker's URL inside markup where browsers load nothing "
                                 "(other readers may)")
        if self._keep and washing is not None and washing.edits is not None and (
                washing.text == view):
            with self._lock:
                self._passed[key] = _Passed(view, lines, washing, read, strays,
                                            webmail.requoted(washing))
                self._passed.move_to_end(key)
                while len(self._passed) > self._keep:
                    self._passed.popitem(last=False)
        return strays


_WASHED: Final = "markup that webmail's washer (Roundcube) makes load more"
_REQUOTED: Final = ("markup that webmail's washer (Roundcube) rewrites into markup its "
                    "parsers cut otherwise")
