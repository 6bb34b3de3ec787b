"""The fallback's reading of markup: every remote load neutralised, wherever it is.

The conservative fallback (:mod:`~beacon_proxy.rewrite.fallback`) and the calendar
reading (:mod:`~beacon_proxy.rewrite.calendar`) share it.  It needs no HTML or CSS
parser and so cannot be misled by one:

* every attribute that makes an element load something (``src``, ``srcset``,
  ``background``, ``poster``, ``data``, ``href`` on anything but a plain
  ``<a href`` / ``<area href``, ``xlink:href``, ``http-equiv``, ``srcdoc``,
  AMP's ``config``, SMIL's ``attributeName``, ...) is renamed to
  ``x-bp-<name>``, wherever it appears: in tags, in conditional comments, in
  text (where it is harmless).  ``src``/``background`` whose value is a
  ``cid:`` reference keep working;
* in CSS, wherever it is (``<style>``, ``style=""``, ``text/css`` parts, and
  text), a ``(`` that is not preceded by a harmless function name (``rgb``,
  ``calc``, ...) gets two blanks before it (:data:`~beacon_proxy.rewrite.css.SEPARATOR`:
  a hex escape just before takes one, ``ur\\6c (`` is ``url(``), so no ``url(``,
  ``image-set(``, ``src(`` or escaped variant is a function any more; an ``@import`` (also
  escaped, also as ``&#64;``) becomes ``@_import``, an unknown at-rule that
  is skipped.

"Anywhere" is the point: the pass does not need to know where a tag starts
or whether a quote is open, so no markup can hide a load from it.  Only the
``<a href`` exception looks at context, and only at the few bytes before the
attribute: ``<a`` must directly follow a ``>`` or the start of the text (with
whitespace between), and ``href`` must be its first attribute, which no
attribute value can imitate (see :func:`_plain_anchor`).  Work is linear: a
handful of compiled patterns with bounded look-arounds, one ``finditer`` each.

And bounded: a message whose texts hold more than :data:`MAX_CONSTRUCTS` matches
together (attributes, ``(``, ``@``, harmless or not; one :class:`Budget` for all its
texts) raises :class:`TooMuchMarkup` at that match, and its copy is held. Each edit
costs about 270 bytes until the text is joined, and the fallback runs in the relay's own
process: 4 MB of ``(`` in a ``<style>`` took 7 s and 1.1 GB before (25 MB, the default
size limit, would take the relay's memory). Real newsletters hold one match per 300-2000
bytes (the twelve templates of the test data), so the bound is reached at 75 MB of the
densest of them, above ``[smtp] max_message_size``; and a message's texts together cost
at most about half a second.
"""

from __future__ import annotations

import re
from typing import Final

from beacon_proxy.rewrite.css import SEPARATOR

__all__ = ["MAX_CONSTRUCTS", "Budget", "TooMuchMarkup", "applied", "markup_edits",
           "neutralise_markup"]

#: Matches read in one message at most: beyond, :class:`TooMuchMarkup` (the copy is held).
MAX_CONSTRUCTS: Final = 250_000

_WS = rb"[\t\n\f\r ]"
_LOADING_ATTRS = (
    rb"srcset|src|lowsrc|dynsrc|background|poster|data|imagesrcset|srcdoc|config|manifest|"
    rb"codebase|archive|code|classid|href|ping|longdesc|profile|icon|action|formaction|"
    # any namespace prefix XML allows: an NCName starts with a letter, "_" or non-ASCII
    rb"http-equiv|attributename|attributionsrc|[a-z_\x80-\xff][-a-z0-9._\x80-\xff]*:"
    rb"(?:href|src|base)"
)
#: An attribute-like name that loads, anywhere: after a character that can end the
#: previous attribute or tag name, before "=" (spaces allowed).
_ATTR = re.compile(rb"(?<=[\t\n\f\r /\"'])(?:" + _LOADING_ATTRS + rb")(?=" + _WS + rb"*+=)",
                   re.IGNORECASE)
