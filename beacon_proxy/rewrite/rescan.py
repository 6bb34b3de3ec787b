"""A campaign's further copies: scan only what differs from a copy already scanned.

A newsletter reaches the relay as one message per recipient, and the copies of
one campaign differ in a few places: a name, a pixel's id, a link's token.  The
full scan (:mod:`~beacon_proxy.rewrite.html`) costs about a millisecond per
70 KB; most of it would find again what the previous copy's scan found.  So a
full scan leaves a :class:`ScanTemplate` behind - its view, its findings and a
*mark* at every construct it handled (where it starts, and the scan's state
there: :data:`~beacon_proxy.rewrite.html.Mark`) - and a further copy is scanned
like this:

1. **Diff.** Both views are cut into "lines": at line feeds, or, in a view whose
   lines are longer than :data:`LONG_LINES` bytes on average (HTML minified into
   a few lines, as MJML and many ESPs send it), at each ``>`` when that cuts it
   finer (:func:`cut_of`, a function of the view alone).  A copy cut otherwise,
   or into another number of lines, is scanned in full.  Line i of the copy is
   compared with line i of the template - the equal ones skipped at memcmp speed
   (:meth:`ScanTemplate.regions`) - and each changed line is narrowed to the
   bytes between its common prefix and suffix: the *regions*.  What follows
   rests only on this: every byte outside the regions is the template's, at
   its offset shifted by what the regions before it added or removed, and a
   cut byte (the same in both) lies between any two regions.  Where the cuts
   fall - a line feed or a ``>``, inside a tag, a comment, a quoted value or
   raw text - does not matter: the scan does not stop at them.  A caller that knows
   where the copy differs (the readers' washed text: ``webmail.rewash`` says where it
   put each difference) gives those regions instead; they are taken once checked to
   hold the same (:func:`checked_regions`: the bytes around them equal, compared in
   place, no cut byte in one, two with no cut byte between them merged), else diffed.
2. **Resume before each region** at the last mark that starts before it.  The
   bytes before a mark are the template's, and no token that ends before a
   mark has looked past the mark's own first byte - the scanner's patterns look
   ahead one byte at most past a token's end (no optional tail reaches into the
   next construct: ``html.CONDITIONAL_OPEN``), with one exception: a quoted
   attribute value that is never closed.  Its search for the closing quote runs
   to the end of the document, and the lenient patterns then read the tag
   another way (``<div title='x>`` ends at that ``>``); a quote that a later
   region adds would close it.  Such a search starts after the template's last
   quote of its kind, so a copy with a quote in a region past the template's
   last quote of that kind is scanned in full.  (A search that found its quote
   in a region made its tag reach into the region: that tag is scanned again.)
   Otherwise a full scan of the copy would reach the mark in the same state,
   and the scan of the copy resumes there.
3. **Re-synchronise after it**: the resumed scan stops at the first construct
   at or past each later mark of the template (in the unchanged stretch after
   the region, at the copy's offsets); where it stops *exactly at* a mark with
   the same open conditional comments, the copy is in the template's state
   again, and until the next region it would find exactly what the template
   found, at offsets shifted by the bytes the regions added or removed.  Those
   findings are copied, shifted; the scan stops otherwise only at the end.
4. Everything after the scan (``<picture>`` and media boxes, hidden ancestors, sorting)
   runs on the copy's whole result, as after a full scan.

The result is the full scan's, entry for entry (``tests/rewrite/test_rescan.py``
checks it on random edits of real templates, as formatted and minified, hostile
markup included); where
the argument above does not hold it gives up and the copy is scanned in full:
a remote ``<base href>`` (relative URLs depend on it), ``<amp-analytics>``
(its end tag decides what later scripts are), a scan that ran out of budget or
bytes, more than a quarter of the lines changed, a quote that may close a value
the template left open (step 2).  A minified copy that adds or removes a ``>``
(another number of lines) is scanned in full too.

:class:`ScanCache` keeps the last templates per (charset, cut, number of
lines), at most :data:`MAX_TEMPLATES` and :data:`MAX_TEMPLATE_BYTES` in all; it
holds views of messages (content, never addresses as such: the relay's process
memory), and nothing is written anywhere.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Any, Final, TypeVar

from beacon_proxy.rewrite.hiding import hiding_marks, rule_marks
from beacon_proxy.rewrite.html import Mark, _Scan
from beacon_proxy.rewrite.htmlattr import Span
from beacon_proxy.rewrite.htmlrefs import Entry, PendingImg
from beacon_proxy.rewrite.transfer import qp_two_readings
from beacon_proxy.rewrite.unmodelled import noscript_spans

__all__ = [
    "LONG_LINES",
    "MAX_TEMPLATES",
    "MAX_TEMPLATE_BYTES",
    "QpChecks",
    "Rescanned",
    "ScanCache",
    "ScanTemplate",
    "checked_regions",
    "cut_of",
    "diff_regions",
    "reach_index",
    "reaches",
    "rescan",
]

MAX_TEMPLATES = 32
MAX_TEMPLATE_BYTES = 64 << 20  # kept in all, as _size() counts them
_WEIGHT = 4  # a template holds its view, the lower-cased view, ... (bytes per view byte)
#: ... and its marks and entries: bytes per mark and per entry, measured (tracemalloc: a
#: mark ~340 bytes with its position, an entry up to ~300).  A construct-dense view
#: holds far more in marks than in bytes: 500 KB of ``<!x>`` held 42 MB, counted as
#: 2 MB when only views were (a sender's 32 such templates: 1.3 GB per worker).
_PER_MARK = 400
_PER_ENTRY = 400
MAX_VIEW = 4 << 20  # larger parts are not kept as templates
_MAX_CHANGED = 4  # at most 1 / _MAX_CHANGED of the lines may differ
#: ... and at most one region per this many bytes of the view: a region costs the checks
#: of every reader tens of microseconds in Python, a full scan ~0.1 us a byte, so a copy
#: changed every few bytes (a text run of 3-byte lines, every 4th changed: a region per
#: 16 bytes) took 20 times its full scan (the adversarial review of session 24).  The
#: benchmark newsletter's 30 personalised links are a region per 2 KB.  The first
#: _FREE_REGIONS regions are allowed in any view (a few milliseconds at most).
_BYTES_PER_REGION = 256
_FREE_REGIONS = 64
#: A view whose lines are longer than this on average (HTML minified into a few lines) is
#: cut into lines at each ">" instead of at line feeds, when that cuts it finer (cut_of).
LONG_LINES = 256
_GALLOP = 1024  # the first stretch _common_prefix_at() compares at once
_XOR_BYTES = 256  # ... and the stretch it reads as numbers (int.from_bytes: ~0.2 us)

_new = tuple.__new__
#: What :func:`~.unmodelled.unmodelled_markup` looks for, and how far it reads: a tag name
#: (10 bytes with its delimiter), a <meta> 's charset declaration (one that starts within
#: the 512 bytes after "<meta", read as far as _DECLARATION reads it: its blanks have no
#: limit), a <noscript> 's content to its "</noscript" (ScanTemplate.noscripts).
_UNMODELLED_TAG = re.compile(rb"<(?:svg|select|math|frameset|meta|noscript)")
_TAG_REACH = 10
_COMMENT_REACH = len(b"--!>")
_META_GAP = len(b"<meta") + 512 + len(b"charset")
_DECLARATION = re.compile(rb"charset[\t\n\f\r ]*+(?:=[\t\n\f\r \"']*+[-\w.:]{0,40})?")
_BLANKS = b"\t\n\f\r "
#: What every hiding mark (:func:`~.hiding.hiding_marks`) holds or follows: a ``hidden``
#: attribute, a declaration's value ``none``, ``hidden`` or ``collapse``, the name
#: ``opacity`` or ``overflow``, an escape, a comment, a character reference.
_HIDING_WORDS = (b"hidden", b"none", b"collapse", b"opacity", b"overflow", b"\\", b"/*",
                 b"&#", b"&colon;", b"&tab;", b"&newline;")
#: Any of them, searched in place (a region of a copy whose every link carries a token:
#: one search a region instead of a slice and eleven substring tests).
_HIDING_WORD: Final = re.compile(b"|".join(map(re.escape, _HIDING_WORDS)))
_F = TypeVar("_F")
#: A changed region: (start, end) in the template's view, (start, end) in the copy's.
_Region = tuple[int, int, int, int]


@dataclass(slots=True, eq=False)
class ScanTemplate:
    """What a full scan of one view leaves for the next copies of its campaign."""

    view: bytes
    charset: str
    max_tags: int
    cut: bytes  # where the view is cut into lines (cut_of): b"\n", or b">" when minified
    lines: int  # how many: view.count(cut) + 1
    low: bytes  # the view lower-cased (the scan's)
    refs: list[Entry]  # in the order the scan found them (before sorting)
    opaque: list[Span]
    styles: list[Span]
    marks: list[Mark]  # a start mark at 0, the scan's marks, an end mark at len(view)
    positions: list[int]  # of the marks
    ordered: bool
    sources: bool
    metas: list[int]  # where each "<meta" starts (a charset declaration may follow)
    reaches: list[int]  # how far unmodelled_markup() reads from metas[: i + 1], at most
    quotes: tuple[int, int]  # where the last '"' and the last "'" are (-1: none)
    hidden: list[Span]  # hidden_ranges() of the view
    reads: list[Span]  # what it depends on (hiding.hidden_ranges), ends included
    declarations: list[int]  # where hidden_ranges() found a hiding mark
    rule_words: tuple[bytes, ...]  # what its style blocks' hiding rules are searched by
    # Each <noscript> to the end of its "</noscript" (unmodelled.noscript_spans: in order,
    # apart): a region touching one may change what unmodelled_markup() says of it.
    noscripts: list[Span]
    # Each "<!--" the scan read as markup (an Outlook conditional comment) to where a
    # browser ends its comment (_Scan.comment_spans: in order, apart): a copy changed near
    # one is scanned from its "<!--" (rescan()).
    comments: list[Span]
    # The caller's findings for the finished entries, by index (ScanCache.classified).
    findings: dict[int, Any] | None = None
    # ``reads`` sorted by start, with the furthest end up to each (reads_touched(); made
    # on first need: most templates are never asked).
    read_index: tuple[list[int], list[int]] | None = None

    @classmethod
    def of(cls, scan: _Scan, marks: list[Mark], max_tags: int,
           cut: tuple[bytes, int] | None = None) -> ScanTemplate | None:
        """The template a full, finished scan (run with ``marks`` and ``hidden_reads``
        recording) leaves, or None when a copy could not resume from it (see the module
        docstring).  ``cut``: ``cut_of(scan.view)``, when the caller has it."""
        if (scan.truncated or scan.base is not None or scan.analytics_end >= 0 or scan.depth
                or scan.deep
                or not scan.fast or scan.n > MAX_VIEW or scan.hidden is None
                or scan.hidden_reads is None or scan.hidden_declarations is None
                or scan.hidden_words is None):
            return None
        at_byte, lines = cut_of(scan.view) if cut is None else cut
        start: Mark = (0, 0, max_tags, (0, 0, ()))
        end: Mark = (scan.n, len(scan.refs), scan.budget,
                     (len(scan.opaque), len(scan.styles), tuple(scan.cond)))
        every = [start, *marks, end]
        metas, at, low = [], scan.low.find(b"<meta"), scan.low
        while at >= 0:
            metas.append(at)
            at = low.find(b"<meta", at + 1)
        return cls(scan.view, scan.charset, max_tags, at_byte, lines, low,
                   scan.refs, scan.opaque, scan.styles, every, list(map(itemgetter(0), every)),
                   scan.ordered, scan.sources, metas, _reaches(low, metas),
                   (scan.view.rfind(b'"'), scan.view.rfind(b"'")), scan.hidden,
                   scan.hidden_reads, scan.hidden_declarations, tuple(scan.hidden_words),
                   noscript_spans(low) if b"<noscript" in low else [], scan.comment_spans)

    def regions(self, view: bytes, lines: int) -> list[_Region] | None:
        """Where ``view`` (a copy's, cut into ``lines`` lines at the template's cut byte)
        differs from the template (:func:`diff_regions`), or None when too many lines do."""
        return diff_regions(self.view, self.cut, self.lines, view, lines)

    def reads_touched(self, regions: Sequence[_Region]) -> bool:
        """Whether a region touches, or borders, a stretch that hidden_ranges() read for
        the template (``reads``, ends included).

        A bisection per region over the reads sorted by start, with the furthest end
        among those up to each: a region ``a0:a1`` touches one exactly when some read
        starting at or before ``a1 + 1`` ends at or after ``a0 - 1``.  Checking every
        region against every read cost regions x reads: a sender's template of thousands
        of hidden elements (a few reads each) and a copy changing the text after every
        fifth one took 1.7 s for 376 KB (a full scan: 0.05 s), minutes at :data:`MAX_VIEW`.
        """
        index = self.read_index
        if index is None:  # (two threads may both make it: the same lists)
            index = self.read_index = reach_index(self.reads)
        return any(reaches(index, a0 - 1, a1 + 1) for a0, a1, _, _ in regions)

    def low_of(self, view: bytes, regions: Sequence[_Region]) -> bytes:
        """The copy's lower-cased view: the template's, with the regions lowered
        (``bytes.lower`` maps each byte on its own)."""
        at = 0
        parts: list[bytes | memoryview] = []
        with memoryview(self.low) as low:  # (copied once, by join())
            for a0, a1, b0, b1 in regions:
                parts += (low[at:a0], view[b0:b1].lower())
                at = a1
            parts.append(low[at:])
            return b"".join(parts)


def reach_index(spans: Iterable[Span]) -> tuple[list[int], list[int]]:
    """``spans`` sorted by start, as (their starts, the furthest end among those up to
    each), for :func:`reaches`: one bisection a question, where checking every span cost
    questions x spans."""
    ordered = sorted(spans)
    return [start for start, _ in ordered], list(accumulate((end for _, end in ordered), max))


def reaches(index: tuple[list[int], list[int]], lo: int, hi: int) -> bool:
    """Whether some span of ``index`` (:func:`reach_index`) meets ``[lo, hi]``: one that
    starts at or before ``hi`` ends at or after ``lo``."""
    starts, reach = index
    i = bisect_right(starts, hi)
    return bool(i) and reach[i - 1] >= lo


def diff_regions(mine: bytes, cut: bytes, lines: int, view: bytes, view_lines: int
                 ) -> list[_Region] | None:
    """Where ``view`` differs from ``mine`` (both cut into lines at ``cut``: ``lines`` and
    ``view_lines`` of them), line by line, as ``(a0, a1, b0, b1)``: ``mine[a0:a1]`` is
    ``view[b0:b1]`` there; None when they have not as many lines or too many differ.

    Line i of the copy is compared with line i of the template, as if both were split,
    but the lines the same in both are skipped at memcmp speed (a common prefix from
    the end of the last changed line), and only changed lines are cut out.  A changed
    line is narrowed to the bytes between its common prefix and suffix.
    """
    if view_lines != lines:
        return None
    na, nb = len(mine), len(view)
    out: list[_Region] = []
    a = b = 0  # the starts of a line, the same in both
    with memoryview(view) as theirs:  # (compared in place)
        while True:
            head = _common_prefix_at(mine, a, theirs, b)
            a0, b0 = a + head, b + head
            if a0 == na and b0 == nb:
                return out
            if _too_many(len(out) + 1, lines, max(na, nb)):
                return None
            # The ends of the line where they differ (the same line: as many cuts before).
            a1, b1 = mine.find(cut, a0), view.find(cut, b0)
            a1, b1 = na if a1 < 0 else a1, nb if b1 < 0 else b1
            tail = _common_suffix(mine[a0:a1], view[b0:b1], min(a1 - a0, b1 - b0))
            out.append((a0, a1 - tail, b0, b1 - tail))
            if a1 == na or b1 == nb:  # the last line (of both, as they have as many)
                return out if a1 == na and b1 == nb else None
            a, b = a1 + 1, b1 + 1


def _too_many(regions: int, lines: int, size: int) -> bool:
    """Whether a copy differs in too many places to be scanned where it differs: more than
    a quarter of its lines, or more than :data:`_FREE_REGIONS` regions and more than one
    per :data:`_BYTES_PER_REGION` bytes."""
    return regions * _MAX_CHANGED > lines or (
        regions > _FREE_REGIONS and regions * _BYTES_PER_REGION > size)


def checked_regions(mine: bytes, cut: bytes, view: bytes, said: Sequence[_Region]
                    ) -> list[_Region] | None:
    """``said`` (where ``view`` is said to differ from ``mine``, in order, as
    :func:`diff_regions` gives them) as :func:`rescan` needs them, when they are right:
    the bytes before, between and after them equal in both (compared in place, at
    memcmp speed: what a diff costs without its search), and no cut byte in them; two
    with no cut byte between them merged into one (so one stands between any two, as
    between a diff's).  None when they are not (the caller diffs).

    >>> checked_regions(b"a\\nxy z\\nb", b"\\n", b"a\\nxyy zz\\nb", [(3, 4, 3, 5), (5, 6, 6, 8)])
    [(3, 6, 3, 8)]
    >>> checked_regions(b"a\\nxy\\nb", b"\\n", b"a\\nXy\\nb", [(3, 4, 3, 4)]) is None  # "x" differs
    True
    """
    out: list[_Region] = []
    a = b = 0  # where the stretch before the next region starts, in both
    with memoryview(view) as theirs:
        for a0, a1, b0, b1 in said:
            if not (a <= a0 <= a1 and b <= b0 <= b1) or a0 - a != b0 - b or not (
                    mine.startswith(theirs[b:b0], a)) or cut in mine[a0:a1] or cut in view[b0:b1]:
                return None
            if out and mine.find(cut, a, a0) < 0:
                out[-1] = (out[-1][0], a1, out[-1][2], b1)
            else:
                out.append((a0, a1, b0, b1))
            a, b = a1, b1
        if len(mine) - a != len(view) - b or not mine.startswith(theirs[b:], a):
            return None
    return out


def cut_of(view: bytes) -> tuple[bytes, int]:
    """Where to cut ``view`` into the lines that are diffed, and how many there are: at
    line feeds, or at each ``>`` when its lines are long on average (HTML minified into a
    few lines) and that cuts it finer.  A function of the view alone: a campaign's copies
    (a few bytes apart) are cut alike, and their template is found by it."""
    lines = view.count(b"\n") + 1
    if len(view) > LONG_LINES * lines:
        tags = view.count(b">") + 1
        if tags > lines:
            return b">", tags
    return b"\n", lines


def _common_prefix_at(a: bytes, i: int, b: memoryview, j: int) -> int:
    """The length of the longest common prefix of ``a[i:]`` and ``b[j:]``: stretches of
    ``b`` compared in place in ``a`` at memcmp speed (nothing copied), doubling from
    :data:`_GALLOP` bytes, then halving the stretch that differs down to
    :data:`_XOR_BYTES`, whose first different byte the two stretches read as numbers and
    xored tell (time linear in the length found)."""
    n = min(len(a) - i, len(b) - j)
    lo, step = 0, _GALLOP
    while True:
        hi = min(lo + step, n)
        if not a.startswith(b[j + lo : j + hi], i + lo):
            break
        if hi == n:
            return n
        lo, step = hi, step * 2
    while hi - lo > _XOR_BYTES:  # a[i + lo : i + hi] differs from b's
        mid = (lo + hi) // 2
        if a.startswith(b[j + lo : j + mid], i + lo):
            lo = mid
        else:
            hi = mid
    differ = _number(a[i + lo : i + hi]) ^ _number(b[j + lo : j + hi])
    return hi - (differ.bit_length() + 7) // 8  # (big-endian: the first byte the highest)


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """The length of the longest common suffix, at most ``limit``: the lowest byte of
    the last ``limit`` bytes of each, read as numbers and xored, that is not zero."""
    if limit <= 0:
        return 0
    differ = _number(a[len(a) - limit :]) ^ _number(b[len(b) - limit :])
    return ((differ & -differ).bit_length() - 1) // 8 if differ else limit


_number = int.from_bytes  # (big-endian)


def _shifted(entries: Sequence[Entry], shift: int, low: bytes) -> list[Entry]:
    """The template's entries at a copy's offsets (``low``: the copy's lower-cased view)."""
    if not shift:  # the same offsets, the same bytes there: the same entries
        return list(entries)
    out: list[Entry] = []
    for entry in entries:
        if isinstance(entry, PendingImg):
            out.append(_new(PendingImg, (low, entry.start + shift, entry.url, entry.remote,
                                         entry.box, entry.condition)))
        else:
            out.append(entry._replace(
                tag_span=_move(entry.tag_span, shift), url_span=_move(entry.url_span, shift),
                removal_span=_move(entry.removal_span, shift),
                attr_span=_move_optional(entry.attr_span, shift),
                value_span=_move_optional(entry.value_span, shift),
                alt_span=_move_optional(entry.alt_span, shift)))
    return out


def _move(span: Span, shift: int) -> Span:
    return span[0] + shift, span[1] + shift


def _move_optional(span: Span | None, shift: int) -> Span | None:
    return None if span is None else (span[0] + shift, span[1] + shift)


def _spans(spans: Sequence[Span], shift: int) -> list[Span]:
    return [(a + shift, b + shift) for a, b in spans] if shift else list(spans)


def _closes_a_quote(template: ScanTemplate, view: bytes, regions: Sequence[_Region]) -> bool:
    """Whether a region of the copy holds a quote past the template's last quote of that
    kind: it may close a value the template never closed (see the module docstring)."""
    last_double, last_single = template.quotes
    for a0, _, b0, b1 in regions:
        if (a0 > last_double and view.find(b'"', b0, b1) >= 0) or (
                a0 > last_single and view.find(b"'", b0, b1) >= 0):
            return True
    return False


def _reaches(low: bytes, metas: Sequence[int]) -> list[int]:
    """For each ``<meta`` (in order), the furthest byte that unmodelled_markup() may read
    for it or an earlier one: the gap a declaration may start in, and every ``charset``
    there read as far as a declaration would be (one byte past, for the pattern's end)."""
    out: list[int] = []
    furthest = -1
    # Where the next "charset" may start that no earlier <meta read: the gaps of close
    # <meta overlap, and a word read for one is already in ``furthest`` (a running
    # maximum) for the next.  (Each word read once: its run of blanks may be long, and
    # a hundred <meta before one "charset" and a megabyte of blanks read them a hundred
    # times.)
    unread = 0
    for at in metas:
        stop = at + _META_GAP
        furthest = max(furthest, stop)
        word = low.find(b"charset", max(at, unread), stop)
        while word >= 0:
            found = _DECLARATION.match(low, word)
            assert found is not None  # "charset" itself matches
            furthest = max(furthest, found.end() + 1)
            word = low.find(b"charset", word + 1, stop)
        unread = max(unread, stop - len(b"charset") + 1)  # none starts before, unread
        out.append(furthest)
    return out


def _unmodelled_near(template: ScanTemplate, low: bytes, regions: Sequence[_Region]) -> bool:
    """Whether a region may make :func:`~.unmodelled.unmodelled_markup` see something in
    the copy that it did not see in the template: a tag it looks for that a region touches,
    or a region in reach of a ``<meta>`` 's charset declaration."""
    metas, reaches = template.metas, template.reaches
    for a0, a1, b0, b1 in regions:
        if _UNMODELLED_TAG.search(low, max(0, b0 - _TAG_REACH), b1 + _TAG_REACH) is not None:
            return True
        # The spans are in order and apart: only the last to start by a1 may reach a0.
        k = bisect_right(template.noscripts, a1, key=itemgetter(0)) - 1
        if k >= 0 and (template.noscripts[k][1] < 0 or template.noscripts[k][1] >= a0):
            return True
        i = bisect_right(metas, a1) - 1  # the last <meta at or before the region's end
        if i >= 0 and reaches[i] >= a0:
            return True
    return False


class Rescanned(_Scan):
    """A scan put together by :func:`rescan`: the template's entries and the new ones."""

    def __init__(self, view: bytes, charset: str, budget: int, low: bytes) -> None:
        super().__init__(view, charset, budget, low=low)
        self.template: ScanTemplate | None = None
        self.copied: list[tuple[int, int, int]] = []  # (index here, in the template, count)
        self.fresh: list[tuple[int, int]] = []  # (index, count) of entries scanned here
        # Where the view differs from the template's (diff_regions()): the readers' check
        # of the same copy against the same earlier view takes them as they are.
        self.regions: list[_Region] = []
        # The template's hidden elements hold for this copy (else finish_scan() computes
        # them, and the boxes of copied entries may differ from the template's).
        self.hidden_reused = False

    def findings(self, entries: Sequence[Entry],
                 classify: Callable[[Sequence[Entry]], dict[int, _F]]) -> dict[int, _F] | None:
        """The findings of the finished ``entries`` by index: the template's for the entries
        copied from it, ``classify`` 's for the others; None when the indexes or boxes may
        not be the template's (entries sorted or given a ``<picture>`` 's box, hidden
        elements computed again), or the template has none."""
        template = self.template
        if (template is None or template.findings is None or not self.hidden_reused
                or not (template.ordered and self.ordered) or template.sources or self.sources):
            return None
        out: dict[int, _F] = {}
        starts = [a for _, a, _ in self.copied]
        for a, finding in template.findings.items():
            i = bisect_right(starts, a) - 1
            if i >= 0 and a < starts[i] + self.copied[i][2]:
                out[self.copied[i][0] + a - starts[i]] = finding
        for start, n in self.fresh:
            for k, finding in classify(entries[start : start + n]).items():
                out[start + k] = finding
        return dict(sorted(out.items()))


def rescan(template: ScanTemplate, view: bytes, charset: str, max_tags: int,
           lines: int | None = None, said: Sequence[_Region] | None = None
           ) -> Rescanned | None:
    """A scan of ``view`` equal to a full one, from ``template`` and the changed regions;
    None when it cannot be done that way (the caller scans in full).  Also None when a
    region may add markup the scanner does not model (see the module docstring).
    ``lines``: ``view.count(template.cut) + 1``, when the caller has it.  ``said``:
    where the caller knows ``view`` differs from the template's (checked:
    :func:`checked_regions`; else diffed).  The scan's ``low`` is the lower-cased view
    (built from the template's)."""
    if charset != template.charset or max_tags != template.max_tags:
        return None
    lines = view.count(template.cut) + 1 if lines is None else lines
    regions = None if said is None or lines != template.lines else checked_regions(
        template.view, template.cut, view, said)
    if regions is None:
        regions = template.regions(view, lines)
    if regions is None or _too_many(len(regions), lines, len(view)):
        return None
    if _closes_a_quote(template, view, regions):
        return None
    low = template.low_of(view, regions)
    if _unmodelled_near(template, low, regions):
        return None
    marks, positions = template.marks, template.positions
    starts, ends = [r[0] for r in regions], [r[1] for r in regions]
    # shifts[m]: copy offset - template offset in the unchanged stretch before region m
    shifts = [0, *(b1 - a1 for _, a1, _, b1 in regions)]
    last = len(marks) - 1  # the end mark: copied up to, never a place to stop at

    def candidate(j: int) -> tuple[int, int, int] | None:
        """The first mark from ``j`` in an unchanged stretch: (mark, stretch, its offset in
        the copy), or None."""
        while j < last:
            q = positions[j]
            m = bisect_right(starts, q)  # regions starting at or before q
            if m and q < ends[m - 1]:  # inside region m - 1
                j = bisect_left(positions, ends[m - 1], j)
                continue
            return j, m, q + shifts[m]
        return None

    result = Rescanned(view, charset, max_tags, low=low)
    result.template, result.regions = template, regions
    refs, opaque, styles = result.refs, result.opaque, result.styles
    ordered, sources = template.ordered, template.sources
    budget = max_tags  # left, as the copy's full scan would have it here
    at, k = 0, 0  # in step with the template at mark `at`; the next region to scan
    while True:
        # The template's findings from mark `at` to the last mark before region k (the
        # end mark after the last region), at the copy's offsets.
        resume = max(at, bisect_left(positions, starts[k]) - 1) if k < len(regions) else last
        if k < len(regions):
            # A region near a "<!--" read as markup, up to where a browser ends that comment:
            # the copy is scanned from the "<!--" (a construct: a mark is there), so that
            # the scan checks the new end (_Scan.bang).
            opened = _comment_near(template.comments, starts[k], ends[k])
            if opened >= 0:
                j = bisect_left(positions, opened)
                if j < at:
                    return None
                resume = min(resume, j)
        before, after = marks[at], marks[resume]
        result.copied.append((len(refs), before[1], after[1] - before[1]))
        refs += _shifted(template.refs[before[1] : after[1]], shifts[k], low)
        opaque += _spans(template.opaque[before[3][0] : after[3][0]], shifts[k])
        styles += _spans(template.styles[before[3][1] : after[3][1]], shifts[k])
        budget -= before[2] - after[2]
        if budget < 0:
            return None  # the full scan runs out of budget: let it say where
        if k == len(regions):
            break
        # Scan the copy from there until it is in step with the template again.
        scan = _Scan(view, charset, budget, low=low)
        scan.cond = list(after[3][2])
        pos = after[0] + shifts[k]
        found = candidate(bisect_left(positions, ends[k]))
        while True:
            scan.stop = scan.n + 1 if found is None else found[2]
            pos = scan.run(pos)
            if scan.truncated or scan.base is not None or scan.analytics_end >= 0:
                return None
            if found is None or pos < found[2]:  # the end
                break
            while found is not None and found[2] <= pos and not (
                    found[2] == pos and _in_step(scan, marks[found[0]])):
                found = candidate(found[0] + 1)
            if found is not None and found[2] == pos:
                break
        if 0 <= scan.comment_end < scan.n:  # scanned to the end with one pending
            return None  # the full scan says what that means (_Scan.ended)
        result.fresh.append((len(refs), len(scan.refs)))
        refs += scan.refs
        opaque += scan.opaque
        styles += scan.styles
        budget = scan.budget
        ordered = ordered and scan.ordered
        sources = sources or scan.sources
        if found is None or pos != found[2]:  # scanned to the end
            break
        at, k = found[0], found[1]
    result.budget = budget
    result.ordered = ordered
    result.sources = sources
    result.hidden = _hidden(template, result, regions, starts, ends, shifts)
    result.hidden_reused = result.hidden is not None
    return result


def _comment_near(comments: list[Span], a0: int, a1: int) -> int:
    """Where the first of ``comments`` (``ScanTemplate.comments``) within reach of the region
    ``a0``-``a1`` starts, or -1 (a "<!--" or "--!>" may be made across a region's edge)."""
    f = bisect_left(comments, a0 - _COMMENT_REACH, key=itemgetter(1))
    if f < len(comments) and comments[f][0] <= a1 + _COMMENT_REACH:
        return comments[f][0]
    return -1


def _in_step(scan: _Scan, mark: Mark) -> bool:
    """Whether a copy's scan, at ``mark`` 's position, is in step with the template there:
    the same conditional comments open, and no browser's comment end pending
    (:meth:`.html._Scan.bang`: only the scan that read the "<!--" can tell whether it is
    between constructs there)."""
    return scan.comment_end < 0 and _same_cond(scan.cond, mark[3][2])


def _same_cond(cond: list[str], state: tuple[str, ...]) -> bool:
    """Whether the open conditional comments ``cond`` are a mark's ``state``: the lengths
    first (a template's marks hold at most ``html.MAX_MARKED_DEPTH``; a copy's deeper
    stack is compared in O(1), not once per mark it passes)."""
    return len(cond) == len(state) and tuple(cond) == state


def _hidden(template: ScanTemplate, scan: _Scan, regions: Sequence[_Region],
            starts: Sequence[int], ends: Sequence[int], shifts: Sequence[int]
            ) -> list[Span] | None:
    """The template's hidden elements at the copy's offsets, when the copy's would be the
    same (else None: finish_scan() computes them).

    They are when no region touches anything hidden_ranges() read for the template, the
    copy's comments, raw text and style blocks are the template's, shifted, and every
    hiding declaration in reach of a region is one of the template's.
    """

    def moved(x: int) -> int | None:  # None at or inside a region: no single answer
        m = bisect_right(starts, x)
        if m and x <= ends[m - 1]:
            return None
        return x + shifts[m]

    if template.reads_touched(regions):
        return None
    for mine, theirs in ((template.opaque, scan.opaque), (template.styles, scan.styles)):
        if len(mine) != len(theirs) or [(moved(a), moved(b)) for a, b in mine] != theirs:
            return None
    low, n = scan.low, scan.n
    known = {moved(a) for a in template.declarations}  # (their reads are untouched)
    for _, _, b0, b1 in regions:
        # A declaration in reach: ":" at most 22 bytes before the region (unless a run of
        # blanks reaches further) or 10 after it, its value at most 100 bytes after it
        # (unless a run of blanks reaches further).
        if b0 > 22 and not low[b0 - 22 : b0 - 8].translate(None, _BLANKS):
            return None
        if b1 + 80 < n and not low[b1 + 11 : b1 + 80].translate(None, _BLANKS):
            return None
        near = max(0, b0 - 32), min(n, b1 + 100)
        words = template.rule_words
        if words:  # a name a rule requires may start before the window or end after it
            longest = max(map(len, words))
            wide = max(0, near[0] - longest), min(n, near[1] + longest)
            if any(word in low[wide[0] : wide[1]] for word in words) and any(
                    m.start() not in known for m in rule_marks(low, words, *wide)):
                return None
        if _HIDING_WORD.search(low, *near) is None:
            continue  # (each mark holds one: a campaign's token in a link has none)
        for m in hiding_marks(low, *near):
            if m.start() not in known:
                return None
    out: list[Span] = []
    for a, b in template.hidden:
        start, end = moved(a), moved(b)
        if start is None or end is None:
            return None
        out.append((start, end))
    return out


def _size(template: ScanTemplate) -> int:
    """The bytes a template is counted as in :data:`MAX_TEMPLATE_BYTES` (its lists are
    not changed once it is kept: the same count when it goes)."""
    return (_WEIGHT * len(template.view) + _PER_MARK * len(template.marks)
            + _PER_ENTRY * len(template.refs))


class ScanCache:
    """The last templates, by charset, cut and number of lines (see the module docstring)."""

    def __init__(self, max_templates: int = MAX_TEMPLATES,
                 max_bytes: int = MAX_TEMPLATE_BYTES) -> None:
        self._max, self._max_bytes = max_templates, max_bytes
        self._templates: OrderedDict[tuple[str, bytes, int], ScanTemplate] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # The last miss's view and cut, the last template made (for classified()): a
        # thread's miss, scan and learn follow each other (others only lose the shortcut).
        self._missed: tuple[bytes, tuple[bytes, int]] | None = None
        self._learned: ScanTemplate | None = None

    def rescan(self, view: bytes, charset: str, max_tags: int,
               earlier: tuple[bytes, Sequence[_Region]] | None = None) -> Rescanned | None:
        """:func:`rescan` from the last template of the same charset, cut and number of
        lines.  ``earlier``: a view and where ``view`` differs from it, which
        :func:`rescan` takes (checked) when that view is the template's."""
        cut = cut_of(view)
        key = (charset, *cut)
        with self._lock:
            template = self._templates.get(key)
            if template is not None:
                self._templates.move_to_end(key)
        if template is None:
            self._missed = (view, cut)  # learn() counts it no more
            return None
        said = earlier[1] if earlier is not None and earlier[0] is template.view else None
        return rescan(template, view, charset, max_tags, cut[1], said)

    def classified(self, view: bytes, charset: str, findings: dict[int, Any]) -> None:
        """Keep the findings of the entries of ``view`` 's scan, when it left a template."""
        template = self._learned
        if template is not None and template.view is view and template.charset == charset:
            template.findings = findings

    def learn(self, scan: _Scan, marks: list[Mark], max_tags: int) -> None:
        missed, self._missed = self._missed, None
        cut = missed[1] if missed is not None and missed[0] is scan.view else None
        template = self._learned = ScanTemplate.of(scan, marks, max_tags, cut)
        if template is None:
            return
        key = (template.charset, template.cut, template.lines)
        size = _size(template)
        with self._lock:
            old = self._templates.pop(key, None)
            if old is not None:
                self._bytes -= _size(old)
            self._templates[key] = template
            self._bytes += size
            while self._templates and (len(self._templates) > self._max
                                       or self._bytes > self._max_bytes):
                _, gone = self._templates.popitem(last=False)
                self._bytes -= _size(gone)


class QpChecks:
    """:func:`~beacon_proxy.rewrite.transfer.qp_two_readings` for a campaign's copies:
    the last quoted-printable bodies read one way (at most ``keep``, by their number of
    lines, ``max_bytes`` in all) are kept, and a body with as many lines as one of them
    is searched only in the lines where it differs from it (:func:`diff_regions`).
    Each spelling that decoders read in two ways lies within one line (a line feed can
    only end it), so a line the same as the kept body's holds none: the same answer as
    a search of the whole body (about 100 us for a 70 KB newsletter, a few for the
    lines a recipient's token changed).  Safe to share between threads.

    >>> checks = QpChecks()
    >>> checks.two_readings(b"<a href=3D=\\r\\n\\"u?t=3D1\\">x</a>\\r\\n<p>y</p>\\r\\n")
    False
    >>> checks.two_readings(b"<a href=3D=\\r\\n\\"u?t=3D2\\">x</a>\\r\\n<p>==3C</p>\\r\\n")
    True
    """

    def __init__(self, keep: int = MAX_TEMPLATES, max_bytes: int = MAX_TEMPLATE_BYTES // 4
                 ) -> None:
        self._keep, self._max_bytes = keep, max_bytes
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def two_readings(self, body: bytes) -> bool:
        """:func:`~beacon_proxy.rewrite.transfer.qp_two_readings` of ``body``."""
        if not self._keep or len(body) > self._max_bytes:
            return qp_two_readings(body)
        if not body.isascii():
            return True
        lines = body.count(b"\n") + 1
        with self._lock:
            kept = self._bodies.get(lines)
        regions = None if kept is None else diff_regions(kept, b"\n", lines, body, lines)
        if regions is None:
            two = qp_two_readings(body)
        else:  # each changed line whole, its line feed with it
            two = any(qp_two_readings(body[body.rfind(b"\n", 0, b0) + 1:
                                           body.find(b"\n", b1) + 1 or len(body)])
                      for _, _, b0, b1 in regions)
        if not two and kept is not body:
            with self._lock:
                old = self._bodies.pop(lines, None)
                self._bytes += len(body) - (0 if old is None else len(old))
                self._bodies[lines] = body
                while len(self._bodies) > self._keep or self._bytes > self._max_bytes:
                    _, gone = self._bodies.popitem(last=False)
                    self._bytes -= len(gone)
        return two
