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
from collections.abc import Iterator
from typing import Final

from beacon_proxy.rewrite.charsets import is_transcoded, normalise_charset
from beacon_proxy.rewrite.htmlattr import is_remote

__all__ = ["hide_encoded_files", "remote_base", "unmodelled_markup", "unread_meta_charset"]

#: An unmodelled context, on the lower-cased view (a literal "<" prefix: memchr speed).
_CONTEXT: Final = re.compile(rb"<(s(?:vg|elect)|math)[\t\n\f\r />]")
#: A charset declaration (a literal prefix again); it counts inside a <meta> tag.
_CHARSET: Final = re.compile(rb"charset[\t\n\f\r ]*=[\t\n\f\r \"']*([-\w.:]{1,40})")
_META_GAP: Final = 512  # bytes from the end of "<meta" to "charset", none of them ">"
_BASE_FIELD: Final = re.compile(
    rb"^content-(?:base|location)[ \t]*:((?:[^\n]*\n?)(?:[ \t][^\n]*\n?)*)",
    re.IGNORECASE | re.MULTILINE)
_NOT_URL: Final = re.compile(rb"[\s\"]+")
_ENCODED_FILE: Final = re.compile(  # after a "\n" (a literal prefix, unlike "^")
    rb"\n(?:[bB][eE][gG][iI][nN][ \t]+[0-7]{3,4}[ \t]|=[yY][bB][eE][gG][iI][nN][ \t])"
    rb"[^\n]{0,500}?\.(?:[xX]?[hH][tT][mM][lL]?|[xX][hH][tT]|[sS][vV][gG])\b")
_BEGIN_LINE: Final = re.compile(rb"^(?=begin[ \t]+[0-7]|=ybegin[ \t])",
                                re.IGNORECASE | re.MULTILINE)


def _meta_charsets(low: bytes) -> Iterator[tuple[int, str]]:
    """(offset of its ``<meta``, label) of each ``<meta>`` charset, in document order.

    A ``<meta`` declares the first charset declaration that follows it within
    ``_META_GAP`` bytes with no ``>`` between.  Found from each declaration back to
    the nearest ``<meta`` (an earlier one would see the same declaration or an
    earlier one): reading forward from every ``<meta`` up to 512 bytes made
    ``<meta`` repeated cost 12 s per 16 MB, all in one regex call.
    """
    last = -1  # where the previous declaration starts
    for m in _CHARSET.finditer(low):
        at, previous, last = m.start(), last, m.start()
        meta = low.rfind(b"<meta", max(0, at - _META_GAP - 5), at)
        if meta < 0 or previous >= meta + 5 or low.find(b">", meta + 5, at) >= 0:
            continue  # no <meta> before it, or that one declares an earlier charset
        yield meta, m.group(1).decode("ascii", "replace")


def _unread(label: str) -> str | None:
    if is_transcoded(normalise_charset(label)):
        return f"a <meta> charset ({label}) that is not ascii-compatible"
    return None


def unmodelled_markup(low: bytes) -> str | None:
    """Why the scanner cannot read this lower-cased HTML precisely, or None.

    >>> unmodelled_markup(b"<p><svg><style><img src=x></style></svg>")
    'svg content'
    >>> unmodelled_markup(b'<meta charset="utf-7"><p>+adw-img src=x+ad4-')
    'a <meta> charset (utf-7) that is not ascii-compatible'
    >>> unmodelled_markup(b"<meta charset=utf-8><p>hi")
    """
    context = _CONTEXT.search(low)
    for at, label in _meta_charsets(low):
        if context is not None and context.start() < at:
            break
        why = _unread(label)
        if why is not None:
            return why
    return None if context is None else f"{context.group(1).decode()} content"


def unread_meta_charset(low: bytes) -> str | None:
    """A ``<meta>`` charset that is not ASCII-compatible (a lower-cased view), or None.

    Looked for past any other unmodelled content (an ``<svg>`` first must not hide it).
    """
    for _, label in _meta_charsets(low):
        why = _unread(label)
        if why is not None:
            return why
    return None


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
