"""The conservative fallback: neutralise every remote load a client could make.

The precise engine (:mod:`~beacon_proxy.rewrite.engine`) finds each beacon and
changes only what it must.  When it cannot decide - a limit was hit, the MIME
structure can be read in more than one way, an internal error, the CPU budget
ran out - a refused recipient's copy goes through this module instead: a
simple, linear pass that needs no HTML or CSS parser and so cannot be
misled by one.  It trades the layout's remote images for the certainty that
nothing is loaded:

* markup and CSS, in every part a client could render as HTML or CSS, are read
  as :mod:`~beacon_proxy.rewrite.markup` reads them, anywhere: every attribute
  that loads renamed (``x-bp-src``), every ``(`` of a CSS function and every
  ``@import`` broken;
* an AMP part (``text/x-amp-html``) is emptied: clients then show the HTML
  alternative, which is neutralised like any other;
* a calendar part loses what loads in it (:mod:`~beacon_proxy.rewrite.calendar`:
  HTML descriptions, images and other fetched URIs, ``ALTREP``).

Work is linear.  Multi-byte charsets are matched on the same-length scan
view (:func:`~beacon_proxy.rewrite.charsets.scan_view`), so no insertion lands
inside a character; UTF-16, UTF-32 and UTF-7 parts are transcoded to UTF-8
and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.calendar import is_calendar, neutralise_calendar
from beacon_proxy.rewrite.charsets import opens_tags, reading, scan_view
from beacon_proxy.rewrite.css import SUBSTITUTED, scan_css
from beacon_proxy.rewrite.html import scan_html
from beacon_proxy.rewrite.htmlattr import is_remote
from beacon_proxy.rewrite.markup import Budget, TooMuchMarkup, neutralise_markup
from beacon_proxy.rewrite.mime import (
    OPAQUE_TYPES,
    RENDERED_TYPES,
    MimePart,
    MimeTree,
    is_ambiguous,
    is_message,
    parse_message,
    reencode,
)
from beacon_proxy.rewrite.transfer import (
    ENCODINGS,
    decode,
    line_ending,
    normalise_cte,
    padded_soft_breaks,
    qp_two_readings,
    shown_raw,
    strip_padded_breaks,
)
from beacon_proxy.rewrite.unmodelled import hide_encoded_files, unread_meta_charset

__all__ = ["FallbackResult", "neutralise_message", "xml_document"]

#: Limits of the fallback's own MIME parse: far above what the precise path allows,
#: still linear enough (work grows with parts x depth).
MAX_DEPTH: Final = 200  # each level may search the rest of the message once
MAX_PARTS: Final = 20_000
MAX_EMBEDDED: Final = 8  # base64/QP-encoded message/rfc822 inside each other

_XML_TYPES: Final = frozenset({"text/xml", "application/xml", "text/xsl"})
_AMP_BODY: Final = b"<!-- AMP part removed by beacon-proxy: the HTML alternative is shown -->"
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
#: The encoding name as Thunderbird reads it: up to ";", "," or whitespace.
_CTE_TOKEN: Final = re.compile(r"[^;,\s]*")


@dataclass(frozen=True, slots=True)
class FallbackResult:
    """A neutralised copy, or why none could be made (``data`` is None: hold the copy)."""

    data: bytes | None
    neutralised: int  # loads and parts neutralised
    reason: str | None = None


# --- whole messages ---------------------------------------------------------------------------

def _part_body(tree: MimeTree, part: MimePart) -> tuple[bytes, str]:
    """The transfer-decoded body and the encoding to write it back with.

    An unknown encoding is read as its first token (``base64 x`` is base64 to
    Thunderbird), else as the bytes themselves; either way the part is then
    written back under a known encoding (see :func:`_neutralise_part`), so no
    client decodes it some other way (Thunderbird decodes ``x-uuencode``).
    Quoted-printable with blanks after a soft break's ``=`` is read as RFC 2045 says
    (:func:`~beacon_proxy.rewrite.transfer.padded_soft_breaks`) and written back.
    """
    body = tree.body(part)
    cte = part.transfer_encoding
    if cte not in ENCODINGS:
        cte = normalise_cte(_CTE_TOKEN.match(cte)[0])  # type: ignore[index]
        cte = cte if cte in ENCODINGS else "8bit"
    if cte == "quoted-printable" and padded_soft_breaks(body):
        body = strip_padded_breaks(body)  # RFC 2045's reading; written back canonically
    return decode(body, cte), cte


def _neutralise_text(decoded: bytes, label: str, content_type: str, budget: Budget
                     ) -> tuple[bytes, int] | str:
    """The neutralised text and the count; or why no copy is safe (hold it).

    Text that clients read in several ways (``Reading.others``: another charset, a
    ``<meta>``, a label browsers do not know) is neutralised only when every reading's
    view gives the same result, which then is safe for each of them.  An XML document
    that declares entities of its own (``<!ENTITY``, in its DOCTYPE's internal subset)
    is held: a reference to one expands to text no pattern here sees (``url&p;`` with
    ``p`` a ``(``; ``@&i;`` with ``i`` the word ``import``).
    """
    differently = (f"{content_type} part that clients decode differently ({label}, "
                   "or a <meta> charset)")
    read = reading(decoded, label)
    if read is None:
        return differently
    if read.transcoded is None and unread_meta_charset(decoded.lower()) is not None:
        return differently  # a client honouring the <meta> reads other markup than we change
    if xml_document(content_type) and b"<!entity" in read.view.lower():
        return f"{content_type} part that declares its own entities (<!ENTITY)"
    text, count = neutralise_markup(read.text, read.view, budget)
    for other in read.others:
        if neutralise_markup(read.text, other, budget)[0] != text:
            return differently
    if content_type in _WASHED_TYPES and webmail.loads(text, read.charset):
        return f"{content_type} part that webmail's washer (Roundcube) makes load"
    if still_loads(text, read.charset, content_type):
        return (f"{content_type} part that still loads once neutralised, read as a browser "
                "reads it")
    if not count:
        return decoded, 0
    new = read.back(text)
    return differently if read.foreign and opens_tags(new) else (new, count)


def still_loads(text: bytes, charset: str, content_type: str) -> bool:
    """Whether the precise scanner, which reads markup as a browser does (character
    references, CSS escapes, comments), finds a remote load in neutralised ``text``.

    The patterns of :mod:`~beacon_proxy.rewrite.markup` read no markup, so what they
    leave is read once more the way a browser reads it, the proof that their edits did
    not join anything into a load (``ur\\6c`` + blank + ``(`` was ``url(``: a hex
    escape takes one blank as its end).  A style sheet is read as CSS, anything else as
    HTML (also an XML document: its ``style`` attributes and elements are CSS).  A scan
    stopped by its limits has checked what it read.

    >>> still_loads(b'<p style="background:ur\\\\6c (//t.example/p)">', "utf-8", "text/html")
    True
    >>> still_loads(b'<p style="background:ur\\\\6c  (//t.example/p)">', "utf-8", "text/html")
    False
    """
    view = scan_view(text, charset)
    if content_type == "text/css":
        return any(ref.kind == SUBSTITUTED or is_remote(ref.url) for ref in scan_css(view))
    return any(ref.remote for ref in scan_html(view, charset=charset).references)


#: Types a webmail washer renders as HTML (its rewrites can make them load).
_WASHED_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})


def xml_document(content_type: str) -> bool:
    """Whether a browser renders a part of this type as an XML document, which loads what
    it names, when a frame, ``<object>`` or ``<embed>`` loads it by its ``cid:``: XHTML,
    SVG (an image that loads nothing only when an ``<img>`` shows it), any XML.

    >>> xml_document("image/svg+xml"), xml_document("text/xml"), xml_document("image/png")
    (True, True, False)
    """
    return content_type.endswith("+xml") or content_type in _XML_TYPES


def _changed_part(tree: MimeTree, part: MimePart, new: bytes, cte: str
                  ) -> tuple[slice, bytes]:
    """(span to replace, bytes): the body re-encoded; the header too when the encoding changes."""
    body, header = reencode(tree, part, new, cte)
    if header is None:
        return part.body_span, body
    sep = tree.data[part.header_span.stop:part.body_span.start]
    eol = line_ending(tree.data[part.header_span] or tree.body(part))
    return slice(part.header_span.start, part.body_span.stop), header + (sep or eol) + body


def neutralise_message(data: bytes, _depth: int = 0, _budget: Budget | None = None
                       ) -> FallbackResult:
    """Neutralise every remote load in every part a client could render as HTML or CSS.

    Parts of other types leave byte-identical.  ``data`` is None in the result when
    that cannot be promised (the message is beyond even the fallback's limits, it
    holds encrypted or opaque S/MIME content that a client would decrypt and render,
    or a delimiter line that clients split differently).  A bare CR, a line end
    to some clients only, becomes CRLF first, so every client reads the structure
    that was neutralised.
    """
    try:
        return _neutralised(data, _depth, _budget or Budget())
    except TooMuchMarkup as exc:  # a bound of markup.py: no copy is made, it is held
        return FallbackResult(None, 0, f"beyond the fallback's limits: a part with {exc}")


def _neutralised(data: bytes, _depth: int, budget: Budget) -> FallbackResult:
    fixed = 0
    if b"\r" in data:
        data, fixed = _BARE_CR.subn(b"\r\n", data)
    tree = parse_message(data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS)
    for problem in tree.problems:
        if is_ambiguous(problem):  # no one copy is safe for every reading
            return FallbackResult(None, 0, problem)
        if problem.startswith(("more than", "too many", "internal")):
            return FallbackResult(None, 0, f"beyond the fallback's limits: {problem}")
    changes: list[tuple[slice, bytes]] = []
    count = 0
    parents = {p.path[:-1] for p in tree.parts if p.path}
    for part in tree.parts:
        if part.content_type in OPAQUE_TYPES:
            return FallbackResult(None, 0, f"opaque {part.content_type} content")
        broken = part.reason == "broken MIME structure" or (
            part.is_multipart and not part.boundary)
        if part.is_multipart:
            if broken and part.path not in parents:  # no parts found: a client shows the body
                new, n = neutralise_markup(tree.body(part), budget=budget)
                if n:
                    changes.append((part.body_span, new))
                    count += n
            continue
        if is_message(part.content_type):  # encoded: the parser left it opaque
            if _depth >= MAX_EMBEDDED:
                return FallbackResult(None, 0, "embedded messages nested too deep")
            decoded, _ = _part_body(tree, part)
            inner = neutralise_message(decoded, _depth + 1, budget)
            if inner.data is None:
                return inner
            # Always written back, in base64: Python's email parses the encoded text
            # itself as a message (it ignores the encoding here), and base64 text has no
            # header field, no markup; so every reading is the neutralised message.
            changes.append(_changed_part(tree, part, inner.data, "base64"))
            count += max(inner.neutralised, 1)
            continue
        calendar = 0  # what a calendar reading of the part neutralised
        decoded, cte = b"", ""
        if not broken and is_calendar(tree, part):
            decoded, cte = _part_body(tree, part)
            read = neutralise_calendar(decoded, part.charset_label, budget)
            if isinstance(read, str):
                return FallbackResult(None, 0, read)
            # rebuilt (calendar.py): a change of form alone counts as one
            calendar = max(read[1], read[0] != decoded)
            decoded = read[0]
            if part.content_type not in RENDERED_TYPES and not xml_document(
                    part.content_type):
                n = 0
                if part.content_type == "text/plain":
                    decoded, n = hide_encoded_files(decoded)
                if calendar or n or _reencoded(tree, part, cte):
                    changes.append(_changed_part(tree, part, decoded, cte))
                    count += max(calendar + n, 1)
                continue
        if part.content_type == "text/plain" and not broken:
            decoded, cte = _part_body(tree, part)
            new, n = hide_encoded_files(decoded)
            if n:
                changes.append(_changed_part(tree, part, new, cte))
                count += n
            continue
        if (part.content_type not in RENDERED_TYPES and not xml_document(part.content_type)
                and not broken):
            continue
        if not cte:  # not read as a calendar above
            decoded, cte = _part_body(tree, part)
        if part.content_type == "text/x-amp-html" and not broken:
            new, n = _AMP_BODY, 1
        else:
            neutralised = _neutralise_text(decoded, part.charset_label, part.content_type,
                                           budget)
            if isinstance(neutralised, str):
                return FallbackResult(None, 0, neutralised)
            new, n = neutralised
        if n or calendar or _reencoded(tree, part, cte):
            changes.append(_changed_part(tree, part, new, cte))
            count += max(n + calendar, 1)
    for start, stop in tree.outside:  # a preamble or epilogue: a part to some readers
        new, n = neutralise_markup(data[start:stop], budget=budget)
        if n:
            changes.append((slice(start, stop), new))
            count += n
    if not changes:
        return FallbackResult(data, fixed)
    return FallbackResult(_splice(data, changes), count + fixed)


def _reencoded(tree: MimeTree, part: MimePart, cte: str) -> bool:
    """Whether a part must be written again even when nothing in it changed: the header
    too for an unknown encoding (a known one then), base64 that some clients cannot
    decode (and show as it is), quoted-printable that decoders read in two ways
    (:func:`~beacon_proxy.rewrite.transfer.qp_two_readings`): one reading left."""
    body = tree.body(part)
    return part.transfer_encoding not in ENCODINGS or shown_raw(body, cte) or (
        cte == "quoted-printable" and qp_two_readings(body))


def _splice(data: bytes, changes: list[tuple[slice, bytes]]) -> bytes:
    pieces: list[bytes] = []
    pos = 0
    for span, new in sorted(changes, key=lambda change: change[0].start):
        pieces += (data[pos:span.start], new)
        pos = span.stop
    pieces.append(data[pos:])
    return b"".join(pieces)
