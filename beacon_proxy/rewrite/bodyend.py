"""Where a footer goes in an HTML part: just before the last real ``</body``.

The footer must be visible in every mail client, so it goes where an HTML
parser closes the body -- not into a comment (Outlook's conditional comments
``<!--[if mso]> ... </body> ... <![endif]-->`` included), a ``<script>``,
``<style>``, ``<title>``, ``<textarea>`` or other raw-text element, a bogus
comment, an attribute value, nor a block that Outlook hides
(``<!--[if !mso]><!--> ... <!--<![endif]-->``, ``<![if !mso]> ... <![endif]>``).

Like the beacon scanner (:mod:`~beacon_proxy.rewrite.html`) it works on the
part's scan view (:func:`~beacon_proxy.rewrite.charsets.scan_view`), so a match
in ISO-2022-JP or Shift_JIS is a real ASCII ``<``; unlike it, it needs no
attributes and no URLs: one forward pass over the few *events* that change the
tokenizer's state (``<!``, ``<?``, raw-text start tags, ``</body``), each found
by a search with a literal first byte, each construct skipped with one
``find``.  Linear for any input (references.md: a regex over a whole document
must not backtrack), about 0.1 ms on the 70 KB benchmark newsletter.

Not modelled: a ``<`` inside a quoted attribute value *before* an event
(``<a title="<b>"><!--``) is read as a tag start; SVG/MathML foreign content.

>>> body_end(b"<body><p>Hi</p><!--[if mso]></body><![endif]--></body></html>")
47
"""

from __future__ import annotations

import re
from typing import Final

from beacon_proxy.rewrite.htmlpatterns import COMMENT_END, CONDITIONAL, script_end

__all__ = ["body_end"]

_DELIM: Final = b"\t\n\f\r />"
#: What changes the tokenizer's state, on the lower-cased view: comments (Outlook's
#: conditional ones among them), downlevel-revealed conditionals, bogus comments
#: (``<!DOCTYPE``, ``<?xml``), raw-text elements, and the ``</body`` end tag itself.  A
#: literal first byte lets ``re`` skip to each "<" at memchr speed; no group, no
#: lookahead (each costs a frame per "<"): the byte after the name is checked in Python.
_EVENT: Final = re.compile(
    rb"<(?:!|\?|/body|script|style|textarea|title|xmp|noscript|noembed|noframes|iframe"
    rb"|plaintext)"
)
_RAW: Final = (b"script", b"style", b"textarea", b"title", b"xmp", b"noscript", b"noembed",
               b"noframes", b"iframe", b"plaintext")
_RAW_END: Final = {name: b"</" + name for name in _RAW}
#: A start or end tag up to its ">" (or as far as it goes), quoted values whole.
_TAG: Final = re.compile(rb"</?[a-z][^\t\n\f\r />]*+(?:[^\"'>]++|\"[^\"]*+\"|'[^']*+')*+")
_MAX_STRAY: Final = 64  # "<" that open no tag, looked through before a candidate


def _name_end(lower: bytes, at: int) -> bool:
    """Whether a tag name ends at ``at`` (a delimiter or the end follows)."""
    return at >= len(lower) or lower[at] in _DELIM


def _raw_end(lower: bytes, name: bytes, pos: int) -> int:
    """Where the ``</name`` end tag that ends the element's text from ``pos`` starts, or -1:
    the first one, but for a script's escaped states (:func:`.htmlpatterns.script_end`)."""
    if name == b"script":
        return script_end(lower, pos)
    needle = _RAW_END[name]
    at = lower.find(needle, pos)
    while at >= 0 and not _name_end(lower, at + len(needle)):
        at = lower.find(needle, at + 1)
    return at


def _skip(lower: bytes, start: int, end: int) -> int:
    """Where the construct that the event at ``start`` opens ends, outside any tag (-1: it
    runs to the end of the document)."""
    if lower.startswith(b"<!--", start):
        closing = COMMENT_END.search(lower, start + 2)  # "<!-->" ends at once
        return -1 if closing is None else closing.end()
    if lower[start + 1] in b"!?":  # a bogus comment runs to the next ">"
        at = lower.find(b">", end)
        return -1 if at < 0 else at + 1
    name = lower[start + 1 : end]
    return -1 if name == b"plaintext" else _raw_end(lower, name, end)


