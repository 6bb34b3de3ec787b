"""Markup that every reader cuts into the same tags: what the precise path reads.

A browser's tokenizer is not the only one that reads a part.  Roundcube's washer
parses it with libxml2's HTML 4 parser or Masterminds' HTML5 parser, Outlook with
Word's, and each recovers malformed markup its own way: a tag cut off at the end of the
part kept, a ``<`` inside a tag opening another, ``<img "= src=U>`` or ``<img? src=U>``
an image, ``<!-`` and ``<![x`` text, ``<?x ... ?>`` read to ``?>``, a form feed or a
vertical tab read as a blank or not, ``<!-->`` an empty comment or an open one, a name
with ``@`` skipped to the next blank, a name cut into pieces of 100 characters.  Three
attacks in session 18 found these and more spellings of each; no model of every parser
ends them.  So the precise path reads only markup on which they agree:

* text, a ``<`` in it only before a blank, a digit or ``-``, or as ``<=`` before a blank
  (``Prices < $10``, ``<3``, ``<-- back``, ``a <= b``: no reader, the washer's tag-name
  clean-up included, makes a tag of it);
* a start tag ``<name attr attr=value ...>`` or ``.../>`` (``<br/ >``): a name of letters, digits,
  ``:`` and ``-`` starting with a letter; attribute names of letters, digits and
  ``-_:.`` starting with no digit, dash or dot (no ``@``: libxml2 skips such a name up to
  the next blank); names of at most 99 characters (libxml2 cuts longer ones into pieces
  of 100); values in quotes with no ``<`` that opens a tag (a letter, ``!``, ``/`` or
  ``?`` after it), or unquoted without quotes, ``<``, ``>`` or a backtick (nor ``=``
  first), or empty right before the tag's end (``alt=>``); space, tab, CR and LF
  between, or nothing after a quoted value (no form feed, no vertical tab: readers
  differ on them);
* an end tag ``</name>``, blanks before its ``>`` allowed;
* a comment ``<!--...-->`` that does not start with ``>`` or ``->`` and holds no
  ``--!>`` (Outlook's conditional comments are such comments);
* ``<!DOCTYPE ...>`` and ``<?xml ...?>`` without ``<`` or ``>`` inside; Outlook's
  ``<![if ...]>`` and ``<![endif]>`` (a browser's bogus comment that hides nothing);
* the text of ``<style>``, ``<script>``, ``<title>`` and ``<textarea>`` up to their end
  tag, as every reader reads it raw;

and, with a ``<base`` in the text, no tag with a loading attribute twice (browsers take the first,
Masterminds' parser the last; without a base the second's URL, if relative, loads
nothing in webmail, and if absolute is a stray URL: :mod:`~beacon_proxy.rewrite.stray`).
Anything else sends the part to the fallback, which neutralises every load in any
reading.  The patterns are possessive: one pass, linear.

>>> malformed(b'<p class="a">x &lt; y</p><img src=a.png alt="b"/><!--[if mso]><v:x/><![endif]-->')
>>> malformed(b'<p>x</p><img src="https://t.example/p')
'a tag not closed'
>>> malformed(b'<img? src=x>')
'"<" that opens no tag every reader reads alike'
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Final

__all__ = ["in_text", "malformed", "quoted_values", "token_starts"]

_BLANK: Final = rb"[ \t\r\n]"
#: A quoted value may hold ">" and a "<" that opens no tag (a template's "<%= x %>").
_QUOTED: Final = (rb'(?:"[^"<]*+(?:<(?![a-z!/?])[^"<]*+)*+"'
                  rb"|'[^'<]*+(?:<(?![a-z!/?])[^'<]*+)*+')")
_VALUE: Final = (_QUOTED + rb"""|[^ \t\r\n\x0b\x0c"'=<>`][^ \t\r\n\x0b\x0c"'<>`]*+"""
                 rb"|(?=[ \t\r\n]*+/?>)")  # (empty only before the tag's end: "alt=>")