_RENAME: Final = b"x-bp-"
_KEEP_CID = frozenset({b"src", b"background"})
#: "(" in any spelling an HTML attribute value decodes.
_PAREN = re.compile(rb"\(|&#0*40;?|&#[xX]0*28;?|&lpar;", re.IGNORECASE)
_HARMLESS_FUNCTIONS = frozenset({
    b"rgb", b"rgba", b"hsl", b"hsla", b"hwb", b"lab", b"lch", b"calc", b"min", b"max", b"clamp",
    b"var", b"linear-gradient", b"radial-gradient", b"repeating-linear-gradient",
    b"repeating-radial-gradient", b"translate", b"translatex", b"translatey", b"rotate",
    b"scale", b"matrix", b"cubic-bezier", b"steps", b"not", b"nth-child", b"nth-of-type",
    b"if", b"lang",
})
_IDENT_BYTES = frozenset(b"-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_IDENT_MAX = 40
#: "@" in any spelling, then the at-keyword's name (escapes included).
_AT = re.compile(rb"(?:@|&#0*64;?|&#[xX]0*40;?|&commat;)([-\w\\]{0,40})", re.IGNORECASE)
#: What may split an at-keyword's name where markup inside CSS is decoded (an SVG
#: ``<style>`` in HTML, any style sheet of an XML document): a character reference,
#: a comment, CDATA, a processing instruction or an element, which the style sheet's
#: text leaves out (``@imp<!---->ort``, ``@&#105;mport``, ``<![CDATA[@]]>import``).
_NAME_SPLITS: Final = frozenset(b"<&]")
_VALUE_MAX: Final = 8192
#: The bytes of an unquoted value (it is one when at most _VALUE_MAX of them end at
#: whitespace, ">" or the end).
_UNQUOTED = re.compile(rb"[^\t\n\f\r >\"'`]*+")
#: A plain url() argument: quoted without quotes, "<" or ">" inside, or unquoted.
_PLAIN_ARG = re.compile(rb"[\t\n\f\r ]*(?:\"[^\"<>\n]{0,4096}\"|'[^'<>\n]{0,4096}'|"
                        rb"[^\"'()<>\s]{1,4096})[\t\n\f\r ]*(?=\))")


class TooMuchMarkup(ValueError):
    """A message's texts hold more than :data:`MAX_CONSTRUCTS` constructs that may load."""

    def __init__(self) -> None:
        super().__init__(f"more than {MAX_CONSTRUCTS} constructs that may load")


class Budget:
    """The matches one message's texts may still take (:data:`MAX_CONSTRUCTS` in all)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_CONSTRUCTS

    def take(self) -> None:
        """Count one match; past the bound, :class:`TooMuchMarkup`."""
        self.left -= 1
        if self.left < 0:
            raise TooMuchMarkup


def _plain_anchor(view: bytes, at: int) -> bool:
    """Whether the ``href`` at ``at`` is the first attribute of ``<a`` or ``<area`` that
    follows ``>`` or the start of the text (whitespace between allowed).

    No attribute value can pass for that: a value cannot end with whitespace alone
    (quoted values end at their quote, unquoted ones at whitespace or ``>``, and a
    ``>`` ends an unquoted value), so when the real tokenizer is inside a value at
    that ``>``, it still is at ``href``, which is then no attribute at all.
    """
    pos = at - _ws_before(view, at)
    if pos == at:
        return False
    tail = view[max(0, pos - 5):pos].lower()
    if tail.endswith(b"<area"):
        pos -= 5
    elif tail.endswith(b"<a"):
        pos -= 2
    else:
        return False
    pos -= _ws_before(view, pos)
    return pos == 0 or view[pos - 1] == 0x3E  # ">"


def _ws_before(view: bytes, pos: int) -> int:
    """How many HTML whitespace bytes end at ``pos``."""
    start = pos
    while start > 0 and view[start - 1] in b"\t\n\f\r ":
        start -= 1
    return pos - start


def _ident_before(view: bytes, pos: int) -> bytes | None:
    """The plain identifier ending at ``pos`` (lower-case), or None when it is not plain."""
    start = pos
    while start > 0 and pos - start <= _IDENT_MAX and view[start - 1] in _IDENT_BYTES:
        start -= 1
    if pos - start > _IDENT_MAX or start == pos:
        return None
    if start > 0 and (view[start - 1] == 0x5C or view[start - 1] >= 0x80   # "\": an escape
                      or view[start - 1] in b";&#"):  # the end of an entity
        return None
    return view[start:pos].lower()


def neutralise_markup(text: bytes, view: bytes | None = None, budget: Budget | None = None
                      ) -> tuple[bytes, int]:
    """``text`` (HTML and/or CSS, ASCII-compatible) with every remote load neutralised.

    ``view``: a same-length view whose ASCII bytes are exactly the text's ASCII
    characters (multi-byte characters masked); ``text`` itself by default.
    ``budget``: the message's (:class:`Budget`; a text's own by default).
    Returns the new text and how many constructs were neutralised.  The values of
    renamed attributes and plain ``url()`` arguments are emptied as well, so the
    tracker's address does not even stay as text (cosmetic: the rename and the
    blanks before ``(`` are what stop the load).

    >>> neutralise_markup(b'<img src="https://t.example/p.gif"><a href="https://x.example">')
    (b'<img x-bp-src=""><a href="https://x.example">', 1)
    >>> neutralise_markup(b'<p style="background:url(//t.example/p)">')[0]
    b'<p style="background:url  ()">'
    """
    edits = markup_edits(text if view is None else view, budget)
    if not edits:
        return text, 0
    return applied(text, edits), sum(start == end for start, end, _ in edits)


def applied(text: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``text`` with ``edits`` (``(start, end, replacement)``, sorted, not overlapping)."""
    pieces: list[bytes] = []
    pos = 0
    for start, end, replacement in edits:
        pieces += (text[pos:start], replacement)
        pos = end
    pieces.append(text[pos:])
    return b"".join(pieces)


