"""What webmail's HTML washer makes of a part before a browser renders it.

Roundcube does not hand a message's HTML to the browser as it is.  Before its washer
(``rcube_washtml``) parses and filters the text, it rewrites it with patterns, and
several of those turn markup a browser finds inert into live markup:

* ``rcmail_action_mail_index::wash_html`` deletes every ``<meta ... charset=...>`` up to
  its first ``>`` and writes ``<meta charset="UTF-8" />`` after the first ``>`` of
  every ``<head`` (``<header`` too), so a quote inside those tags moves;
* ``cleanup`` deletes ``<title ...>...</title>`` up to the first ``</title>`` on the
  line and ``<!doctype ...>`` with the text after it, cuts ``<html ...>`` to ``<html>``,
  deletes ``<?xml ...>``, straightens curly quotes, rewrites every tag name (from a
  ``:`` on, and every character but ``[a-z0-9_[]!?-]``, go: ``<i"mg`` is ``<img``),
  deletes an end tag's attributes up to the first ``>``, deletes ``<!--x>``, moves
  a nested list that follows an item (in a comment or an attribute too) into that item,
  and, when a ``<base ... href=http...`` is on one line anywhere, rewrites every
  ``src=``, ``background=``, ``href=`` and ``url(`` in the text (a ``>`` after an
  unquoted value is eaten);
* its older parser (libxml2's HTML 4) reads the content of ``<xmp>``, ``<noembed>``,
  ``<noframes>``, ``<iframe>``, ``<plaintext>``, a ``<title>``, ``<![CDATA[`` and
  ``<!x ...>`` as markup;
* a ``style`` value is decoded again (entities twice, CSS escapes, comments and tags
  dropped: ``ur/**/l(`` is ``url(``); invalid UTF-8 is deleted (``s\\xffrc`` is ``src``).

:func:`washed` is this project's model of Roundcube's own rewrites, written from its
source (none of its code is used), each one linear: a pattern that could rescan the rest
of the text from every start is run as a search for its first anchor per ``>``-bounded
segment or per line.  :func:`readings` adds, as further documents, what its parsers and
filters may make of that text (never in place: a construct read in the wrong context
can add loads but not hide one), and :func:`loads_more` says whether they load
something remote that the text as written does not: such a part is not read precisely
(the fallback neutralises it, and holds it when even the neutralised text loads once
washed: :func:`loads`).

>>> washed(b'<p>x<i"mg src="https://t/x"></p>')
b'<html><head><meta charset="UTF-8" /></head><p>x<img src="https://t/x"></p>'
>>> loads_more(b'<p style="background:ur/**/l(https://t/x)">x</p>', "utf-8")
True
>>> loads_more(b'<html lang="en"><head><title>Hi</title></head><img src=a.png>', "utf-8")
False
"""

from __future__ import annotations

import html
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Sequence
from html.entities import name2codepoint
from typing import Final, NamedTuple

from beacon_proxy.rewrite.charsets import UNKNOWN_CHARSET, decode_text
from beacon_proxy.rewrite.html import DEFAULT_MAX_TAGS, finish_scan, scan_entries
from beacon_proxy.rewrite.htmlattr import clean_url, code_point, html_unescape, is_remote
from beacon_proxy.rewrite.htmlrefs import Entry, PendingImg
from beacon_proxy.rewrite.markup import applied
from beacon_proxy.rewrite.rescan import ScanCache, reach_index, reaches

__all__ = [
    "Readings",
    "Washing",
    "loaded",
    "loads",
    "loads_more",
    "readings",
    "requoted",
    "reread",
    "rewash",
    "text_of",
    "wash",
    "washed",
    "washed_as_is",
    "washed_as_is_near",
]

_META: Final = b'<meta charset="UTF-8" />'
_TRIM: Final = b" \t\n\r\x00\x0b"  # PHP's trim()

#: Replacements ``(start, end, new)`` in a text, in order and apart.
_Edits = list[tuple[int, int, bytes]]
#: A step of the washer: its replacements in ``(text, lower-cased text)``, or a new text.
_Step = Callable[[bytes, bytes], "_Edits | bytes"]


def washed(data: bytes) -> bytes | None:
    """``data`` (an HTML part as UTF-8) as Roundcube rewrites it before parsing; None
    where that is not modelled (lists nested past what linear work repairs)."""
    washing = wash(data)
    return None if washing is None else washing.washed


#: A text washed before, a text washed from it (:func:`rewash`) and where the second
#: differs from the first (``Washing.changed``): its scan need not diff them.
Earlier = tuple[bytes, bytes, Sequence[tuple[int, int, int, int]]]


class Washing(NamedTuple):
    """A text, washed, and how: what a campaign's next copy is washed from (:func:`rewash`)."""

    text: bytes  # as the washer gets it (UTF-8)
    washed: bytes  # as its rewrites leave it
    low: bytes | None  # ``washed`` lower-cased (None: not made yet)
    # Each step's replacements, in the offsets of that step's input; None when a step
    # rewrote the text in another way (nested lists moved, a <base> applied).
    edits: tuple[_Edits, ...] | None
    # Made by rewash(): the stretches of the earlier washed text replaced, and where
    # their replacements stand in this one: (start, end, new start, new end).
    changed: tuple[tuple[int, int, int, int], ...] = ()


def wash(data: bytes) -> Washing | None:
    """:func:`washed`, with the replacements that made it."""
    text, low = data, data.lower()
    edits: list[_Edits] | None = []
    try:
        for step in _STEPS:
            result = step(text, low)
            if isinstance(result, list):
                if result:  # (the lower-cased text edited alike: one lower() in all)
                    text = applied(text, result)
                    low = applied(low, [(start, end, new.lower()) for start, end, new in result])
                if edits is not None:
                    edits.append(result)
            elif result is not text:
                text, low, edits = result, result.lower(), None
            elif edits is not None:
                edits.append([])
    except _TooNested:
        return None
    return Washing(data, text, low, None if edits is None else tuple(edits))