#: A name: at most 99 characters (libxml2 reads a longer one in pieces of 100, the last
#: one an attribute of its own: "a" * 100 + "src" is "src" to it).
_NAME_REST: Final = rb"[a-z0-9_:.-]{0,98}+(?![a-z0-9_:.-])"
_ATTRIBUTE: Final = (rb"[a-z_:]" + _NAME_REST + rb"(?:" + _BLANK + rb"*+=" + _BLANK
                     + rb"*+(?:" + _VALUE + rb"))?+")
#: Attributes: blanks before each, or none after a quoted value (``src="a"alt="b"``).
_ATTRIBUTES: Final = (rb"(?:(?:" + _BLANK + rb"++|(?<=[\"']))" + _ATTRIBUTE + rb")*+"
                      + _BLANK + rb"*+")
_TAG_NAME: Final = rb"[a-z][a-z0-9:-]{0,98}+(?![a-z0-9:-])"
#: One token of the markup profile above (in lower-cased text).  The alternatives after
#: "<" are tried in this order (the first that matches is the token); the "<" is matched
#: once for all of them (a quarter of the time that one "<" an alternative took).
_RAW: Final = b"|".join(
    name + rb"(?![a-z0-9:-])" + _ATTRIBUTES + rb">(?:[^<]++|<(?!/" + name
    + rb"(?![a-z0-9:-])))*+</" + name + _BLANK + rb"*+>"
    for name in (b"style", b"script", b"title", b"textarea"))
_TOKEN: Final = (
    rb"[^<]++|<(?:" + _RAW + rb"|(?=[ \t\r\n0-9-])|=(?=[ \t\r\n])"
    rb"|" + _TAG_NAME + _ATTRIBUTES + rb"(?:/" + _BLANK + rb"*+)?>"
    rb"|/" + _TAG_NAME + _BLANK + rb"*+>"
    rb"|!--(?!-?>)(?:[^-]++|-(?!-!?>))*+-->"
    rb"|!doctype[^<>]*+>"
    rb"|!\[(?:if[^<>\]]*+|endif)\]>"
    rb"|\?xml(?:[^<>?]++|\?(?!>))*+\?>)")
_DOCUMENT: Final = re.compile(rb"(?:" + _TOKEN + rb")*+")
#: One token: ``_DOCUMENT`` takes, at each token's end, the first alternative that
#: matches there (a possessive repeat never goes back into an earlier repetition).
_ONE_TOKEN: Final = re.compile(_TOKEN)
_TAG_NAME_AT: Final = re.compile(rb"<" + _TAG_NAME)
#: A quoted attribute, from its name's first character to its closing quote.  Searched
#: from a well-formed start tag's name on, it meets the tag's quoted attributes and
#: nothing else: there a quote only opens or closes a value, or stands in the other
#: kind's value (read whole, with the attribute it belongs to), and an unquoted value
#: holds neither a quote nor a name that "=" and a quote follow.
_QUOTED_ATTRIBUTE: Final = re.compile(
    rb"""([a-z_:][a-z0-9_:.-]*+)[ \t\r\n]*+=[ \t\r\n]*+("[^"]*+"|'[^']*+')""")
_START_TAG: Final = re.compile(rb"<" + _TAG_NAME + _ATTRIBUTES + rb"(?:/" + _BLANK + rb"*+)?>")
#: An attribute's name in a start tag (a value holding "x=" counts too: more is safe).
_NAME: Final = re.compile(rb"[ \t\r\n\"']([a-z_:][a-z0-9_:.-]*)[ \t\r\n]*=")
_LOADING: Final = frozenset({b"src", b"srcset", b"style", b"background", b"poster", b"data",
                             b"lowsrc", b"dynsrc"})


def malformed(low: bytes) -> str | None:
    """Why some reader may cut ``low`` (a part's lower-cased text) into other tags than
    a browser does, or None when none does (see the module docstring)."""
    end = _DOCUMENT.match(low).end()  # type: ignore[union-attr]  # (it matches "")
    if end < len(low):
        if low.find(b">", end) < 0 and not low.startswith(b"<!--", end):
            return "a tag not closed"
        return '"<" that opens no tag every reader reads alike'
    if b"<base" in low and _repeated_loader(low):
        return "a loading attribute twice in one tag (and a <base>)"
    return None