def markup_edits(view: bytes, budget: Budget | None = None) -> list[tuple[int, int, bytes]]:
    """What :func:`neutralise_markup` changes in ``view``: ``(start, end, replacement)``,
    sorted and not overlapping; an insertion (``start == end``) is one neutralised
    construct, a deletion empties a renamed value or a ``url()`` argument.  Each match
    is taken from ``budget`` (a fresh :class:`Budget` by default)."""
    edits: list[tuple[int, int, bytes]] = []
    run = [0]  # where the last unquoted run measured ends (see _attribute_value)
    budget = budget or Budget()
    for m in _ATTR.finditer(view):
        budget.take()
        name = m.group().lower()
        if name == b"href" and _plain_anchor(view, m.start()):
            continue
        value = _attribute_value(view, m.end(), run)
        if name in _KEEP_CID and view[value[0]:value[0] + 4].lower() == b"cid:":
            continue
        edits.append((m.start(), m.start(), _RENAME))
        if value[1] > value[0]:
            edits.append((*value, b""))
    for m in _PAREN.finditer(view):
        budget.take()
        at = m.start()
        ident = _ident_before(view, at)
        if m.group() == b"(" and ident in _HARMLESS_FUNCTIONS:
            continue
        edits.append((at, at, SEPARATOR))  # "url  (": no function, escape or not
        if m.group() == b"(":
            arg = _PLAIN_ARG.match(view, m.end())
            if arg is not None and arg.end() > m.end():
                edits.append((m.end(), arg.end(), b""))
    for m in _AT.finditer(view):
        budget.take()
        name = m.group(1).lower()
        if name.startswith(b"import") or b"\\" in name or (  # also split by markup
                m.end() < len(view) and view[m.end()] in _NAME_SPLITS
                and b"import".startswith(name)):
            edits.append((m.start(1), m.start(1), b"_"))
    edits.sort()
    kept: list[tuple[int, int, bytes]] = []
    pos = 0
    for edit in edits:
        if edit[0] < pos:  # inside a value already emptied
            continue
        kept.append(edit)
        pos = edit[1]
    return kept


def _attribute_value(view: bytes, pos: int, run: list[int]) -> tuple[int, int]:
    """The span of the value after ``pos`` (at the spaces before ``=``), without quotes.

    Only used to empty the value: a wrong guess changes text, never what loads.
    ``run[0]``: where the unquoted run measured last ends.  Calls come at increasing
    offsets, and one run can hold many names ("src=/src=/..."): from any of them it
    ends at the same place, so it is read once (read from each, up to _VALUE_MAX
    bytes and back, it cost 16 000 steps per name: 15 s for 500 KB of "src=/").
    """
    pos += _ws_run(view, pos) + 1  # the "="
    pos += _ws_run(view, pos)
    if pos < len(view) and view[pos] in b"\"'":
        close = view.find(view[pos:pos + 1], pos + 1, pos + 1 + _VALUE_MAX)
        return (pos + 1, close) if close > 0 else (pos + 1, pos + 1)
    end = run[0]
    if end <= pos:
        end = run[0] = _UNQUOTED.match(view, pos).end()  # type: ignore[union-attr]  # ""
    if end == pos or end - pos > _VALUE_MAX or (end < len(view)
                                                and view[end] not in b"\t\n\f\r >"):
        return pos, pos
    return pos, end


def _ws_run(view: bytes, pos: int) -> int:
    end = pos
    while end < len(view) and view[end] in b"\t\n\f\r ":
        end += 1
    return end - pos
