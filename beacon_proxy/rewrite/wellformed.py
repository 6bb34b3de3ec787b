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
from typing import Final

__all__ = ["malformed"]

_BLANK: Final = rb"[ \t\r\n]"
#: A quoted value may hold ">" and a "<" that opens no tag (a template's "<%= x %>").
_QUOTED: Final = rb"""(?:"(?:[^"<]++|<(?![a-z!/?]))*+"|'(?:[^'<]++|<(?![a-z!/?]))*+')"""
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
#: One token of the markup profile above (in lower-cased text).
_RAW: Final = b"|".join(
    rb"<" + name + rb"(?![a-z0-9:-])" + _ATTRIBUTES + rb">(?:[^<]++|<(?!/" + name
    + rb"(?![a-z0-9:-])))*+</" + name + _BLANK + rb"*+>"
    for name in (b"style", b"script", b"title", b"textarea"))
_TOKEN: Final = (
    rb"[^<]++|" + _RAW + rb"|<(?=[ \t\r\n0-9-])|<=(?=[ \t\r\n])"
    rb"|<" + _TAG_NAME + _ATTRIBUTES + rb"(?:/" + _BLANK + rb"*+)?>"
    rb"|</" + _TAG_NAME + _BLANK + rb"*+>"
    rb"|<!--(?!-?>)(?:[^-]++|-(?!-!?>))*+-->"
    rb"|<!doctype[^<>]*+>"
    rb"|<!\[(?:if[^<>\]]*+|endif)\]>"
    rb"|<\?xml(?:[^<>?]++|\?(?!>))*+\?>")
_DOCUMENT: Final = re.compile(rb"(?:" + _TOKEN + rb")*+")
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