def _outlook_hides(lower: bytes, start: int, hidden: bool) -> bool:
    """Whether what follows the event at ``start`` is hidden from Outlook: a block shown
    everywhere but there starts (``<!--[if !mso]><!-->``, downlevel-revealed
    ``<![if !mso]>``) or ends (``<!--<![endif]-->``, ``<![endif]>``)."""
    if lower.startswith((b"<!--<![endif]", b"<![endif]"), start):
        return False
    if lower.startswith(b"<![if", start):
        return True
    conditional = CONDITIONAL.match(lower, start)
    if conditional is not None and conditional.end() > lower.find(b"]>", start) + 2:
        return True  # the comment closes in its own "<!-->": the block is not a comment
    return hidden


def body_end(view: bytes) -> int | None:
    """Offset of the last ``</body`` that an HTML parser reads as the end tag, or None.

    ``view`` is the part's scan view (:func:`~beacon_proxy.rewrite.charsets.scan_view`:
    a byte below 0x80 is a real ASCII character, so an ISO-2022-JP match is in ASCII
    state).  A ``</body`` inside a comment (``<!--[if mso]> ... <![endif]-->``
    included), a bogus comment, raw text (``<script>``, ``<style>``, ``<textarea>``,
    ``<title>``, ``<xmp>``, ``<noscript>``, ...) or a tag does not count, nor one in a
    block that Outlook hides (``<!--[if !mso]><!--> ... <!--<![endif]-->``,
    ``<![if !mso]> ... <![endif]>``: the footer must show there too).  One forward
    pass over the events; every search has a literal start and never backtracks.

    >>> body_end(b"<body><!--[if mso]></body><![endif]--><p>x</p></BODY></html>")
    46
    >>> body_end(b"<p>x</p><script>'</body>'</script>") is None
    True
    """
    lower = view.lower()
    found: list[int] = []  # every real </body (the last one wins, as in a parser)
    pos = floor = 0  # floor: a place known to be outside any tag
    tag_until = 0  # the end of the last tag found to hold an event
    hidden = False  # inside a block that Outlook does not show
    while (event := _EVENT.search(lower, pos)) is not None:
        start, end = event.span()
        if start < tag_until or (tag_until := _tag_end(lower, start, floor)) > start:
            pos = start + 1  # inside a tag: "<a title='<!--'>", "<b<script>"
            continue
        kind = lower[start + 1]
        if kind == 0x2F or (kind not in b"!?" and not _name_end(lower, end)):
            if kind == 0x2F and _name_end(lower, end) and not hidden:
                found.append(start)  # a real </body
            pos, floor = end, start  # any tag: "</body>", "<styles>"
            continue
        if kind == 0x21:  # "<!"
            hidden = _outlook_hides(lower, start, hidden)
        pos = floor = _skip(lower, start, end)
        if pos < 0:
            break  # unterminated: the rest of the document is inside it
    return found[-1] if found else None


def _tag_end(lower: bytes, at: int, floor: int) -> int:
    """The end of the tag that ``at`` is inside (an attribute value holding ``<!--`` or
    ``</body>``, a name swallowing ``<`` as in ``<b<script>``), or -1 when it is not.

    The tag is the one the last tag-opening ``<`` in ``[floor, at)`` starts, read with
    its quoted values whole; ``floor`` is a place known to be outside any tag.  A ``<``
    inside a quoted value before ``at`` is not seen through (that would take a tokenizer
    over every tag of the document).
    """
    start = lower.rfind(b"<", floor, at)
    for _ in range(_MAX_STRAY):
        if start < 0:
            return -1
        tag = _TAG.match(lower, start)
        if tag is not None:
            end = tag.end()  # at ">", or at a quote never closed (the tag runs to the end)
            if lower[end : end + 1] in (b'"', b"'"):
                end = len(lower)
            return end if end > at else -1
        start = lower.rfind(b"<", floor, start)  # a "<" that opens nothing: text
    return at + 1  # too many stray "<" to tell: not a place for the footer