#: What a campaign's copies may differ by, for the next one to be washed from the last:
#: text without markup, quotes, references, escapes, slashes, colons or line breaks (a
#: name, a number, an address), between a ">" and a "<".
_INERT: Final = re.compile(rb"[A-Za-z0-9 .,;?@#$%+_~|^{}\t-]*+")
#: ... or, inside a quoted attribute value (the caller says which: ``values``), what a
#: recipient's token or address in a URL is made of: printable ASCII without quotes,
#: "<", ">", brackets (``]]>`` ends a CDATA section to libxml2), a backslash, a backtick
#: or a blank.
_IN_VALUE: Final = re.compile(rb"[A-Za-z0-9!#$%&()*+,./:;=?@^_{|}~-]*+")
#: ... with such a byte, a quote or a blank on either side (what stands next to the
#: difference in both: a "<" before it would open a tag with its first byte, a "]]"
#: before or a ">" after it end a CDATA section once it is gone).
_VALUE_EDGES: Final = frozenset(b"\"' \tABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                b"0123456789!#$%&()*+,./:;=?@^_{|}~-")


def rewash(prior: Washing, text: bytes, regions: Sequence[tuple[int, int, int, int]],
           texts: Collection[int], values: Collection[int] = ()) -> Washing | None:
    """``text`` washed from ``prior`` (an earlier copy of the campaign, washed), where
    ``text[b0:b1]`` stands for ``prior.text[a0:a1]`` in each of ``regions`` and the rest is
    the same; None unless every region is, in both, either

    * (its index in ``texts``) inside a text token of the markup as browsers cut it, or
      between two tokens (the caller knows: :func:`~beacon_proxy.rewrite.wellformed.in_text`;
      a ">" and a "<" around it are no proof: either may stand in a quoted value,
      session 19's attack), inert (:data:`_INERT`) and between a ">" and a "<", not
      that of a ``</nobr>``: no step of the washer matches across it (each reads from a
      "<" to a ">", a line, or across plain text it deletes whole; but ``_nobr`` reads
      the blanks between ``</nobr>`` and ``<nobr>``);
    * or (its index in ``values``) of :data:`_IN_VALUE`, between bytes of
      :data:`_VALUE_EDGES`, inside a quoted attribute value of a start tag that no
      step reads by its name or its attributes (the caller knows:
      :func:`~beacon_proxy.rewrite.wellformed.quoted_values`), and in no run of bytes
      without a blank or ">" that holds a "<" before it: the washer's tag clean-up reads
      such a run as a tag's name wherever it stands (``title="a><3x"`` holds a tag
      ``3x`` to it; a "." put into that name it drops: session 19's attack).  The steps read a
      tag from an opener (``<meta``, ``<head``, ``<html``, ``<title``, ``<!doctype``,
      ``<?xml``, ``<body``, ``<ol``, ``<ul``, ``<li``, ``<!--``) to a ">", or across a
      line, a tag's name, a curly quote; such a value holds no "<", ">", line break or
      curly quote, so no opener's reach ends in it or starts in it, and a well-formed
      tag's opener reaches no later tag's values (the tag before ends with a ">");

    then the washed text is the earlier one with the regions put in (a step that
    replaced a stretch around a region cut into it: None; one that deleted it whole:
    nothing to put in), and the caller scans it again."""
    if prior.edits is None or not regions or b"<base" in (prior.low or b"<base"):
        return None  # (plain text may finish "href=" on a <base>'s line: applied anew)
    old = prior.text
    last, state = 0, -1  # the last "<" or ">" before ``last``: 0 none, 1 "<", 2 ">"
    run = last_lt = last_gt = -1  # the last blank or ">", "<" and ">" before ``last``
    out: _Edits = []
    mapped = _Mapper(prior.edits)
    after = _NextOf(old)  # the first "<" and ">" after each region: one pass over ``old``
    for index, (a0, a1, b0, b1) in enumerate(regions):
        if a0 == 0 or a1 == len(old):
            return None
        lt, gt = old.rfind(b"<", last, a0), old.rfind(b">", last, a0)
        state = state if lt < 0 and gt < 0 else 1 if lt > gt else 2
        run = max(run, gt, *(old.rfind(blank, last, a0) for blank in _BLANKS))
        last_lt, last_gt = max(last_lt, lt), max(last_gt, gt)
        last = a1
        if index in values:
            if _IN_VALUE.fullmatch(old, a0, a1) is None or _IN_VALUE.fullmatch(
                    text, b0, b1) is None or not (
                    _VALUE_EDGES.issuperset(old[a0 - 1 : a0] + old[a1 : a1 + 1])) or (
                    last_lt > run):
                return None
        elif index not in texts:
            return None
        else:
            if _INERT.fullmatch(old, a0, a1) is None or _INERT.fullmatch(text, b0, b1) is None:
                return None
            after_lt, after_gt = after(b"<", a1), after(b">", a1)
            if state != 2 or after_lt < 0 or 0 <= after_gt < after_lt or (
                    old[max(last_gt - 6, 0) : last_gt + 1].lower() == b"</nobr>"):
                return None  # (the blanks after a </nobr> the washer may rewrite)
        span = mapped(a0, a1)
        if span is None:
            return None
        if span[0] >= 0:  # (-1: deleted with what is around it)
            out.append((span[0], span[1], text[b0:b1]))
    new = applied(prior.washed, out)
    changed, shift = [], 0
    for start, end, put in out:
        changed.append((start, end, start + shift, start + shift + len(put)))
        shift += len(put) - (end - start)
    return Washing(text, new, None, None, tuple(changed))


class _NextOf:
    """``text.find(byte, at)`` for ``at`` that do not go back, each byte's search going on
    from where its last one ended: linear in all, where a search per region from its end
    read the rest of a long text run again for each (regions x length: 2 MB of text with
    every 4th line changed, 7.8 CPU s; the adversarial review of session 24)."""

    def __init__(self, text: bytes) -> None:
        self._text = text
        self._found: dict[bytes, tuple[int, int]] = {}  # byte -> (searched from, found or -1)

    def __call__(self, byte: bytes, at: int) -> int:
        known = self._found.get(byte)
        if known is not None and known[0] <= at and (known[1] < 0 or at <= known[1]):
            return known[1]  # nothing of ``byte`` between the last search's start and it
        found = self._text.find(byte, at)
        self._found[byte] = (at, found)
        return found


class _Mapper:
    """Where a stretch of a step's input stands in the last step's output, for stretches
    asked in order (each step's edits are read once in all: linear however many)."""

    def __init__(self, steps: Sequence[_Edits]) -> None:
        self._steps = steps
        self._next = [0] * len(steps)  # per step: its first edit not before the last stretch
        self._shift = [0] * len(steps)  # ... and what the edits before it added

    def __call__(self, a0: int, a1: int) -> tuple[int, int] | None:
        """Where ``[a0, a1)`` stands: (-1, -1) when a deletion took it whole, None when a
        replacement cuts into it."""
        for k, edits in enumerate(self._steps):
            i, shift = self._next[k], self._shift[k]
            while i < len(edits):
                start, end, new = edits[i]
                if not (end < a0 or (end == a0 and (start < end or a0 < a1))):
                    break  # (not before it: nor before any later stretch's start)
                shift += len(new) - (end - start)
                i += 1
            self._next[k], self._shift[k] = i, shift
            if a0 == a1 and i and edits[i - 1][1] == a0 and edits[i - 1][0] < a0:
                return None  # put in where a replacement ends: it may have reached on over
                # it (the doctype step deletes the text after "<!doctype ...>" to a "<")
            if i < len(edits):
                start, end, new = edits[i]
                if start > a1 or (start == a1 and (start < end or a0 < a1)):
                    pass  # after it
                elif start <= a0 and a1 <= end and a0 < a1 and not new:
                    return (-1, -1)
                else:  # cut into, or put in at the same place as an empty one
                    return None
            a0, a1 = a0 + shift, a1 + shift
        return a0, a1


class Readings(NamedTuple):
    """What may load once a part is washed (:func:`readings`)."""

    documents: list[bytes]  # to scan as a browser does
    css: list[str]  # URLs the washer's CSS filters write as url(...)
    # where in the washed text they read CSS, and a <body> 's attributes
    styles: list[tuple[int, int]]


def reread(prior: Readings, washing: Washing) -> Readings:
    """The readings of ``washing`` (:func:`rewash` made it from the washing ``prior``
    was read from): the earlier CSS URLs when no difference lies in or touches where CSS
    was read (an unquoted ``style=`` value a difference at its end may lengthen: session
    19's second attack) or where it may make a ``style=`` be read (:func:`_near_style`,
    in either text), and
    nothing more than the washed text when the earlier had nothing more (plain text and
    values make no element, declaration or ``<body background>``)."""
    if len(prior.documents) == 1 and not _touch_any(prior.styles, washing.changed) and not any(
            _near_style(prior.documents[0], a, b) or _near_style(washing.washed, c, d)
            for a, b, c, d in washing.changed):
        return Readings([washing.washed], prior.css, [])
    read = readings(washing)
    assert read is not None  # (readings() of a Washing is never None)
    return read


def _touch_any(spans: Sequence[tuple[int, int]],
               changed: Sequence[tuple[int, int, int, int]]) -> bool:
    """Whether some ``(a, b, _, _)`` of ``changed`` touches some ``(start, end)`` of
    ``spans`` (``start <= b and a <= end``).

    A bisection per change (:func:`~beacon_proxy.rewrite.rescan.reaches`, as
    ``ScanTemplate.reads_touched`` asks of the scan's reads).  Every change against
    every span cost changes x spans: lines of ``<b style=a>`` with every 4th line's text
    changed, 21.9 CPU s for 1 MB (the adversarial review of session 24)."""
    if not spans or not changed:
        return False
    index = reach_index(spans)
    return any(reaches(index, a, b) for a, b, _, _ in changed)


#: How far :func:`_near_style` looks back over blanks and "=" before a difference.
_STYLE_REACH: Final = 64


def _near_style(text: bytes, start: int, end: int) -> bool:
    """Whether a difference at ``text[start:end]`` may change what :data:`_STYLE` reads
    as a style attribute: "style" within five bytes of it, or before the blanks and "="
    that run up to it (a ``style=`` may then start, end or lose the blank before it)."""
    left, stop = start, max(0, start - _STYLE_REACH)
    while left > stop and text[left - 1] in _BLANKS_OR_EQUALS:
        left -= 1
    if left == stop and left > 0:
        return True  # (a long run of blanks: read again)
    return b"style" in text[max(0, left - 5) : end + 5].lower()


_BLANKS_OR_EQUALS: Final = frozenset(b" \t\n\x0b\x0c\r=")
_BLANKS: Final = (b" ", b"\t", b"\n", b"\x0b", b"\x0c", b"\r")


def readings(data: bytes | Washing, *, names: bool = False) -> Readings | None:
    """What may load once ``data`` is washed: as documents to scan, the washed text;
    when it holds what libxml2's HTML 4 parser reads as markup (a browser does not), that
    text with it made markup; when it has a ``<body background>``, the container's style
    the washer writes from it; and the URLs its CSS filters find in ``style`` values and
    ``<style>`` elements (:func:`_style_urls`).  None where the washer's reading is not
    modelled.

    Only the rewrites Roundcube itself makes change the washed text; what this model
    reads more widely than Roundcube (every ``style=``, every ``<style``, libxml2's
    readings of either parser) is added as a further document, never in place, so
    that a construct read in the wrong context can add loads but never hide one."""
    washing = wash(data) if isinstance(data, bytes) else data
    if washing is None:
        return None
    text = washing.washed
    low = text.lower() if washing.low is None else washing.low
    if b"<base" in low:  # the washer drops <base> (resolve_base has made URLs absolute)
        text = applied(text, [(m.start(), m.start() + 5, b"<bxse")
                              for m in re.finditer(b"<base", low)])
    out = [text]
    markup = _as_libxml_reads(text, low, names)
    if markup is not text:
        out.append(markup)
    backgrounds, reach = _body_backgrounds(text, low)
    if backgrounds:
        out.append(b"".join(backgrounds))
    css, styles = _css_urls(text, low)
    return Readings(out, css, styles + reach)


# -- rcmail_action_mail_index::wash_html ---------------------------------------------

_META_CHARSET: Final = re.compile(rb'charset=[a-z0-9_"-]')


def _meta_charsets(data: bytes, low: bytes) -> _Edits:
    """``<meta[^>]+charset=[a-z0-9_"-]+[^>]*>`` deleted."""
    return _each_tag(data, low, b"<meta", lambda s, e: (
        b"" if _META_CHARSET.search(low, s + 6, e) is not None else None))


def _meta_in_head(data: bytes, low: bytes) -> _Edits:
    """``<meta charset>`` written after every ``(<head[^>]*>)``; without one, in a
    ``<head>`` of its own."""
    edits = [(end, end, _META) for _, end, _ in _each_tag(  # (end: after the ">")
        data, low, b"<head", lambda s, e: b"")]
    if edits:
        return edits
    at = low.find(b"<html")
    if at < 0:
        return [(0, 0, b"<html><head>" + _META + b"</head>")]
    at = low.find(b">", at) + 1  # (PHP: false + 1 is 1)
    return [(at, at, b"<head>" + _META + b"</head>")]


def _each_tag(data: bytes, low: bytes, opener: bytes | re.Pattern[bytes],
              replace: Callable[[int, int], bytes | None]) -> _Edits:
    """Each ``opener ... >`` (from ``opener`` to the first ``>`` after it) that
    ``replace(start, end)`` (``end``: the ``>``) gives new bytes for, replaced by them, as
    a PHP ``preg_replace`` of ``opener[^>]*...>`` does (``opener``: bytes, or a pattern
    for ``low``, the lower-cased text).

    The patterns read ``[^>]`` after the opener, so a later opener before the same
    ``>`` can match only where the first one does (it is inside the first one's
    match): one look per ``>``-bounded segment, however many openers it holds."""
    edits = []
    pos = 0
    pattern = re.compile(re.escape(opener)) if isinstance(opener, bytes) else opener
    while (found := pattern.search(low, pos)) is not None:
        start = found.start()
        end = low.find(b">", start + 5)
        if end < 0:
            break
        new = replace(start, end)
        if new is not None:
            edits.append((start, end + 1, new))
        pos = end + 1
    return edits


# -- rcube_washtml::cleanup ------------------------------------------------------------

_NOBR: Final = re.compile(rb"</nobr>([ \t\n\x0b\x0c\r]+)<nobr>")  # in lower-cased text
_HTML_BLANK: Final = re.compile(rb"<html[ \t\n\x0b\x0c\r]")  # "<html\s[^>]+>"
_BOM: Final = re.compile(rb"\A(?:\x00\x00\xfe\xff|\xff\xfe\x00\x00|\xfe\xff|\xff\xfe|\xef\xbb\xbf)")
_WORD_CHARS: Final = {b"\xe2\x80\x98": b"'", b"\xe2\x80\x99": b"'", b"\xe2\x80\x9c": b'"',
                      b"\xe2\x80\x9d": b'"', b"\xe2\x80\x94": b"&mdash;", b"\xe2\x80\xa6": b"..."}
_WORD_CHAR: Final = re.compile(rb"\xe2\x80[\x98\x99\x9c\x9d\x94\xa6]")
#: A tag as the washer finds one: "<" (not "<!"), slashes, a name up to a blank or ">",
#: the rest up to ">" (linear: each match ends at the next ">", the next starts after).
_TAG: Final = re.compile(rb"(<(?!!)/*)([^\s>]+)([^>]*)")
#: A "<" where that pattern, matching there, changes the tag (in lower-cased text): an
#: end tag with more than its name, or only slashes for a name, or a name with a
#: character the washer drops (":" included).  Whether it matches there is checked.
_CHANGING: Final = re.compile(  # (a "<" in a name is a change: no run crosses one)
    rb"<(?:/(?:/*+(?:[\s>]|\Z)|[^/\s><][^\s><]*+\s)"
    rb"|(?!!)/*+[a-z0-9_\[\]!?-]*+[^a-z0-9_\[\]!?\-\s>])")
#: A "<" where that pattern matches (the first such after a ">" starts a match).
_STARTS_TAG: Final = re.compile(rb"<[^!\s>]")
_NOT_NAME: Final = re.compile(rb"[^a-z0-9_\[\]!?-]", re.IGNORECASE)
_ALNUM_COMMENT: Final = re.compile(rb"<!--[a-zA-Z0-9]+>")


def _trim(data: bytes, low: bytes) -> _Edits:
    head = len(data) - len(data.lstrip(_TRIM))
    tail = len(data) - len(data.rstrip(_TRIM))
    if head == len(data):
        return [(0, head, b"")]
    return [(start, end, b"") for start, end in ((0, head), (len(data) - tail, len(data)))
            if end > start]


def _nobr(data: bytes, low: bytes) -> _Edits:
    return [(m.start(1), m.end(1), b" &nbsp; ") for m in _NOBR.finditer(low)]


def _bom(data: bytes, low: bytes) -> _Edits:
    bom = _BOM.match(data)
    return [] if bom is None else [(0, bom.end(), b"")]


def _html_attributes(data: bytes, low: bytes) -> _Edits:
    """``<html\\s[^>]+>`` cut to ``<html>``."""
    return _each_tag(data, low, _HTML_BLANK, lambda s, e: b"<html>" if e > s + 6 else None)


def _xml_declarations(data: bytes, low: bytes) -> _Edits:
    return _each_tag(data, low, b"<?xml", lambda s, e: b"")


def _word_chars(data: bytes, low: bytes) -> _Edits:
    """Curly quotes straightened, dashes and ellipses spelled out."""
    return [(m.start(), m.end(), _WORD_CHARS[m[0]]) for m in _WORD_CHAR.finditer(data)]


def _alnum_comments(data: bytes, low: bytes) -> _Edits:
    """``<!--[a-zA-Z0-9]+>`` deleted (``<!-->`` kept)."""
    return [(m.start(), m.end(), b"") for m in _ALNUM_COMMENT.finditer(data)]


def _titles(data: bytes, low: bytes) -> _Edits:
    """``<title[^>]*>.*</title>`` (ungreedy, ``.`` not a line feed) deleted: from each
    ``<title`` to the first ``</title>`` on the line of its first ``>``.  A search
    that found no end up to a line feed is not made again before it."""
    edits: _Edits = []
    pos = 0
    failed_before = -1  # no "</title>" between a ">" before here and the next "\n"
    while (start := low.find(b"<title", pos)) >= 0:
        gt = low.find(b">", start + 6)
        if gt < 0:
            break
        pos = gt + 1  # (every "<title" before this ">" ends its tag here)
        if gt < failed_before:
            continue
        line_end = low.find(b"\n", gt)
        line_end = len(low) if line_end < 0 else line_end
        end = low.find(b"</title>", gt + 1, line_end)
        if end < 0:
            failed_before = line_end
            continue
        edits.append((start, end + 8, b""))
        pos = end + 8
    return edits


def _doctypes(data: bytes, low: bytes) -> _Edits:
    """``<!doctype[^>]+>[^<]*`` deleted."""
    edits: _Edits = []
    pos = 0
    while (start := low.find(b"<!doctype", pos)) >= 0:
        gt = low.find(b">", start + 9)
        if gt < 0:
            break
        if gt == start + 9:  # "[^>]+": not empty
            pos = gt + 1
            continue
        end = low.find(b"<", gt)
        end = len(low) if end < 0 else end
        edits.append((start, end, b""))
        pos = end
    return edits


def _tags(data: bytes, low: bytes) -> _Edits:
    """``data`` with the washer's tag callback run over every tag (only the tags it
    changes are looked at)."""
    edits = []
    last, first = 0, -1  # the last "<" looked at; the first match in its ">"-segment
    for found in _CHANGING.finditer(low):
        at = found.start()
        gt = low.rfind(b">", last, at)
        if gt >= 0 or first < 0:  # a segment not seen yet: where its match starts
            start = _STARTS_TAG.search(low, gt + 1 if gt >= 0 else last)
            first = -1 if start is None else start.start()
        last = at
        if at == first:
            tag = _TAG.match(data, at)
            assert tag is not None
            edits.append((tag.start(), tag.end(), _tag(tag)))
    return edits


def _tag(match: re.Match[bytes]) -> bytes:
    opener, name, rest = match.groups()
    if rest.endswith(b"--"):  # maybe the end of a comment: left alone
        return match[0]
    colon = name.find(b":")
    name = _NOT_NAME.sub(b"", name if colon < 0 else name[:colon])
    return opener + name + (b"" if opener == b"</" else rest)


#: How many "<" the list repair may visit per "<" of the text (Roundcube's own loop
#: revisits a nested list's content once per level): past it the washer's reading is
#: not modelled and the part counts as one that loads more.
_LIST_VISITS_PER_TAG: Final = 8


class _TooNested(Exception):
    """The list repair would take more than linear work."""


def _broken_lists(data: bytes, low: bytes) -> bytes:
    """``rcube_washtml::fix_broken_lists``: for each ``<ol`` and then each ``<ul``, a
    list of that kind met after an item's end and outside an item, up to the ``>``
    after its own end tag, is moved to just before that ``</li``."""
    if b"<ol" not in low and b"<ul" not in low:
        return data
    visits = _LIST_VISITS_PER_TAG * (data.count(b"<") + 16)
    fixed, searched = data, False
    for tag in (b"ol", b"ul"):
        fixed, visits, nested = _fix_lists(fixed, tag, visits)
        searched = searched or nested
    if fixed is data and searched:
        # Unchanged, but a nested list was searched for: whether the budget held
        # depended on how many bytes lay between its tags, which a campaign's copy may
        # change anywhere; a new text object says "not made by replacements" (wash():
        # no edits kept, so no copy is washed from this one: session 19's second attack)
        return bytes(bytearray(data))
    return fixed


def _fix_lists(data: bytes, tag: bytes, visits: int) -> tuple[bytes, int, bool]:
    lowered = data.lower()
    if b"<" + tag not in lowered:
        return data, visits, False
    nested = False  # a nested list searched for
    html_ = bytearray(data)
    low = bytearray(lowered)
    opener, closer = b"<" + tag, b"</" + tag
    # The last opener and end tag of each kind: a search that would find none is not made
    # (each would run to the end of the text, once per list).
    last = {name: (low.rfind(b"<" + name), low.rfind(b"</" + name)) for name in (b"ol", b"ul")}
    pos = 0
    while (pos := low.find(opener, pos)) >= 0:
        pos += 1
        if bytes(low[pos + 2 : pos + 3]) not in (b" ", b">"):
            continue
        p, in_li, li_pos = pos, False, 0
        while (p := low.find(b"<", p)) >= 0:
            visits -= 1
            if visits < 0:
                raise _TooNested
            tt = bytes(low[p : p + 4])
            after = bytes(low[p + 4 : p + 5])
            if tt in (b"<li>", b"<li "):
                in_li, p = True, p + 4
            elif tt == b"</li" and after in (b" ", b">"):
                li_pos, in_li, p = p, False, p + 4
            elif tt == closer and after in (b" ", b">"):
                break
            elif not in_li and li_pos and tt in (b"<ol>", b"<ol ", b"<ul>", b"<ul "):
                nested = True
                element = tt[1:3]
                last_open, last_close = last[element]
                tpos = cpos = p
                while True:
                    if cpos + 1 > last_close:
                        cpos = -1
                        break
                    tpos = low.find(b"<" + element, cpos + 1) if cpos < last_open else -1
                    start, cpos = cpos, low.find(b"</" + element, cpos + 1)
                    visits -= 1 + (cpos - start) // 32  # (what the searches read)
                    if visits < 0:
                        raise _TooNested
                    if not (tpos >= 0 and cpos > tpos):
                        break
                if cpos < 0:
                    break
                end = low.find(b">", cpos)
                if end < 0:  # (PHP then restarts its scan at 0: not modelled)
                    raise _TooNested
                moved, moved_low = html_[p : end + 1], low[p : end + 1]
                del html_[p : end + 1], low[p : end + 1]
                html_[li_pos:li_pos] = moved
                low[li_pos:li_pos] = moved_low
                visits -= len(html_) // 128  # the move itself copies the text
                last = {name: (low.rfind(b"<" + name), low.rfind(b"</" + name))
                        for name in (b"ol", b"ul")}
                p = end
            else:
                p += 1
    return (data if html_ == data else bytes(html_)), visits, nested


_BASE_HREF: Final = re.compile(rb"""href=["']?([hftps]{3,5}://[a-z0-9/.%-]+)""")
#: What rcube_base_replacer rewrites, one pattern after the other (an unquoted value's
#: end matches the empty group first: only a quote, or a blank in a quoted value, goes).
_BASE_REFS: Final = (
    re.compile(rb"""(src|background|href)=(["']?)([^"'\s>]+)(\2|\s|>)""", re.IGNORECASE),
    re.compile(rb"""(url\s*\()(["']?)([^"')\s]+)(\2)\)""", re.IGNORECASE))


def _resolve_base(data: bytes, low: bytes) -> bytes:
    """``rcube_washtml::resolve_base``: the last ``href=http...`` on the line of the
    first ``<base`` that has one makes every ``src=``, ``background=``, ``href=`` and
    ``url(`` absolute (``rcube_base_replacer``, which drops what ends the value)."""
    pos, base = 0, None
    while base is None and (start := low.find(b"<base", pos)) >= 0:
        line_end = low.find(b"\n", start)
        line_end = len(low) if line_end < 0 else line_end
        for found in _BASE_HREF.finditer(low, start + 5, line_end):
            base = found
        pos = line_end
    if base is None:
        return data
    base_url = data[base.start(1) : base.end(1)]

    def absolute(m: re.Match[bytes]) -> bytes:
        return m[1] + b'="' + _absolute_url(m[3], base_url) + b'"'

    for pattern in _BASE_REFS:
        data = pattern.sub(absolute, data)
    return data


_ABSOLUTE: Final = re.compile(rb"[fhtps]+://")


def _absolute_url(path: bytes, base_url: bytes) -> bytes:
    """``rcube_base_replacer::absolute_url``."""
    if _ABSOLUTE.match(path) or path.startswith(b"cid:"):
        return path
    host_url = base_url
    if base_url.rfind(b"/") > 7:
        cut = base_url.find(b"/", 7)
        host_url = base_url[:cut] if cut >= 0 else base_url
        base_url = base_url[: base_url.rfind(b"/")]
    if path.startswith(b"/"):
        return host_url + path
    path = path.removeprefix(b"./")
    for _ in range(path.count(b"../")):
        cut = base_url.rfind(b"/")
        if cut > 0:
            base_url = base_url[:cut]
        path = path[3:]
    return base_url + b"/" + path


# -- how its parser reads the result -----------------------------------------------------

#: libxml2's HTML 4 parser reads these elements' content as markup (a browser does not);
#: in lower-cased text, as the next three.
_LIBXML_RAW: Final = re.compile(
    rb"</?(xmp|noembed|noframes|iframe|plaintext|title)(?=[\s/>])")
_CDATA: Final = re.compile(rb"<!\[cdata\[|\]\]>")
#: A name of 100 characters or more before "=": libxml2 reads it in pieces of 100, the
#: last an attribute of its own ("a" * 100 + "src=" is "src=" to it).
_LONG_NAME: Final = re.compile(rb"(?<![^\s\"'/])[^\s\"'=<>/]{100,}+=")
#: "<!" that opens neither a comment, CDATA nor a doctype: HTML 4's parser reads on.
_BOGUS: Final = re.compile(rb"<!(?![-\[]|doctype)")
#: A style attribute's value (the name after a blank, quote or "/"); a quote left open
#: runs to the end (linear).
_STYLE: Final = re.compile(rb"""style\s*=\s*("[^"]*"?|'[^']*'?|[^\s>"'][^\s>]*)""")
_BEFORE_ATTRIBUTE: Final = frozenset(b' \t\n\x0b\x0c\r"\'/')
_CSS_HEX: Final = re.compile(r"\\([0-9a-f]{2,6})\s*", re.IGNORECASE)
_CSS_OTHER: Final = re.compile(r"\\([^0-9a-f])", re.IGNORECASE)


def _as_libxml_reads(data: bytes, low: bytes, names: bool = False) -> bytes:
    """``data`` with the raw-text elements' names changed to ``span`` (their content is
    markup then), CDATA markers and ``<!`` of bogus declarations deleted, and (``names``)
    long names cut as libxml2 cuts them; ``data`` itself when it holds none of them.
    (The precise path reads no markup with such names, washed or not: ``wellformed``.)"""
    edits = [(m.start(1), m.end(1), b"span") for m in _LIBXML_RAW.finditer(low)]
    if b"<![cdata[" in low or b"]]>" in low:
        edits += [(m.start(), m.end(), b"") for m in _CDATA.finditer(low)]
    edits += [(m.start(), m.end(), b"") for m in _BOGUS.finditer(low)]
    if names:
        edits += [(at, at, b" ") for m in _LONG_NAME.finditer(low)
                  for at in range(m.start() + 100, m.end() - 1, 100)]
    return applied(data, sorted(edits)) if edits else data


def _css_urls(data: bytes, low: bytes) -> tuple[list[str], list[tuple[int, int]]]:
    """Each URL that ``rcube_utils::sanitize_css_block`` finds with its own pattern in a
    ``style`` value or a ``<style>`` element's text, as the washer decodes them
    (:func:`_style_urls`): taken as they are, no quote, escape or comment around them
    can hide them, as none hides them from that pattern.  And where they were read: each
    ``style=`` match from the byte before it to its value's end, read or not, and each
    ``<style>`` element's text."""
    urls: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _STYLE.finditer(low):
        # every match's reach, read or not: a match not read (no blank before it) still
        # hides a "style=" in its value, and an unquoted value ends at a blank
        spans.append((max(m.start() - 1, 0), m.end()))
        if (m.start() and data[m.start() - 1] in _BEFORE_ATTRIBUTE
                and _CSS_LOAD.search(m[1]) is not None):
            urls += _style_urls(_unquoted(data[m.start(1) : m.end(1)]), attribute=True)
    return urls + _style_element_urls(data, low, spans), spans


#: What may make a style value load once the washer decodes it: "url" itself, or what
#: it decodes otherwise than a browser (entities, escapes, comments, tags).
_CSS_LOAD: Final = re.compile(rb"url|[&\\<]|/\*|-->")


def _unquoted(raw: bytes) -> str:
    value = raw.decode("utf-8", "replace")
    if value[:1] in ("'", '"'):
        return value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
    return value


def _style_urls(value: str, *, attribute: bool) -> list[str]:
    """The URLs ``sanitize_css_block`` writes as ``url(...)`` from a ``style`` value (as
    a parser gives it: entities decoded once, by HTML 4's table in libxml2 or HTML5's
    in Masterminds' parser - both readings) or a ``<style>`` element's text (raw)."""
    firsts = {_php_unescape(value), html_unescape(value)} if attribute else {value}
    urls: list[str] = []
    for first in firsts:
        text = _xss_entity_decode(first)
        urls += _php_urls(_NEWLINES.sub(" ", text))
    return urls


def _php_urls(text: str) -> list[str]:
    """The groups of :data:`_PHP_URL`'s ``finditer`` over ``text``, in linear time.

    The pattern itself backtracks: from every ``url(`` its ``[^'")]*`` runs to the next
    quote or ``)``, and without one to the end, so ``url(`` repeated is quadratic
    (``url(href=https://a/style=`` * 1024, 25 KB: 0.4 s).  Backtracking into that run
    never finds a match (no byte in it is a quote or ``)``), so each ``url(`` is decided
    by the first quote or ``)`` after it, looked up among all of them (one search).

    >>> _php_urls("url( 'a' ) url(b) url('c) url(d'  ) url(e")
    ['a', 'b', 'c', 'd']
    """
    stops = [m.start() for m in _PHP_URL_STOP.finditer(text)]
    out: list[str] = []
    done = 0
    for m in _PHP_URL_OPEN.finditer(text):
        if m.start() < done:
            continue  # inside the last match
        start = m.end()
        found = None
        if text[start : start + 1] in ("'", '"'):  # the quote taken, or left to the end
            found = _php_url_end(text, start + 1, stops)
            if found is None:
                close = _PHP_URL_CLOSE.match(text, start + 1)
                found = None if close is None else ("", close.end())
        else:
            found = _php_url_end(text, start, stops)
        if found is not None:
            out.append(found[0])
            done = found[1]
    return out


def _php_url_end(text: str, start: int, stops: list[int]) -> tuple[str, int] | None:
    """The group and end of :data:`_PHP_URL` whose run starts at ``start``, if any: the
    first quote or ``)`` after it ends the run; a ``)`` ends the match, a quote with
    blanks and a ``)`` after it too."""
    i = bisect_left(stops, start)
    if i == len(stops):
        return None
    stop = stops[i]
    if text[stop] == ")":
        return text[start:stop], stop + 1
    close = _PHP_URL_CLOSE.match(text, stop + 1)
    return None if close is None else (text[start:stop], close.end())


#: sanitize_css_block's own pattern: what it finds here it writes as ``url(...)``,
#: without the quotes (``url('#a), url(U')`` holds two).
_PHP_URL: Final = re.compile(r"""\burl\s*\(\s*['"]?([^'")]*)['"]?\s*\)""", re.IGNORECASE)
#: :data:`_PHP_URL` in pieces (:func:`_php_urls`): its opening, what ends its run, its end.
_PHP_URL_OPEN: Final = re.compile(r"\burl\s*\(\s*", re.IGNORECASE)
_PHP_URL_STOP: Final = re.compile(r"""['")]""")
_PHP_URL_CLOSE: Final = re.compile(r"\s*\)")
_NEWLINES: Final = re.compile(r"[\n\r\t]+")
_PHP_ENTITY: Final = re.compile(r"&(?:#([0-9]+)|#[xX]([0-9a-fA-F]+)|([A-Za-z][A-Za-z0-9]*));")


def _php_unescape(text: str) -> str:
    """PHP's ``html_entity_decode`` (HTML 4.01's names, a ``;`` required)."""
    if "&" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m[3] is not None:
            code = name2codepoint.get(m[3], -1) if m[3] != "apos" else 39
        else:
            code = code_point(m[1], 10) if m[1] is not None else code_point(m[2], 16)
        return m[0] if code < 0 else _char(code) or m[0]

    return _PHP_ENTITY.sub(one, text)


def _xss_entity_decode(text: str) -> str:
    """``rcube_utils::xss_entity_decode``: entities decoded twice, ``<!--`` and ``-->``
    around it dropped, CSS escapes decoded, backslashes dropped, comments and tags
    deleted."""
    text = _php_unescape(_php_unescape(text)).strip()
    text = text.removeprefix("<!--").removesuffix("-->").strip()
    if "\\" in text:
        text = _CSS_HEX.sub(lambda m: _char(int(m[1], 16)), text)
        text = _CSS_OTHER.sub(r"\1", text)
    return _strip_tags(_drop_between(text, "/*", "*/"))


def _style_element_urls(data: bytes, low: bytes, spans: list[tuple[int, int]]) -> list[str]:
    """The URLs each ``<style>`` element loads once ``washtml_callback`` and
    ``rcube_utils::mod_css_styles`` decode its text (a browser decodes nothing there):
    none when it imports, holds an escape, a comment or "expression", and only those
    its callback keeps (remote ones without a query)."""
    out = []
    pos = 0
    while (start := low.find(b"<style", pos)) >= 0:
        gt = low.find(b">", start + 6)
        if gt < 0:
            break
        end = low.find(b"</style", gt)
        end = len(low) if end < 0 else end
        spans.append((gt + 1, end))
        if _CSS_LOAD.search(low, gt + 1, end) is not None:
            text = _style_element(data[gt + 1 : end].decode("utf-8", "replace"))
            out += [url for url in _style_urls(text, attribute=False)
                    if _KEPT_URL.fullmatch(url.strip())]
        pos = end
    return out


_EVIL_STYLE: Final = re.compile(r"expression|behavior|javascript:|import[^a]", re.IGNORECASE)
_NOT_LETTER: Final = re.compile(r"[^a-zA-Z(:;]")
_KEPT_URL: Final = re.compile(r"https?://[a-z0-9/._+-]+|data:image.*", re.IGNORECASE | re.DOTALL)


def _style_element(text: str) -> str:
    """The text ``mod_css_styles`` sanitises (its first decoding: the second is
    :func:`_style_urls` 's); empty when it keeps none of it."""
    if text.count("\n") > 5000:
        return ""
    text = _xss_entity_decode(text)
    if _EVIL_STYLE.search(_NOT_LETTER.sub("", text)):
        return ""
    if ("@import" in text.lower() or "{" not in text or "/*" in text or "<!--" in text
            or re.search(r"\\[0-9a-fA-F]{2}", text)):
        return ""
    return text


_PHP_TRIM: Final = " \t\n\r\x00\x0b"
_ASCII_BLANK: Final = re.compile(r"[ \t\n\x0b\x0c\r]")
_BODY_ATTRIBUTE: Final = re.compile(
    rb"""[\s/]*+([^\s/>"'=][^\s/>=]*+)(?:\s*+=\s*+("[^"]*+"?|'[^']*+'?|[^\s>]*+))?""")


def _body_backgrounds(data: bytes, low: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
    """A ``<body background>`` without blanks, as ``washtml_callback`` writes it:
    ``background-image: url(VALUE)`` (unquoted) on the message's container; and how far
    each ``<body`` 's attributes were read (to the byte that stopped them: a quoted value
    with a ">" in it, or left open, reads on past the tag)."""
    found: list[str] = []
    reach: list[tuple[int, int]] = []
    pos = 0
    while (start := low.find(b"<body", pos)) >= 0:
        pos = start + 5
        while (attr := _BODY_ATTRIBUTE.match(data, pos)) is not None and attr.end() > pos:
            pos = attr.end()
            if attr[1].lower() == b"background" and attr[2]:
                value = html_unescape(_unquoted(attr[2])).strip(_PHP_TRIM)
                if value and _ASCII_BLANK.search(value) is None:  # ("^([^\s]+)$")
                    found.append(value)
        reach.append((start, _BODY_GAP.match(data, pos).end() + 1))  # type: ignore[union-attr]
    return [b'<div style="background-image: url(%s)"></div>'
            % html.escape(value, quote=True).encode("utf-8") for value in found], reach


_BODY_GAP: Final = re.compile(rb"[\s/]*+")


def _char(code: int) -> str:
    """``mb_chr``: nothing for a code point that is no character."""
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""


def _drop_between(text: str, opener: str, closer: str) -> str:
    """Each ``opener`` up to the first ``closer`` after it deleted (``#/\\*.*\\*/#Us``)."""
    out: list[str] = []
    done = 0
    while (start := text.find(opener, done)) >= 0:
        end = text.find(closer, start + len(opener))
        if end < 0:
            break
        out.append(text[done:start])
        done = end + len(closer)
    return "".join(out) + text[done:]


def _strip_tags(text: str) -> str:
    """PHP's ``strip_tags``, as far as it matters here: from a ``<`` to the ``>`` that
    closes it deleted, ``<`` and ``>`` nesting (``<a<b>c>`` is one), a ``>`` inside
    quotes in a tag not closing it; an unclosed ``<`` to the end."""
    if "<" not in text:
        return text
    out: list[str] = []
    done = depth = 0
    quote = ""
    for m in _TAG_CHARS.finditer(text):
        char, at = m[0], m.start()
        if depth == 0:
            if char == "<":
                out.append(text[done:at])
                depth = 1
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "<":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                done = at + 1
    return "".join(out) + ("" if depth else text[done:])


_TAG_CHARS: Final = re.compile(r"[<>'\"]")


_STEPS: Final[tuple[_Step, ...]] = (
    # rcmail_action_mail_index::wash_html
    _meta_charsets, _meta_in_head,
    # rcube_washtml::cleanup
    _trim, _nobr, _titles, _doctypes, _bom, _html_attributes, _xml_declarations,
    _word_chars, _tags, _alnum_comments, _broken_lists, _resolve_base)


# -- what loads -----------------------------------------------------------------------------

_READ_AS_UTF8: Final = frozenset({"utf-8", "replacement"})
_READ_AS_WINDOWS_1252: Final = frozenset({"us-ascii", "iso-8859-1", UNKNOWN_CHARSET})


def requoted(washing: Washing) -> bool:
    """Whether the washer put quotes into the text (a curly one straightened)."""
    return washing.edits is None or any(
        new in (b'"', b"'") for edits in washing.edits for _, _, new in edits)


def washed_as_is(view: bytes, charset: str) -> bool:
    """Whether :func:`text_of` a part's ``view`` in ``charset`` is ``view`` itself (valid
    UTF-8, or ASCII read as windows-1252), without making it."""
    if view.isascii():
        return charset in _READ_AS_UTF8 or charset in _READ_AS_WINDOWS_1252
    if charset not in _READ_AS_UTF8:
        return False
    try:
        view.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def washed_as_is_near(view: bytes, charset: str,
                      regions: Sequence[tuple[int, int, int, int]]) -> bool:
    """:func:`washed_as_is` of ``view``, which equals a text that was washed as is
    except in ``regions`` (``(a0, a1, b0, b1)``: ``view[b0:b1]`` stands where that text
    had ``[a0:a1]``, in order): only the regions are read.  ASCII stays ASCII where the
    regions are.  UTF-8 is valid where each region, widened to the characters it cuts
    (back to where the character before it starts, on past the continuation bytes after
    it), decodes: outside the widened regions ``view`` is that text, cut where its
    characters start.  A campaign's copies differ in a few bytes; the text is 60 KB.

    >>> washed_as_is_near("caf\\u00e9 x".encode(), "utf-8", [(6, 7, 6, 7)])
    True
    >>> washed_as_is_near(b"caf\\xc3 x", "utf-8", [(4, 5, 4, 4)])  # (its second byte gone)
    False
    >>> washed_as_is_near(b"caf\\xe9", "iso-8859-1", [(3, 4, 3, 4)])
    False
    """
    if charset not in _READ_AS_UTF8:
        return charset in _READ_AS_WINDOWS_1252 and all(
            view[b0:b1].isascii() for _, _, b0, b1 in regions)
    end = -1  # where the last widened region ended
    for _, _, b0, b1 in regions:
        start, stop = max(b0 - 1, 0), b1  # (from the character before the region's)
        while start > 0 and start > end and 0x80 <= view[start] < 0xC0:
            start -= 1
        while stop < len(view) and 0x80 <= view[stop] < 0xC0:
            stop += 1
        start = max(start, end)
        if start < stop:
            try:
                view[start:stop].decode("utf-8")
            except UnicodeDecodeError:
                return False
            end = stop
    return True


def text_of(data: bytes, charset: str) -> bytes:
    """The part's text as the washer gets it: UTF-8 with invalid sequences deleted;
    ISO-8859-1, US-ASCII, no label or an unknown one read as windows-1252 (its curly
    quotes then straightened); another charset converted first."""
    if charset in _READ_AS_UTF8 or charset in _READ_AS_WINDOWS_1252:
        if washed_as_is(data, charset):  # (one check; no new text made)
            return data
        if charset in _READ_AS_UTF8:
            return data.decode("utf-8", "ignore").encode("utf-8")
        return data.decode("cp1252", "replace").encode("utf-8")
    return decode_text(data, charset).encode("utf-8", "replace")


def _remote_loads(document: bytes, max_tags: int = DEFAULT_MAX_TAGS,
                  templates: ScanCache | None = None, earlier: Earlier | None = None
                  ) -> set[str] | None:
    """The remote loads of ``document``; None when its scan is incomplete (a limit).
    ``templates``: scans of the texts washed before, so that a campaign's further copies
    are scanned only where they differ (:mod:`~beacon_proxy.rewrite.rescan`);
    ``earlier``: where ``document`` differs from a text washed before, when known."""
    rescanned = None if templates is None else templates.rescan(
        document, "utf-8", max_tags,
        (earlier[0], earlier[2]) if earlier is not None and earlier[1] is document else None)
    if rescanned is not None:
        entries, _, incomplete = finish_scan(rescanned)
    else:
        entries, _, incomplete = scan_entries(document, max_tags=max_tags, learner=templates)
    return None if incomplete is not None else loaded(entries)


def loaded(entries: Iterable[Entry]) -> set[str]:
    """The URLs of the remote loads among a scan's ``entries`` (links are not loads)."""
    return {entry.url for entry in entries if entry.remote and (
        isinstance(entry, PendingImg) or entry.element != "a")}


def _washed_loads(data: bytes | Washing | Readings, charset: str, max_tags: int = DEFAULT_MAX_TAGS,
                  templates: ScanCache | None = None, names: bool = False,
                  earlier: Earlier | None = None) -> set[str] | None:
    """The remote loads of the washed text; None when the washer's reading is not
    modelled or a scan of it is incomplete."""
    read = data if isinstance(data, Readings) else readings(
        text_of(data, charset) if isinstance(data, bytes) else data, names=names)
    if read is None:
        return None
    found = {url for url in map(clean_url, read.css) if is_remote(url)}
    for index, document in enumerate(read.documents):
        urls = _remote_loads(document, max_tags, templates if index == 0 else None, earlier)
        if urls is None:
            return None
        found |= urls
    return found


def loads_more(data: bytes | Washing | Readings, charset: str, mine: set[str] | None = None, *,
               max_tags: int = DEFAULT_MAX_TAGS, templates: ScanCache | None = None,
               earlier: Earlier | None = None) -> bool:
    """Whether the washed text of ``data`` (an HTML part's text in ``charset``, the
    scanner's own; or its :class:`Washing` or :class:`Readings`) loads something remote
    that the text as
    written does not (``mine``: its remote loads, when already known; ``templates`` and
    ``earlier``: as for :func:`_remote_loads`)."""
    theirs = _washed_loads(data, charset, max_tags, templates, earlier=earlier)
    if theirs is None:
        return True
    if mine is None:
        if isinstance(data, Readings):
            return True  # (the caller knows its own loads)
        text = data if isinstance(data, bytes) else data.text
        mine = _remote_loads(decode_text(text, charset).encode("utf-8", "replace"), max_tags)
        if mine is None:
            return True
    return not theirs <= mine


def loads(data: bytes, charset: str) -> bool:
    """Whether the washed text of ``data`` loads anything remote at all (or may: a
    reading not modelled).  The fallback's check: its scans have no tag limit (they are
    linear), so that a part with more tags than the precise path reads is not held."""
    return _washed_loads(data, charset, max_tags=6 * len(data) + 64,  # (>= its bytes)
                         names=True) != set()
