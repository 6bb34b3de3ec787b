"""Elements that hide everything inside them: the image a hidden ancestor hides.

An image need not be styled hidden itself: ``<div style="display:none"><img
src="https://t.example/o/8f3a..."></div>`` loads in every client and shows nothing.  The
scanner never looks at a plain ``<div>`` (compiled patterns skip it in C, which is
where its speed comes from), so this module finds the hiding ancestors in a pass of its
own, and only where a hiding declaration exists at all:

>>> low = b'<p>a</p><div style="display:none"><b><img src="x"></b></div><img src="y">'
>>> hidden_ranges(low, [], [])
[(8, 54)]

1. a few compiled searches (:func:`hiding_marks`) for what can hide an element's
   content: ``display:none``, ``visibility:hidden|collapse`` and
   ``content-visibility:hidden`` (blanks allowed before the colon), the names
   ``opacity`` (below :data:`~.boxes.FAINT`, 0.1: nobody sees it) and ``overflow``,
   ``overflow-x``, ``overflow-y`` (anything but ``visible`` along a side whose
   ``width``/``height`` or maximum is 0-2 px: the preheader idiom
   ``max-height:0;overflow:hidden``, a 1 x 1 box that clips a big image), the
   ``hidden`` attribute, and what a style may hide a declaration behind
   (:func:`obscured_marks`: a CSS escape or comment, ``disp\\lay``,
   ``display:/**/none``; a character reference to an ASCII character,
   ``display&#58;none``; ``&colon;``, ``&Tab;``, ``&NewLine;``).  About 125 us on the
   60 KB HTML of the benchmark newsletter (63 before session 27 added the names and the
   obscured marks); nothing else runs when there is no match;
2. per match, the start tag around it: its first ``style`` attribute is read as a
   browser reads it (character references, then CSS's tokens: :func:`_hides`), and a
   hiding declaration must win there (``display:none;display:block`` is not hidden); a
   ``hidden`` attribute hides (the user agent's ``[hidden]{display:none}``) unless
   an author style can show the element again: its own ``style`` sets ``display``,
   or a ``<style>`` block sets a ``display`` somewhere and names the element's tag,
   a class or its id, or styles ``[hidden`` at all.  On an image or an ``<iframe>``
   itself (a void element, raw text) the range is its own tag: its box says
   ``display:none``;
3. per hiding element, its extent: a walk over the tags after it with a stack of the
   elements opened inside (at most :data:`MAX_DEPTH`; past it the scan is truncated
   and refused copies take the fallback).  The element ends at its end tag, at an end
   tag of an element not opened inside it (an ancestor's, which closes it in HTML, or a
   stray one: ending early is the safe side), at a start tag that closes it implicitly
   (``<div>`` closes a ``<p>`` and the inline elements in it, ``<td>`` a ``<td>``,
   ``<li>`` an ``<li>``), or at the end.

The rules of the part's ``<style>`` blocks that hide (:mod:`.stylerules`) add marks of
their own (:func:`rule_marks`: where a class, id, attribute or tag a rule requires
stands), and every tag judged is judged by them too (``.p{display:none}`` hides
``<img class="p">`` and ``<div class="p">`` with what is inside).

Hiding elements inside a range already found are not walked again, and every search
resumes where the last one stopped: the pass is linear in the document.

Not counted as hiding (the image stays as its own box says):

* ``html``, ``head`` and ``body`` (webmail clients drop their style), void elements,
  table parts before the first ``<table>`` (a browser drops such a tag),
  raw-text elements, anything inside a comment or raw text (``opaque`` spans from the
  scanner);
* ``mso-hide:all`` on an ancestor: only Outlook hides it, other clients show the image;
* an element a rule inside ``@media`` styles (:meth:`~.stylerules.HidingRules.revealed`):
  the responsive idiom that reveals mobile-only content (``display:block !important`` in
  a media query) would otherwise cost its images;
* off-screen positioning, ``transform``, ``clip-path``, ``zoom`` (not modelled:
  ``docs/rewriting.md``, "Not detected").

>>> hidden_ranges(b'<p>a</p><img src="x" hidden><div hidden><img src="y"></div>', [], [])
[(8, 28), (28, 53)]
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from html.entities import html5

from beacon_proxy.rewrite.boxes import clips, faint
from beacon_proxy.rewrite.css import weighted_declarations
from beacon_proxy.rewrite.htmlattr import Span, unescape
from beacon_proxy.rewrite.htmlpatterns import TAG_ATTR
from beacon_proxy.rewrite.stylerules import (
    MAX_WORDS,
    HidingRules,
    RulesLimitError,
    read_rules,
    sheet_mode,
)

__all__ = ["ENDLESS", "MAX_DEPTH", "MAX_NESTING", "HidingLimitError", "attr_values",
           "enclosing_tag", "hidden_ranges", "hiding_attributes", "hiding_declarations",
           "hiding_marks", "hiding_names", "obscured_marks", "rule_marks"]

MAX_DEPTH = 256  # elements open inside one hiding element

_WS = rb"[\t\n\f\r ]"
_BLANK_BYTES = b"\t\n\f\r "
#: The declarations that hide an element's content by a word, on the lower-cased view:
#: ``display:none``, ``visibility:hidden|collapse``, blanks allowed before the colon.  The
#: mark is group 1, from the ":" on.  The definition: :func:`hiding_declarations` finds
#: the same marks faster.
_HIDING = re.compile(
    rb"(?:display|visibility)" + _WS + rb"*+(:" + _WS + rb"*+(?:none|hidden|collapse))"
    rb"(?![-a-z0-9_])"
)
#: :data:`_HIDING` from its value: a blank run and a branch of literals, which re rejects
#: without entering a frame; the property is checked in Python.
_HIDING_VALUE = re.compile(rb":" + _WS + rb"*+(?:none|hidden|collapse)(?![-a-z0-9_])")
_HIDING_PROPERTIES = (b"display", b"visibility")
#: Every property a mark from a ":" follows, longest first (``overflow-x`` before
#: ``overflow``: :func:`hidden_ranges` checks the byte before it).
_PROPERTIES = (b"content-visibility", b"visibility", b"overflow-x", b"overflow-y",
               b"overflow", b"display", b"opacity")
#: The declarations that hide by a number or with a size: ``opacity`` (faint), ``overflow``
#: (any value but ``visible``, with a size of 0-2 px).  Rare in mail, so found by name;
#: the mark is group 1, from the ":" on.
_HIDING_NAME = re.compile(rb"(?<![-a-z0-9_])(?:opacity|overflow(?:-[xy])?)" + _WS + rb"*+(:)")
#: What a style attribute may hide a declaration behind (:func:`obscured_marks`): a CSS
#: escape or comment (``disp\lay``, ``display:/**/none``), found from the rare ``\`` and
#: ``*``; and a character reference (:data:`_REFERENCES`).
_OBSCURED = re.compile(rb"\\|/\*")
#: Named character references to ASCII punctuation or a blank (lower-cased, as the view
#: is): ``&sol;&ast;`` is a comment's "/*", ``&bsol;`` an escape, ``&colon;`` a colon.
_PUNCTUATION_NAMES = frozenset(
    name.rstrip(";").lower().encode() for name, text in html5.items()
    if len(text) == 1 and ord(text) < 0x80 and not text.isalnum() and text not in "\"'&<>")
_LONGEST_FIRST: list[bytes] = sorted(_PUNCTUATION_NAMES, key=lambda name: (-len(name), name))
#: A reference to an ASCII character (numeric, checked in Python: :func:`_ascii_reference`;
#: or one of those names), searched from its "&".
_REFERENCES = re.compile(rb"&(?:#(x?)([0-9a-f]{1,8})|(" + b"|".join(_LONGEST_FIRST)
                         + rb")(?![a-z]);?)")
#: The names :data:`_HIDING_NAME` starts with, searched from a literal first byte.
_NAMES = re.compile(rb"o(?:pacity|verflow)")
_QUOTES = (0x22, 0x27)
#: The ``hidden`` attribute's name, up to what ends it; the byte before it must end the
#: tag's name or an attribute (checked in Python: :func:`hiding_attributes`).
_HIDDEN_ATTRIBUTE = re.compile(rb"hidden(?=[\t\n\f\r /=>])")
_BEFORE_ATTRIBUTE = b"\t\n\f\r /\"'"
#: A word of a style block: a tag, class or id name a selector may hold.
_STYLE_WORD = re.compile(rb"[-_a-z0-9]++")
#: An attribute selector on ``hidden`` (``[hidden]``, ``[ hidden ]``, ``[hidden=""]``).
_HIDDEN_SELECTOR = re.compile(rb"\[" + _WS + rb"*+hidden(?![-_a-z0-9])")
#: Any tag: its name (group 2; group 1 "/" for an end tag) and its whole extent, quotes
#: honoured.  Searched in the lower-cased view.
_TAG = re.compile(
    rb"<(/?)([a-z][^\t\n\f\r />]*+)(?:[\t\n\f\r /]*+[^\t\n\f\r />][^\t\n\f\r /=>]*+(?:" + _WS
    + rb"*+=" + _WS + rb"*+(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >]*+))?)*+[\t\n\f\r /]*+>"
)
_TAG_START = re.compile(rb"</?[a-z]")
_LOOKBEHIND = len(b"content-visibility")  # the longest property before a mark's ":"
_BEFORE_PROPERTY = b";\"'=\t\n\f\r {"
_VOID = frozenset({b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input",
                   b"link", b"meta", b"source", b"track", b"wbr", b"param", b"keygen",
                   b"image"})
_NEVER = frozenset({b"html", b"head", b"body", b"script", b"style", b"textarea", b"title",
                    b"xmp", b"iframe", b"noembed", b"noframes", b"plaintext", b"template"})
_P_CLOSERS = frozenset({
    b"address", b"article", b"aside", b"blockquote", b"center", b"details", b"dialog",
    b"dir", b"div", b"dl", b"fieldset", b"figcaption", b"figure", b"footer", b"form", b"h1",
    b"h2", b"h3", b"h4", b"h5", b"h6", b"header", b"hgroup", b"hr", b"main", b"menu",
    b"nav", b"ol", b"p", b"pre", b"section", b"summary", b"table", b"ul", b"li", b"dd",
    b"dt", b"plaintext", b"xmp", b"listing",
})
_CELL = frozenset({b"td", b"th", b"tr", b"tbody", b"thead", b"tfoot", b"caption", b"col",
                   b"colgroup"})
_ROW = _CELL - {b"td", b"th"}
_SECTION = _ROW - {b"tr"}
_HEADINGS = frozenset({b"h1", b"h2", b"h3", b"h4", b"h5", b"h6"})
#: (start tags that close whatever is open in an element they would end, the elements
#: whose being open inside stops them, the hidden elements they belong to): an ``<li>``
#: ends the ``<li>`` it follows and everything in it, unless a list is open inside.
_LIST_RULES = (
    (frozenset({b"li"}), frozenset({b"ul", b"ol", b"menu"}), frozenset({b"ul", b"ol", b"menu"})),
    (frozenset({b"dt", b"dd"}), frozenset({b"dl"}), frozenset({b"dl"})),
)
#: hidden element -> the table parts whose start tag closes it (unless a table is open
#: inside it): a cell ends at the next cell or row, anything in a cell with its cell.
_TABLE_CLOSERS: dict[bytes, frozenset[bytes]] = {
    b"table": frozenset(), b"tr": _ROW, b"tbody": _SECTION, b"thead": _SECTION,
    b"tfoot": _SECTION,
}
_BLOCK = _P_CLOSERS | _CELL | {b"table", b"object", b"marquee", b"applet", b"button",
                               b"template", b"select"}


def _blanks_before(low: bytes, at: int) -> int:
    """Where the run of blanks that ends at ``at`` starts."""
    while at and low[at - 1] in _BLANK_BYTES:
        at -= 1
    return at


def hiding_declarations(low: bytes, start: int = 0, end: int = sys.maxsize
                        ) -> Iterator[re.Match[bytes]]:
    """The marks of :data:`_HIDING` whose ":" is in ``low[start:end]`` (the property and
    blanks before it are read before ``start`` as a look-behind would), in order.

    Why not the pattern itself: its properties would be tried at every "d" and "v" of the
    view; the value first (``:none`` and the like) is rare, and the Python test runs per
    candidate, never per ":".  No two candidates overlap (each holds one ":", at its start).
    """
    ends = low.endswith
    for m in _HIDING_VALUE.finditer(low, start, end):
        if ends(_HIDING_PROPERTIES, 0, _blanks_before(low, m.start())):
            yield m


def hiding_names(low: bytes, start: int = 0, end: int = sys.maxsize
                 ) -> Iterator[re.Match[bytes]]:
    """The ``opacity`` and ``overflow`` declarations whose ":" is in ``low[start:end]``:
    each a match of a ":" and the blanks after it (the name and the blanks before the ":"
    may stand before ``start``, as a look-behind reads).  Found by the names alone (a
    pattern with a look-behind first is tried at every byte: 30 times slower)."""
    floor = max(0, _blanks_before(low, min(start, len(low))) - len(b"overflow-x"))
    for name in _NAMES.finditer(low, floor, end):
        m = _HIDING_NAME.match(low, name.start(), end)
        if m is not None and m.start(1) >= start:
            colon = _COLON_BLANKS.match(low, m.start(1), end)
            if colon is not None:
                yield colon


_COLON_BLANKS = re.compile(rb":" + _WS + rb"*+")


def obscured_marks(low: bytes, start: int = 0, end: int = sys.maxsize
                   ) -> Iterator[re.Match[bytes]]:
    """Where a style may say what no literal search reads (:data:`_OBSCURED`); a numeric
    character reference only when it stands for an ASCII character other than a quote
    (``&#8217;`` and ``&#39;`` in text are many, and hide no declaration).  Found from
    the ``&`` on, and from the rare ``\\`` and ``*`` by ``memchr`` (one pattern for all
    would be tried at every ``/`` of the URLs: ten times slower)."""
    found = [m for m in _REFERENCES.finditer(low, start, end) if _ascii_reference(m)]
    for needle in b"\\*":  # memchr: rare bytes in markup
        pos = low.find(needle, start, end)
        while pos >= 0:
            m = _OBSCURED.match(low, pos - (needle == 0x2A), end)
            if m is not None and m.start() >= start:
                found.append(m)
            pos = low.find(needle, pos + 1, end)
    found.sort(key=_start)
    return iter(found)


def _ascii_reference(m: re.Match[bytes]) -> bool:
    """Whether an obscured mark is no numeric reference, or one to an ASCII character
    other than a quote (decimal digits only count in a decimal one: ``&#12ab;`` is 12)."""
    digits = m.group(2)
    if digits is None:
        return True  # a name the pattern holds
    if m.group(1):
        value = int(digits, 16)
    else:
        run = len(digits) - len(digits.lstrip(b"0123456789"))
        if not run:
            return False
        value = int(digits[:run])
    return value < 0x80 and value not in _QUOTES


#: ``<`` tried around one mark: a start tag inside another's quoted value, and "<" that
#: start no tag.  Past it the part counts as truncated (refused copies take the fallback).
MAX_NESTING = 32
ENDLESS = re.compile(b"").match(b"")  # enclosing_tag(): a tag that never ends


def enclosing_tag(low: bytes, at: int, attribute: bool, floor: int,
                  note: Callable[[Span], None], opaque_starts: Sequence[int],
                  opaque: Sequence[Span], strict: bool = False) -> re.Match[bytes] | None:
    """The tag that holds position ``at`` (a hiding mark, an ``attribute`` or a
    declaration), looking back no further than
    ``floor``: None when ``at`` is in text, :data:`ENDLESS` in a tag that never ends.

    The nearest ``<`` before ``at`` may sit in an attribute value (``<img alt="<"
    hidden>``, ``<p title="<div hidden>">``): a ``<`` that starts no tag is passed
    over, and a tag found is replaced by the one further back while that one's extent
    holds it - looked for only when a quote stands between the last ``>`` before the tag
    and the tag, or one is left open between the tag and the mark (else the tags before,
    a campaign's personal pixel often, would be read for every hidden element after
    them; a ``>`` in a value may hide the rest from us: ``<p title="a>b <div hidden>">``
    hides more than a browser does).
    ``strict``: always look further back (a ``>`` in a value cannot hide it then).
    Raises :class:`HidingLimitError` past :data:`MAX_NESTING` steps.
    """
    tag: re.Match[bytes] | None = None
    hi = at
    for _ in range(MAX_NESTING):
        cand = low.rfind(b"<", floor, hi)
        note((floor if cand < 0 else cand, hi))
        if cand < 0:
            return tag
        i = bisect_right(opaque_starts, cand) - 1
        if i >= 0 and opaque[i][1] > cand:
            return tag  # a comment or raw text: no tag around it reaches here
        m = _TAG.match(low, cand)
        if m is None:
            if _TAG_START.match(low, cand) is None:
                note((cand, cand + 3))  # what both patterns read of it
                hi = cand  # a "<" that starts no tag ("1 < 2", alt="<"): further back
                continue
            note((cand, len(low)))
            return ENDLESS
        note((cand, m.end()))
        if m.end() <= (at if tag is None else tag.start()):
            return tag  # it ends before: what was found is not inside it
        if m.end() <= at:  # it holds the tag found (in a value) but ends before the mark:
            floor, tag, hi = m.end(), None, at  # the mark's tag starts after it
            continue
        tag, hi = m, cand
        gt = low.rfind(b">", floor, cand)
        note((floor if gt < 0 else gt, max(cand, at)))
        if not strict and low.find(b'"', gt + 1, cand) < 0 and low.find(
                b"'", gt + 1, cand) < 0 and not (
                attribute and (low.count(b'"', cand, at) % 2 or low.count(b"'", cand, at) % 2)):
            return tag  # no quote since the last ">", none left open up to an attribute
            # mark (a declaration's is in its style's quotes): not in a value (most tags)
    raise HidingLimitError(f"more than {MAX_NESTING} tags or '<' around a hiding mark")


def hiding_attributes(low: bytes, start: int = 0, end: int = sys.maxsize
                      ) -> Iterator[re.Match[bytes]]:
    """The ``hidden`` attribute names of ``low[start:end]`` that may be one: after a
    blank, a ``/`` or a quote (read before ``start`` as a look-behind would), before a
    blank, ``/``, ``=`` or ``>``.  Whether it is in a tag is for :func:`hidden_ranges`.
    """
    for m in _HIDDEN_ATTRIBUTE.finditer(low, start, end):  # re's literal search: 22 us
        at = m.start()  # on the 70 KB newsletter (bytes.find of "hidden" to its end: 31)
        if at and low[at - 1] in _BEFORE_ATTRIBUTE:
            yield m


def _start(m: re.Match[bytes]) -> int:
    return m.start()


def hiding_marks(low: bytes, start: int = 0, end: int = sys.maxsize
                 ) -> Iterator[re.Match[bytes]]:
    """:func:`hiding_declarations`, :func:`hiding_names`, :func:`hiding_attributes` and
    :func:`obscured_marks`, by position: what :func:`hidden_ranges` looks at (a
    declaration's match starts at its ":", an attribute's at its name, an obscured mark at
    its ``\\``, ``/`` or ``&``).  Each list is in order and short: sorted together
    (stable: as ``heapq.merge`` orders them), a third of ``merge`` 's cost for the small
    windows a campaign's copy is searched in."""
    marks = [m for _, found in _searches(low, start, end) for m in found]
    marks.sort(key=_start)
    return iter(marks)


_COLON, _ATTRIBUTE, _OBSCURE, _RULE = range(4)  # the kinds of marks, in hidden_ranges()


def _searches(low: bytes, start: int, end: int
              ) -> tuple[tuple[int, Iterator[re.Match[bytes]]], ...]:
    """The searches :func:`hiding_marks` merges, each with the kind of its marks."""
    return ((_COLON, hiding_declarations(low, start, end)),
            (_COLON, hiding_names(low, start, end)),
            (_ATTRIBUTE, hiding_attributes(low, start, end)),
            (_OBSCURE, obscured_marks(low, start, end)))


class HidingLimitError(ValueError):
    """A hiding element holds more than :data:`MAX_DEPTH` open elements."""


def _style_value(low: bytes, start: int, end: int) -> Span | None:
    """The span (inside quotes) of the first ``style`` value of the tag at ``start:end``."""
    pos = start + 1
    while pos < end and low[pos] not in b"\t\n\f\r />":
        pos += 1  # past the name
    while pos < end:
        m = TAG_ATTR.match(low, pos)
        if m is None or m.group(1) is not None or m.end() > end:
            return None
        if m.group(2) == b"style":
            for group in (3, 5, 7):
                if m.start(group) >= 0:
                    return m.span(group)
            return None
        if m.end() == pos:
            return None
        pos = m.end()
    return None


def attr_values(low: bytes, start: int, end: int,
                 names: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The values of the attributes ``names`` (first of each) of the tag at ``start:end``."""
    pos = start + 1
    while pos < end and low[pos] not in b"\t\n\f\r />":
        pos += 1
    out: dict[bytes, bytes] = {}
    while pos < end:
        m = TAG_ATTR.match(low, pos)
        if m is None or m.group(1) is not None or m.end() > end or m.end() == pos:
            break
        name = m.group(2)
        if name in names and name not in out:
            out[name] = m.group(3) or m.group(5) or m.group(7) or b""
        pos = m.end()
    return out


def _own_declarations(low: bytes, start: int, end: int
                      ) -> tuple[dict[str, str], set[str]] | None:
    """The declarations of the first style attribute of the tag at ``start:end`` and
    those that are ``!important`` (None: it has none), read as a browser reads them:
    character references decoded first (``font-family:&quot;Open Sans&quot;`` is
    common, ``display&#58;none`` hostile), then as CSS tokenizes it (comments, escapes:
    :func:`~.css.weighted_declarations`)."""
    value = _style_value(low, start, end)
    if value is None:
        return None
    css = low[value[0] : value[1]]
    if b"&" in css:  # (the view is lower-cased: "&Tab;" and "&NewLine;" are read so)
        css = css.replace(b"&tab;", b"\t").replace(b"&newline;", b"\n")
        css = unescape(css.decode("latin-1")).lower().encode("latin-1", "replace")
    return weighted_declarations(css, lower=True)


def _hides(d: dict[str, str] | None) -> bool | None:
    """Whether a tag's own declarations ``d`` hide its content: a hiding declaration that
    wins there; None when they set no ``display`` (a ``hidden`` attribute then hides,
    unless a style block shows the element)."""
    if d is None:
        return None
    if _hiding_props(d):
        return True
    return False if "display" in d else None


def _hiding_props(d: dict[str, str]) -> list[str]:
    """The properties by which declarations ``d`` hide an element's content."""
    out = []
    if d.get("display") == "none":
        out.append("display")
    if d.get("visibility") in ("hidden", "collapse"):
        out.append("visibility")
    if d.get("content-visibility") == "hidden":
        out.append("content-visibility")
    if "opacity" in d and faint(d["opacity"]):
        out.append("opacity")
    if clips(d):
        out += ["overflow", "overflow-x", "overflow-y", "width", "height", "max-width",
                "max-height"]
    return out


def _shown_by_style(low: bytes, name: bytes, values: dict[bytes, bytes],
                    styled: frozenset[bytes]) -> bool:
    """Whether a style block may show a ``hidden`` element again (``styled``: the words
    of the style blocks that set a ``display``; ``[hidden`` among them: any)."""
    return b"[hidden" in styled or name in styled or any(
        token in styled for key in (b"class", b"id")
        for token in values.get(key, b"").split())


def _extent(low: bytes, name: bytes, pos: int, opaque_starts: Sequence[int],
            opaque: Sequence[Span]) -> Span:
    """Where the element ``name`` whose start tag ends at ``pos`` ends (see the docstring),
    and where the bytes read to find out end."""
    # A block start tag closes a <p>, and an inline element (span, a, font) in one; whether
    # a <p> is open around an inline element is not known here: it ends there in any case.
    closers = _P_CLOSERS if name == b"p" or name not in _BLOCK else frozenset()
    cells = _TABLE_CLOSERS.get(name, _CELL)
    lists = [(tags, shield) for tags, shield, owners in _LIST_RULES if name not in owners]
    stack: list[bytes] = []
    n = len(low)
    while True:
        found = _TAG_START.search(low, pos)
        if found is None:
            return n, n
        i = bisect_right(opaque_starts, found.start()) - 1
        if i >= 0 and opaque[i][1] > found.start():
            pos = opaque[i][1]  # a comment or raw text: no tags in it
            continue
        m = _TAG.match(low, found.start())
        if m is None:
            return n, n  # a tag that never ends: the rest of the document is in it
        pos = m.end()
        tag = m.group(2)
        if m.group(1):  # an end tag
            if tag in stack:
                del stack[len(stack) - 1 - stack[::-1].index(tag):]
                continue
            return m.start(), m.end()  # its own, an ancestor's or a stray one
        if tag in closers or (tag in cells and b"table" not in stack) or (
                not stack and tag in _HEADINGS and name in _HEADINGS):
            return m.start(), m.end()
        if any(tag in tags and shield.isdisjoint(stack) for tags, shield in lists):
            return m.start(), m.end()
        if tag not in _VOID:
            stack.append(tag)
            if len(stack) > MAX_DEPTH:
                raise HidingLimitError(f"more than {MAX_DEPTH} elements open in a hidden one")


def hidden_ranges(low: bytes, opaque: Sequence[Span], styles: Sequence[Span],
                  reads: list[Span] | None = None,
                  declarations: list[int] | None = None,
                  words: list[bytes] | None = None) -> list[Span]:
    """The spans of the elements that hide their content, sorted and disjoint.

    ``low``: the lower-cased view; ``opaque``: the scanner's comment and raw-text spans
    (sorted); ``styles``: the contents of its ``<style>`` blocks.  Raises
    :class:`HidingLimitError` past :data:`MAX_DEPTH`, :data:`~.stylerules.MAX_WORDS` or
    :data:`~.stylerules.MAX_RULES`.
    ``reads``: where to note every stretch of ``low`` the result depends on, besides the
    marks searched for, ``opaque`` and ``styles`` (:mod:`~beacon_proxy.rewrite.rescan`
    reuses a result where none of them changed); each is ``(start, end)``, ends included.
    ``declarations``: where to note where each mark found starts.  ``words``: where to
    note the words the style blocks' hiding rules are searched by (:func:`rule_marks`).
    """
    note = ([] if reads is None else reads).append  # a few per hiding declaration
    out: list[Span] = []
    opaque_starts = [start for start, _ in opaque]
    rules = _style_rules(low, styles, note)
    searched = sorted(rules.words_searched()) if rules is not None else []
    if words is not None:
        words.extend(searched)
    styled: frozenset[bytes] | None = None  # words of style blocks with a display (same)
    first_table = -1  # where the first <table starts, once looked for (past the end: none)
    seen = 0  # past the last mark and the tag judged for it: each tag is judged once
    marks = [(m.start(), m.end(), kind) for kind, found in (
        *_searches(low, 0, sys.maxsize), (_RULE, rule_marks(low, searched))) for m in found]
    marks.sort()
    for at, mark_end, kind in marks:
        attribute = kind == _ATTRIBUTE  # (else in a value: a declaration from its ":", an
        # escape, comment or reference that may hide one, a word a hiding rule names)
        if kind == _COLON:  # with the byte before the property and the blanks after it
            gap = _blanks_before(low, at)
            note((gap - _LOOKBEHIND - 1, mark_end))
        else:
            note((at - 1, mark_end + 1))  # with the bytes before and after
        if declarations is not None:
            declarations.append(at)
        if (out and at < out[-1][1]) or at < seen:
            continue  # inside a hidden element, or the tag judged last, already
        if kind == _COLON:
            prop_start = next((gap - len(p) for p in _PROPERTIES
                               if low.startswith(p, gap - len(p))), -1)
            if prop_start <= 0 or low[prop_start - 1] not in _BEFORE_PROPERTY:
                continue
        i = bisect_right(opaque_starts, at) - 1
        if i >= 0 and opaque[i][1] > at:
            continue  # in a comment or raw text
        tag = enclosing_tag(low, at, attribute, seen, note, opaque_starts, opaque)
        if tag is ENDLESS:
            break  # a tag that never ends: the rest of the document is in it
        seen = at if tag is None else max(at, tag.end())  # each tag is judged once
        if tag is None or tag.group(1):
            continue  # text, or an end tag
        lt = tag.start()
        name = tag.group(2)
        void = name in _VOID or name == b"iframe"  # its own style is its box already; its
        if (name in _NEVER and name != b"iframe") or name.startswith((b"v:", b"o:", b"w:")):
            continue
        if name in _CELL:
            if first_table < 0:
                first_table = low.find(b"<table")
                first_table = len(low) if first_table < 0 else first_table
                note((0, first_table + len(b"<table")))
            if not 0 <= first_table < lt:
                continue  # outside a table a browser drops the tag (and its style)
        weighted = _own_declarations(low, lt, tag.end())
        own, strong = weighted if weighted is not None else (None, set())
        hides = _hides(own)
        if void and hides:
            continue  # its own style says so (its box) already
        values = attr_values(low, lt, tag.end(), (b"class", b"id", b"hidden", *(
            rules.attributes if rules is not None else ())))
        classes, ids = _decoded(values.get(b"class", b"")), _decoded(values.get(b"id", b""))
        by_rule = rules is not None and rules.hides(name, classes, ids, own or {}, void,
                                                    values, strong)
        if not by_rule:
            if void and hides is not None:
                continue  # its own style decides (its box), also over a hidden attribute
            if hides is None:  # no own display: a hidden attribute, unless a style shows it
                if b"hidden" not in values or (
                        void and values[b"hidden"].strip() == b"until-found"):
                    continue  # (until-found hides an element's content, not a replaced one)
                if styles and styled is None:
                    styled = frozenset(word for a, b in styles
                                       if low.find(b"display", a, b) >= 0
                                       for word in _STYLE_WORD.findall(low, a, b))
                    if any(_HIDDEN_SELECTOR.search(low, a, b) for a, b in styles):
                        styled = styled | {b"[hidden"}
                    for a, b in styles:
                        note((a, b))
                if styled and _shown_by_style(low, name, values, styled):
                    continue
            elif not hides:
                continue
            if rules is not None and rules.revealed(
                    name, classes, ids, values,
                    _hiding_props(own) if hides and own is not None else ["display"]):
                continue  # a media query may reveal it
        if void:
            out.append((lt, tag.end()))  # the image's own tag (seen is past it already)
            continue
        end, read = _extent(low, name, tag.end(), opaque_starts, opaque)
        note((tag.end(), read))
        out.append((lt, end))
        seen = max(seen, end)
    return out


def _decoded(value: bytes) -> bytes:
    """A ``class`` or ``id`` value with its character references decoded (lower-cased)."""
    if b"&" not in value:
        return value
    return unescape(value.decode("latin-1")).lower().encode("latin-1", "replace")


def _style_rules(low: bytes, styles: Sequence[Span], note: Callable[[Span], None]
                 ) -> HidingRules | None:
    """The style blocks' rules that hide or show (None: no style block); every block is
    noted as read."""
    if not styles:
        return None
    for a, b in styles:
        note((a, b))
    sheets = []
    for a, b in styles:  # each with the mode its <style> tag's media and type give it
        lt = low.rfind(b"<style", 0, a)
        given = attr_values(low, lt, a, (b"media", b"type")) if lt >= 0 else {}
        sheets.append((low[a:b], sheet_mode(given.get(b"media"), given.get(b"type"))))
    try:
        rules = read_rules(sheets)
    except RulesLimitError as exc:
        raise HidingLimitError(str(exc)) from exc
    if len(rules.words_searched()) > MAX_WORDS:
        raise HidingLimitError(f"more than {MAX_WORDS} names in hiding rules")
    return rules


def rule_marks(low: bytes, words: Sequence[bytes], start: int = 0, end: int = sys.maxsize
               ) -> Iterator[re.Match[bytes]]:
    """Where the names the style blocks' hiding rules are searched by
    (:meth:`~.stylerules.HidingRules.words_searched`) stand in ``low[start:end]``: a
    ``<`` and a tag's name (``b"<img"``: the mark at the name), or a class, id or
    attribute name after a blank, a quote or ``=`` and before a blank, a quote, ``=``,
    ``/`` or ``>`` (a token of a ``class`` value, an attribute's name).  One literal search
    per word."""
    found = []
    for word in words:
        tag = word[:1] == b"<"
        pattern = _word_pattern(word[1:] if tag else word)
        for m in pattern.finditer(low, start, end):
            before = low[m.start() - 1] if m.start() else -1
            if (before == 0x3C) if tag else (before in _BEFORE_WORD):
                found.append(m)
    found.sort(key=_start)
    return iter(found)


_BEFORE_WORD = frozenset(b"\t\n\f\r \"'=")


@lru_cache(maxsize=256)
def _word_pattern(word: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(word) + rb"(?=[\t\n\f\r \"'=/>])")