def _repeated_loader(low: bytes) -> bool:
    """Whether a start tag has one of the loading attributes twice."""
    for tag in _START_TAG.finditer(low):
        names = [m[1] for m in _NAME.finditer(tag[0])]
        loading = [name for name in names if name in _LOADING]
        if len(set(loading)) < len(loading):
            return True
    return False


def token_starts(low: bytes) -> array[int] | None:
    """Where each token of well-formed ``low`` starts, and its end (the tokens
    :func:`malformed` reads it as); None when it is malformed.  Made with one match a
    token: a campaign's template pays it once (:mod:`~beacon_proxy.rewrite.readers`)."""
    starts = array("q", [0])
    match, pos, end = _ONE_TOKEN.match, 0, len(low)
    while pos < end:
        token = match(low, pos)
        if token is None:
            return None
        pos = token.end()
        starts.append(pos)
    return starts


def quoted_values(low: bytes, starts: array[int], stretches: Iterable[tuple[int, int]]
                  ) -> list[tuple[bytes, bytes] | None]:
    """For each ``(a0, a1)`` of ``stretches``: ``(tag name, attribute name)`` when
    ``low[a0:a1]`` lies inside one quoted attribute value of one start tag of
    well-formed ``low`` (``starts``: its :func:`token_starts`), else None.  Each tag's
    attributes are read once, however many stretches it holds: linear.

    >>> low = b'<p>x</p><a class="c" href="https://s.example/?u=1234">y</a>'
    >>> at = low.find(b"1234")
    >>> quoted_values(low, token_starts(low), [(at, at + 4), (3, 4)])  # (3, 4): text
    [(b'a', b'href'), None]
    """
    tags: dict[int, tuple[bytes, list[int], list[bytes]] | None] = {}
    out: list[tuple[bytes, bytes] | None] = []
    for a0, a1 in stretches:
        i = bisect_right(starts, a0) - 1
        if i < 0 or i + 1 >= len(starts) or a1 > starts[i + 1]:
            out.append(None)
            continue
        if i not in tags:
            tags[i] = _attributes(low, starts[i], starts[i + 1])
        tag = tags[i]
        if tag is None:
            out.append(None)
            continue
        name, bounds, names = tag  # bounds: each quoted value's quotes, in order
        j = bisect_left(bounds, a0)  # odd: after an opening quote, up to its closing one
        out.append((name, names[j // 2]) if j % 2 and a1 <= bounds[j] else None)
    return out


def _attributes(low: bytes, start: int, end: int) -> tuple[bytes, list[int], list[bytes]] | None:
    """The start tag that is the token ``low[start:end]``: its name, its quoted values'
    quotes (opening, closing, ...) and names; None when the token is no start tag (a
    raw-text element's reads on past its start tag)."""
    tag = _START_TAG.match(low, start)
    if tag is None or tag.end() != end:
        return None
    name = _TAG_NAME_AT.match(low, start)
    assert name is not None  # (a start tag's)
    bounds: list[int] = []
    names: list[bytes] = []
    for attribute in _QUOTED_ATTRIBUTE.finditer(low, name.end(), end):
        bounds += (attribute.start(2), attribute.end(2) - 1)
        names.append(attribute[1])
    return name[0][1:], bounds, names


def in_text(low: bytes, starts: array[int], stretches: Iterable[tuple[int, int]]
            ) -> list[bool]:
    """For each ``(a0, a1)`` of ``stretches``: whether ``low[a0:a1]`` lies inside one text
    token of well-formed ``low`` (``starts``: its :func:`token_starts`), or is an empty
    stretch between two tokens (what is put in there stands between them).

    >>> low = b'<p>Hi Ann,</p><a title="x>" alt=y title="< ">l</a>'
    >>> starts = token_starts(low)
    >>> in_text(low, starts, [(6, 9), (3, 3), (32, 33), (14, 14)])  # "Ann", "", "y", ""
    [True, True, False, True]
    """
    out = []
    for a0, a1 in stretches:
        i = bisect_right(starts, a0) - 1
        out.append(0 <= i < len(starts) - 1 and (
            (a0 == a1 == starts[i]) or (a1 <= starts[i + 1] and low[starts[i]] != 0x3C)))
    return out
