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

import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Final

from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.htmlrefs import Entry, Span
from beacon_proxy.rewrite.rescan import (
    MAX_TEMPLATES,
    Rescanned,
    ScanCache,
    _common_prefix_at,
    _common_suffix,
    cut_of,
    diff_regions,
)
from beacon_proxy.rewrite.rules import TrackerRules
from beacon_proxy.rewrite.stray import stray_urls, url_spans
from beacon_proxy.rewrite.wellformed import in_text, malformed, quoted_values, token_starts

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
    spans: list[Span]  # where the browser's reading loads (stray.url_spans)
    # The view is its text as the washer gets it (webmail.washed_as_is): a copy that
    # differs in a few regions is checked there only (webmail.washed_as_is_near).
    as_is: bool
    # The view lower-cased and its tokens (wellformed.token_starts), made when a copy
    # first differs from it inside a tag (copies may check in threads: a race makes two
    # equal ones).
    tokens: tuple[bytes, array[int]] | None = None
    # strays_kept(): ``spans`` indexed, and the stray URLs of the tags copies changed by
    # their index among the tokens (None: a span crosses the tag's ends)
    span_index: _SpanIndex | None = None
    tag_strays: dict[int, list[str] | None] = field(default_factory=dict)

    def kinds(self, regions: Sequence[_Region]) -> tuple[set[int], dict[int, int]]:
        """Which of ``regions`` lie in text (:func:`~.wellformed.in_text`), and which
        inside a quoted value of a tag the washer reads by nothing but its name
        (:data:`_PLAIN_TAGS`; not a ``style``: CSS), each with the index of its tag
        among the tokens."""
        if self.tokens is None:
            low = self.view.lower()
            starts = token_starts(low)
            assert starts is not None  # (it passed malformed())
            self.tokens = (low, starts)
        low, starts = self.tokens
        stretches = [(a0, a1) for a0, a1, _, _ in regions]
        texts = {index for index, text in enumerate(in_text(low, starts, stretches)) if text}
        values = {index: bisect_right(starts, a0) - 1
                  for index, ((a0, _), value) in enumerate(zip(
                      stretches, quoted_values(low, starts, stretches), strict=True))
                  if value is not None and value[0] in _PLAIN_TAGS and value[1] != b"style"}
        return texts, values

    def strays_kept(self, view: bytes, low: bytes, spans: Sequence[Span],
                    regions: Sequence[_Region], values: dict[int, int]) -> bool:
        """Whether a copy (``view``, ``low``, ``spans``: its url_spans) whose ``regions``
        in ``values`` lie inside values has this part's stray URLs: each tag they change
        finds the same ones in both.  A start tag's stray URLs are its own: every
        pattern of the search stops at "<" and ">", and the tag's "<" is the last before
        any of its URLs (:func:`~beacon_proxy.rewrite.stray.stray_urls`).  This part's
        side of each tag is searched once and kept (:attr:`tag_strays`): a campaign's
        copies change the same tags."""
        assert self.tokens is not None  # (kinds() made them)
        mine, starts = self.tokens
        tokens = sorted(set(values.values()))
        if len(tokens) > max(_STRAY_TAGS, len(view) // _STRAY_TAG_BYTES):
            return False  # (searching the whole copy costs less)
        ends = [a1 for _, a1, _, _ in regions]
        shifts = list(accumulate((b1 - b0) - (a1 - a0) for a0, a1, b0, b1 in regions))

        def moved(x: int, end: bool) -> int:  # where the template's offset x stands in
            k = (bisect_left if end else bisect_right)(ends, x)  # the copy (what is put
            return x + (shifts[k - 1] if k else 0)  # in at a tag's end: after it)

        if self.span_index is None:
            self.span_index = _SpanIndex(self.spans)
        was_index, now_index, kept = self.span_index, _SpanIndex(spans), self.tag_strays
        for token in tokens:
            a, b = starts[token], starts[token + 1]
            was = kept.get(token, _UNKNOWN)
            if was is _UNKNOWN:
                covered = was_index.within(a, b)
                was = None if covered is None else stray_urls(self.view[a:b], mine[a:b],
                                                              covered)
                if len(kept) >= _KEPT_TAGS:
                    kept.clear()
                kept[token] = was
            start, end = moved(a, False), moved(b, True)
            now = now_index.within(start, end)
            if was is None or now is None or was != stray_urls(
                    view[start:end], low[start:end], now):
                return False
        return True


class _SpanIndex:
    """Spans sorted by start (:func:`~beacon_proxy.rewrite.stray.url_spans`), for the spans
    inside a stretch found by bisection: the furthest end among the spans up to each."""

    __slots__ = ("_reach", "_spans", "_starts")

    def __init__(self, spans: Sequence[Span]) -> None:
        self._spans = spans
        self._starts = [a for a, _ in spans]
        self._reach = list(accumulate((b for _, b in spans), max))

    def within(self, start: int, end: int) -> list[Span] | None:
        """The spans that overlap ``[start, end)``, from ``start``; None when one crosses an
        end.

        >>> _SpanIndex([(0, 4), (6, 9), (7, 8), (12, 20)]).within(5, 10)
        [(1, 4), (2, 3)]
        >>> _SpanIndex([(0, 7), (8, 9)]).within(5, 10) is None
        True
        >>> _SpanIndex([(6, 9), (8, 12)]).within(5, 10) is None
        True
        """
        spans = self._spans
        i = bisect_left(self._starts, start)
        if i and self._reach[i - 1] > start:
            return None  # (a span from before the stretch reaches into it)
        out = []
        while i < len(spans) and spans[i][0] < end:
            a, b = spans[i]
            if b > end:
                return None
            if b > start:
                out.append((a - start, b - start))
            i += 1
        return out


def _between_quotes(old: bytes, new: bytes, regions: Sequence[_Region]) -> list[_Region]:
    """``regions`` (of ``old`` and ``new``), each cut at the quotes both versions of it
    hold alike into the stretches between them that differ: a line with two changed
    values (``href="...?u=TOKEN" data-id="TOKEN"``, two links on one line) is then two
    regions inside values, not one from the first to the last.

    >>> _between_quotes(b'<a href="x?u=1" id="1">', b'<a href="x?u=22" id="22">',
    ...                 [(13, 21, 13, 23)])
    [(13, 14, 13, 15), (20, 21, 21, 23)]
    >>> _between_quotes(b'<a href="x?u=1" id="1">', b'<a href="x?u=2" id=2>', [(13, 21, 13, 19)])
    [(13, 21, 13, 19)]
    """
    out: list[_Region] = []
    for a0, a1, b0, b1 in regions:
        was, now = _QUOTES.split(old[a0:a1]), _QUOTES.split(new[b0:b1])
        if len(was) == 1 or len(was) != len(now) or was[1::2] != now[1::2]:
            out.append((a0, a1, b0, b1))
            continue
        for piece, (x, y) in enumerate(zip(was, now, strict=True)):
            if piece % 2 == 0 and x != y:
                head = _common_prefix_at(x, 0, memoryview(y), 0)
                tail = _common_suffix(x[head:], y[head:], min(len(x), len(y)) - head)
                out.append((a0 + head, a0 + len(x) - tail, b0 + head, b0 + len(y) - tail))
            a0, b0 = a0 + len(x), b0 + len(y)
    return out


_QUOTES: Final = re.compile(rb"([\"'])")


#: At most this many changed tags are searched for stray URLs apart (a small search
#: each), or one per this many bytes of the view where that is more (a tag's search
#: costs about what the whole view's costs per KB); a copy with more is searched whole.
_STRAY_TAGS: Final = 8
_STRAY_TAG_BYTES: Final = 1024
#: The earlier copy's stray URLs of at most this many tags are kept (then forgotten).
_KEPT_TAGS: Final = 4096
_UNKNOWN: Final[list[str]] = []  # (a tag not searched yet: compared by identity)
_Region = tuple[int, int, int, int]


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

    def check(self, decoded: bytes, view: bytes, charset: str, entries: Sequence[Entry],
              rescanned: Rescanned | None = None) -> ReadersDiffer | tuple[str, ...]:
        """Why other readers read the part otherwise (``decoded``: its text in
        ``charset``; ``view``: the scan's view; ``entries``: the scan's; ``rescanned``: the
        scan, when it was a rescan of ``view``), or its stray URLs when they do not."""
        mine = webmail.loaded(entries)
        template = None if rescanned is None else rescanned.template
        # (a rescan's template was found by cut_of(view): its cut and number of lines)
        cut, lines = cut_of(view) if template is None else (template.cut, template.lines)
        key = (charset, cut, lines)
        with self._lock:
            prior = self._passed.get(key)
        low = None if rescanned is None else rescanned.low  # (view.lower(), made already)
        if prior is not None:
            regions: list[_Region] | None
            if rescanned is not None and template is not None and template.view is prior.view:
                # The scan diffed the copy against this very view: diff_regions() would
                # find the same regions again.
                regions = rescanned.regions
            else:
                regions = diff_regions(prior.view, cut, prior.lines, view, lines)
            values: dict[int, int] = {}
            washing = None
            if regions:
                regions = _between_quotes(prior.view, view, regions)
                texts, values = prior.kinds(regions)
                washing = webmail.rewash(prior.washing, view, regions, texts, values)
            if washing is not None and decoded == view and (
                    webmail.washed_as_is_near(view, charset, regions or ())
                    if prior.as_is
                    else webmail.washed_as_is(view, charset)):
                if prior.requoted and malformed(washing.washed.lower()) is not None:
                    return ReadersDiffer(_REQUOTED)
                if webmail.loads_more(webmail.reread(prior.read, washing), charset, mine,
                                      max_tags=self._max_tags, templates=self._scans,
                                      earlier=(prior.washing.washed, washing.washed,
                                               washing.changed)):
                    return ReadersDiffer(_WASHED)
                if not values:
                    return prior.strays
                # A value changed: its URLs may be stray ones now (the markup is as
                # well-formed: a quoted value without quotes or "<" ends where it did).
                low = view.lower() if low is None else low
                spans = url_spans(entries, low)
                assert regions is not None  # (values are some of them)
                if prior.strays_kept(view, low, spans, regions, values):
                    return prior.strays
                return self._strays(view, low, spans)
        low = view.lower() if low is None else low
        unlike = malformed(low)
        if unlike is not None:
            return ReadersDiffer(f"markup other readers cut into other tags ({unlike})")
        as_is = decoded == view and webmail.washed_as_is(view, charset)
        washing = webmail.wash(view if as_is else webmail.text_of(decoded, charset))
        if washing is not None and malformed(washing.low or washing.washed.lower()):
            return ReadersDiffer(_REQUOTED)
        read = None if washing is None else webmail.readings(washing)
        if read is None or webmail.loads_more(read, charset, mine, max_tags=self._max_tags,
                                              templates=self._scans):
            return ReadersDiffer(_WASHED)
        spans = url_spans(entries, low)
        strays = self._strays(view, low, spans)
        if isinstance(strays, ReadersDiffer):
            return strays
        if self._keep and washing is not None and washing.edits is not None and (
                washing.text == view):
            with self._lock:
                self._passed[key] = _Passed(view, lines, washing, read, strays,
                                            webmail.requoted(washing), spans, as_is)
                self._passed.move_to_end(key)
                while len(self._passed) > self._keep:
                    self._passed.popitem(last=False)
        return strays

    def _strays(self, view: bytes, low: bytes, spans: Sequence[Span]
                ) -> ReadersDiffer | tuple[str, ...]:
        strays = tuple(stray_urls(view, low, spans))
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
