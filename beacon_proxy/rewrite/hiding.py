"""Elements that hide everything inside them: the image a hidden ancestor hides.

An image need not be styled hidden itself: ``<div style="display:none"><img
src="https://t.example/o/8f3a..."></div>`` loads in every client and shows nothing.  The
scanner never looks at a plain ``<div>`` (compiled patterns skip it in C, which is
where its speed comes from), so this module finds the hiding ancestors in a pass of its
own, and only where a hiding declaration exists at all:

>>> low = b'<p>a</p><div style="display:none"><b><img src="x"></b></div><img src="y">'
>>> hidden_ranges(low, [], [])
[(8, 54)]

1. one compiled search for ``display:none``, ``visibility:hidden|collapse`` and
   ``overflow:hidden`` (the only declarations that hide what is inside an element;
   ``overflow:hidden`` counts with a zero ``width``, ``height``, ``max-width`` or
   ``max-height``, the preheader idiom), and one for the ``hidden`` attribute
   (:func:`hiding_marks`).  About 45 us on the 70 KB benchmark newsletter; nothing else
   runs when there is no match;
2. per match, the start tag around it: a hiding declaration must be in its first
   ``style`` attribute and win (``display:none;display:block`` is not hidden); a
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

Hiding elements inside a range already found are not walked again, and every search
resumes where the last one stopped: the pass is linear in the document.

Not counted as hiding (the image stays as its own box says):

* ``html``, ``head`` and ``body`` (webmail clients drop their style), void elements,
  table parts before the first ``<table>`` (a browser drops such a tag),
  raw-text elements, anything inside a comment or raw text (``opaque`` spans from the
  scanner);
* ``mso-hide:all`` on an ancestor: only Outlook hides it, other clients show the image;
* an element whose ``class`` or ``id`` a ``<style>`` block with ``@media`` names: the
  responsive idiom that reveals mobile-only content (``display:block !important`` in a
  media query) would otherwise cost its images;
* ``opacity:0`` ancestors and off-screen positioning (not modelled).

>>> hidden_ranges(b'<p>a</p><img src="x" hidden><div hidden><img src="y"></div>', [], [])
[(8, 28), (28, 53)]
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence

from beacon_proxy.rewrite.css import declarations
from beacon_proxy.rewrite.htmlattr import Span, unescape
from beacon_proxy.rewrite.htmlpatterns import TAG_ATTR

__all__ = ["ENDLESS", "MAX_DEPTH", "MAX_NESTING", "HidingLimitError", "attr_values",
           "enclosing_tag", "hidden_ranges", "hiding_attributes", "hiding_declarations",
           "hiding_marks"]

MAX_DEPTH = 256  # elements open inside one hiding element

_WS = rb"[\t\n\f\r ]"
#: The three declarations that can hide an element's content, on the lower-cased view.
#: ":" is the literal re scans for; the property is checked behind it (fixed widths).
#: The definition: :func:`hiding_declarations` finds the same matches faster.
_HIDING = re.compile(
    rb":(?:(?<=display:)|(?<=visibility:)|(?<=overflow:))" + _WS + rb"*+(?:none|hidden|collapse)"
    rb"(?![-a-z0-9_])"
)
#: :data:`_HIDING` without its look-behinds: the value first (a blank run and a branch of
#: literals, which re rejects without entering a frame), the property checked in Python.
_HIDING_VALUE = re.compile(rb":" + _WS + rb"*+(?:none|hidden|collapse)(?![-a-z0-9_])")
_HIDING_PROPERTIES = (b"display", b"visibility", b"overflow")
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
_LOOKBEHIND = len(b"visibility")  # the longest property _HIDING looks behind for
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
#: A class or id selector in a style block (CSS escapes aside: a miss only hides less).
_SELECTOR_NAME = re.compile(rb"[.#][-_a-z0-9]++")
_ZERO = re.compile(rb"[-+]?(?:0++\.?0*+|\.0++)[a-z%]*+")
_SIZES = ("width", "height", "max-width", "max-height")


def hiding_declarations(low: bytes, start: int = 0, end: int = sys.maxsize
                        ) -> Iterator[re.Match[bytes]]:
    """``_HIDING.finditer(low, start, end)``: the same matches, in the same order.

    Why not the pattern itself: its three look-behinds are entered at every ":" of the
    view (every URL's scheme, every CSS declaration: ~500 in the 70 KB benchmark
    newsletter), 36 us a pass; tested the other way round, value first, 25 us.  The
    matches are the same: no two candidates overlap (each holds one ":", at its start),
    so keeping those whose ":" follows a property is :data:`_HIDING`'s ``finditer``;
    ``endswith`` up to the ":" reads the bytes before ``start`` as a look-behind does.
    The Python test runs per candidate (``:none`` and the like), never per ":".
    """
    ends = low.endswith
    for m in _HIDING_VALUE.finditer(low, start, end):
        if ends(_HIDING_PROPERTIES, 0, m.start()):
            yield m


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
    """:func:`hiding_declarations` and :func:`hiding_attributes`, by position: what
    :func:`hidden_ranges` looks at (a declaration's match starts at its ":").  Both are
    in order and few: sorted together (stable: as ``heapq.merge`` orders them), a third
    of ``merge`` 's cost for the small windows a campaign's copy is searched in."""
    marks = [*hiding_declarations(low, start, end), *hiding_attributes(low, start, end)]
    marks.sort(key=_start)
    return iter(marks)


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


def _named(values: dict[bytes, bytes], names: frozenset[bytes]) -> bool:
    """Whether a tag's ``class`` or ``id`` (``values``) is among the selector ``names``."""
    return any(b"." + token in names for token in values.get(b"class", b"").split()) or any(
        b"#" + token in names for token in values.get(b"id", b"").split())


def _hides(low: bytes, start: int, end: int) -> bool | None:
    """Whether the tag at ``start:end`` hides its content by its first style attribute:
    a hiding declaration that wins there; None when that style sets no ``display`` (a
    ``hidden`` attribute then hides, unless a style block shows the element).  Character
    references are decoded first (``font-family:&quot;Open Sans&quot;`` is common); a
    CSS escape stays as it is (``display:\\62 lock`` sets a display that is not none)."""
    value = _style_value(low, start, end)
    if value is None:
        return None
    css = low[value[0] : value[1]]
    if b"&" in css:
        css = unescape(css.decode("latin-1")).lower().encode("latin-1", "replace")
    d = declarations(css, lower=True)
    if d.get("display") == "none" or d.get("visibility") in ("hidden", "collapse"):
        return True
    if any(_ZERO.fullmatch(d[key].encode("latin-1", "replace")) is not None
           for key in _SIZES if key in d) and any(
            css.startswith(b"overflow", m.start() - 8) for m in hiding_declarations(css)):
        return True  # overflow:hidden (overflow:clip is not searched for) with a zero size
    return False if "display" in d else None


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
                  declarations: list[int] | None = None) -> list[Span]:
    """The spans of the elements that hide their content, sorted and disjoint.

    ``low``: the lower-cased view; ``opaque``: the scanner's comment and raw-text spans
    (sorted); ``styles``: the contents of its ``<style>`` blocks.  Raises
    :class:`HidingLimitError` past :data:`MAX_DEPTH`.  ``reads``: where to note every
    stretch of ``low`` the result depends on, besides the declarations searched for,
    ``opaque`` and ``styles`` (:mod:`~beacon_proxy.rewrite.rescan` reuses a result where
    none of them changed); each is ``(start, end)``, ends included.  ``declarations``:
    where to note where each hiding declaration found starts.
    """
    note = ([] if reads is None else reads).append  # a few per hiding declaration
    out: list[Span] = []
    opaque_starts = [start for start, _ in opaque]
    media: frozenset[bytes] | None = None  # the names media queries style (on first need)
    styled: frozenset[bytes] | None = None  # words of style blocks with a display (same)
    first_table = -1  # where the first <table starts, once looked for (past the end: none)
    seen = 0  # past the last mark and the tag judged for it: each tag is judged once
    for m in hiding_marks(low):
        at = m.start()
        attribute = low[at] != 0x3A  # ":" starts a declaration's match
        note((at - 1, m.end()) if attribute else  # with the byte before the name
             (at - _LOOKBEHIND - 1, m.end()))  # with the byte before the property
        if declarations is not None:
            declarations.append(at)
        if (out and at < out[-1][1]) or at < seen:
            continue  # inside a hidden element, or the tag judged last, already
        if not attribute:
            prop_start = at - (7 if low.startswith(b"display", at - 7) else
                               10 if low.startswith(b"visibility", at - 10) else 8)
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
        if void and not attribute:  # hidden attribute is not (an iframe holds raw text)
            continue
        if (name in _NEVER and name != b"iframe") or name.startswith((b"v:", b"o:", b"w:")):
            continue
        if name in _CELL:
            if first_table < 0:
                first_table = low.find(b"<table")
                first_table = len(low) if first_table < 0 else first_table
                note((0, first_table + len(b"<table")))
            if not 0 <= first_table < lt:
                continue  # outside a table a browser drops the tag (and its style)
        hides = _hides(low, lt, tag.end())
        if void and hides is not None:
            continue  # its own style decides (its box), also over a hidden attribute
        values = attr_values(low, lt, tag.end(), (b"class", b"id", b"hidden"))
        if hides is None:  # no own display: a hidden attribute, unless a style shows it
            if b"hidden" not in values or (void and values[b"hidden"].strip() == b"until-found"):
                continue  # (until-found hides an element's content, not a replaced one)
            if styles and styled is None:
                styled = frozenset(word for a, b in styles if low.find(b"display", a, b) >= 0
                                   for word in _STYLE_WORD.findall(low, a, b))
                if any(_HIDDEN_SELECTOR.search(low, a, b) for a, b in styles):
                    styled = styled | {b"[hidden"}
                for a, b in styles:
                    note((a, b))
            if styled and _shown_by_style(low, name, values, styled):
                continue
        elif not hides:
            continue
        if styles and (values.get(b"class") or values.get(b"id")):
            if media is None:
                media = frozenset(name for a, b in styles if low.find(b"@media", a, b) >= 0
                                  for name in _SELECTOR_NAME.findall(low, a, b))
                for a, b in styles:
                    note((a, b))
            if _named(values, media):
                continue  # a media query may reveal it
        if void:
            out.append((lt, tag.end()))  # the image's own tag (seen is past it already)
            continue
        end, read = _extent(low, name, tag.end(), opaque_starts, opaque)
        note((tag.end(), read))
        out.append((lt, end))
        seen = max(seen, end)
    return out
