"""What the precise engine knowingly does not model: such content goes to the fallback.

The scanner follows the HTML tokenizer, and the MIME parser the RFCs with
the lenient reading most clients share.  A few things are read differently
by some client, in a way no single precise reading covers; rather than guess,
the engine reports them (``Analysis.unhandled``) and refused copies take the
conservative fallback (:mod:`~beacon_proxy.rewrite.fallback`), which holds the
copy where even it cannot promise anything:

* SVG and MathML foreign content (``<svg><style>`` is not raw text, entities
  are decoded in it) and ``<select>`` (``<xmp>``, ``<title>``, ``<iframe>``
  are ignored there, so their "raw text" is markup);
* a ``<meta charset>`` naming a charset that is not ASCII-compatible (UTF-7,
  UTF-16, ...) in a part labelled with an ASCII-compatible one: a client
  that honours the meta reads ``+ADw-img ...`` as ``<img ...``.  The fallback
  cannot neutralise both readings and holds the copy;
* ``Content-Base`` / ``Content-Location`` naming a remote URL (RFC 2557):
  Thunderbird makes it the ``<base href>`` of the HTML part below, so a
  relative URL loads from there;
* a uuencoded or yEnc-encoded HTML file in a plain-text part: Thunderbird
  decodes and renders it.  The fallback indents the ``begin`` line, so no
  client finds it.

Newsletters hardly ever contain any of these.  Every check is a few
``memchr``-speed finds, confirmed by a bounded pattern.
"""

from __future__ import annotations

import re
from typing import Final

from beacon_proxy.rewrite.charsets import is_transcoded, normalise_charset
from beacon_proxy.rewrite.htmlattr import is_remote

__all__ = ["hide_encoded_files", "remote_base", "unmodelled_markup", "unread_meta_charset"]

#: One pass over the lower-cased view (a literal "<" prefix: memchr speed): an unmodelled
#: context (group 1), or a <meta> charset label (group 2).
_CONTEXTS: Final = re.compile(
    rb"<(?:(s(?:vg|elect)|math)[\t\n\f\r />]"
    rb"|meta[^>]{0,512}?charset[\t\n\f\r ]*=[\t\n\f\r \"']*([-\w.:]{1,40}))")
_BASE_FIELD: Final = re.compile(
    rb"^content-(?:base|location)[ \t]*:((?:[^\n]*\n?)(?:[ \t][^\n]*\n?)*)",
    re.IGNORECASE | re.MULTILINE)
_NOT_URL: Final = re.compile(rb"[\s\"]+")
_ENCODED_FILE: Final = re.compile(  # after a "\n" (a literal prefix, unlike "^")
    rb"\n(?:[bB][eE][gG][iI][nN][ \t]+[0-7]{3,4}[ \t]|=[yY][bB][eE][gG][iI][nN][ \t])"
    rb"[^\n]{0,500}?\.(?:[xX]?[hH][tT][mM][lL]?|[xX][hH][tT]|[sS][vV][gG])\b")
_BEGIN_LINE: Final = re.compile(rb"^(?=begin[ \t]+[0-7]|=ybegin[ \t])",
                                re.IGNORECASE | re.MULTILINE)


def unmodelled_markup(low: bytes) -> str | None:
    """Why the scanner cannot read this lower-cased HTML precisely, or None.

    >>> unmodelled_markup(b"<p><svg><style><img src=x></style></svg>")
    'svg content'
    >>> unmodelled_markup(b'<meta charset="utf-7"><p>+adw-img src=x+ad4-')
    'a <meta> charset (utf-7) that is not ascii-compatible'
    >>> unmodelled_markup(b"<meta charset=utf-8><p>hi")
    """
    for m in _CONTEXTS.finditer(low):
        if m.group(1) is not None:
            return f"{m.group(1).decode()} content"
        label = m.group(2).decode("ascii", "replace")
        if is_transcoded(normalise_charset(label)):
            return f"a <meta> charset ({label}) that is not ascii-compatible"
    return None


def unread_meta_charset(low: bytes) -> str | None:
    """A ``<meta>`` charset that is not ASCII-compatible (a lower-cased view), or None."""
    found = unmodelled_markup(low)
    return found if found is not None and found.startswith("a <meta>") else None


def remote_base(header: bytes) -> bool:
    """Whether a part's header names a remote ``Content-Base`` or ``Content-Location``."""
    if b"ontent-" not in header and b"ONTENT-" not in header:
        return False
    return any(is_remote(_NOT_URL.sub(b"", m.group(1)).decode("latin-1"))
               for m in _BASE_FIELD.finditer(header))


def hide_encoded_files(text: bytes) -> tuple[bytes, int]:
    """Plain text with every uuencode/yEnc ``begin`` line of an HTML file indented.

    Returns the text and how many lines were indented (0: none found, unchanged).

    >>> hide_encoded_files(b"hi\\nbegin 644 a.html\\n`\\nend\\n")
    (b'hi\\n begin 644 a.html\\n`\\nend\\n', 1)
    """
    if _ENCODED_FILE.search(text) is None and _ENCODED_FILE.match(b"\n" + text[:600]) is None:
        return text, 0
    return _BEGIN_LINE.subn(b" ", text)
