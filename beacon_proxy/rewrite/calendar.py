"""Calendar parts (iCalendar, RFC 5545) in a refused copy: nothing in them loads.

An invitation (``text/calendar``, iMIP) or an "add to your calendar" attachment is
shown by the mail client, and some of what it carries loads from the network:

* an HTML description: Outlook shows ``X-ALT-DESC;FMTTYPE=text/html`` as the
  event's body, images included (``STYLED-DESCRIPTION``, RFC 9073, is the
  standard form, also by URI); any property with an HTML or XML ``FMTTYPE``;
* a property whose value is a URI the client fetches: ``IMAGE`` (RFC 7986),
  ``ATTACH`` (a URI unless it says ``VALUE=BINARY``: an alarm's sound too),
  ``TZURL``, ``SOURCE`` (fetched to refresh the calendar), ``STRUCTURED-DATA``;
* the ``ALTREP`` parameter (RFC 5545 3.2.1), an alternate representation of a
  description, summary, location or comment that a client may fetch;
* markup in any other value, for a client that shows a ``DESCRIPTION`` as HTML.

:func:`neutralise_calendar` makes a copy in which none of it loads: an HTML
property in which the fallback's reading finds anything that could load
(:func:`~beacon_proxy.rewrite.markup.markup_edits`: an attribute that loads, a
``(`` of a CSS function, an ``@import``), or that is given by URI, is removed
whole (the plain ``DESCRIPTION`` stays: what every other client shows); a URI
property is removed unless its value is inline (``cid:``, ``mid:``, ``data:``,
``VALUE=BINARY`` or ``ENCODING=BASE64``) - read both ways a client may split
the line (at its first ``:``, or at the first one outside double quotes: when
they differ, it is removed); every ``ALTREP`` parameter is removed (the whole
property when one is left after that); markup in other values (a ``<``) is
neutralised in place with the fallback's insertions (``x-bp-`` before an
attribute that loads, a blank before ``(``, ``@_import``), its words kept.
Links (``URL``, ``CONFERENCE``) are not loads and stay.

Lines are unfolded (a line end, then one blank) and read on a same-length view:
multi-byte characters masked (:func:`~beacon_proxy.rewrite.charsets.scan_view`),
iCalendar's backslash escapes blanked (``\\n`` separates ``<img\\nsrc=`` as the
newline it stands for does).  The changes are made in the original bytes: a
removed property goes with every physical line it has, an insertion or deletion
inside a property is mapped through its folds.  Charsets that are not
ASCII-compatible (UTF-16, UTF-32, UTF-7) are read through their UTF-8
transcoding and written back.  Linear in the part's size.

Granted copies keep their calendar parts as they are.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from beacon_proxy.rewrite.charsets import (
    effective_charset,
    from_utf8,
    has_bom,
    is_transcoded,
    scan_view,
    to_utf8,
)
from beacon_proxy.rewrite.markup import applied, markup_edits
from beacon_proxy.rewrite.mime import RENDERED_TYPES, MimePart, MimeTree
from beacon_proxy.rewrite.transfer import (
    TransferError,
    decode,
    decode_base64,
    padded_soft_breaks,
)

__all__ = ["CalendarChange", "calendar_change", "is_calendar", "neutralise_calendar"]

MAX_CALENDAR: Final = 16 << 20  # bytes of a decoded calendar part read by the precise path

CALENDAR_TYPES: Final = frozenset({"application/ics", "application/x-ical"})
"""Calendar types without "calendar" in their name (text/calendar, text/x-vcalendar,
application/calendar+xml and the like are found by the word)."""

#: A file name (or name) parameter that ends in a calendar extension, RFC 2231's
#: percent-encoded dot included.
_FILE_NAME: Final = re.compile(
    rb"name[^=\r\n]{0,12}=[^;\r\n]{0,400}?(?:\.|%2e)(?:ics|ical|icalendar|ifb|vcs)(?![a-z0-9])",
    re.IGNORECASE)
_FOLD: Final = re.compile(rb"\r?\n(?=[\t ])")
#: The seam between two RFC 2231 continuations of a name: "...; filename*1=..."
_CONTINUATION: Final = re.compile(
    rb'"?[\t ]*;[\t ]*(?:file)?name\*[1-9][0-9]*\*?[\t ]*=[\t ]*"?', re.IGNORECASE)
_SNIFF: Final = 512  # bytes of a body looked at for BEGIN:VCALENDAR
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]+")
_BEGIN: Final = re.compile(rb"(?:\xef\xbb\xbf|\xff\xfe|\xfe\xff)?\s*begin[\t ]*:[\t ]*vcalendar",
                           re.IGNORECASE)
_LINE: Final = re.compile(rb"[^\r\n]*+(?:\r\n|\r|\n|\Z)")
_ESCAPE: Final = re.compile(rb"\\[\s\S]")
_NAME: Final = re.compile(rb"[^;:\t ]*+")
#: An ALTREP parameter, its value quoted or not (quote-aware, in the parameters).
_ALTREP: Final = re.compile(rb';[\t ]*+altrep[\t ]*+=[\t ]*+(?:"[^"]*+"?|[^;:]*+)', re.IGNORECASE)
_HTML_PROPERTIES: Final = frozenset({b"X-ALT-DESC", b"STYLED-DESCRIPTION"})
_HTML_FORMAT: Final = re.compile(rb"fmttype[^;:]*?(?:html|xml|css|svg)", re.IGNORECASE)
_URI_PROPERTIES: Final = frozenset({b"IMAGE", b"ATTACH", b"TZURL", b"SOURCE",
                                    b"STRUCTURED-DATA"})
_INLINE_VALUE: Final = re.compile(rb"[\t ]*+(?:cid|mid|data):", re.IGNORECASE)
_BINARY: Final = re.compile(rb"value[\t ]*=[\t ]*binary|encoding[\t ]*=[\t ]*base64",
                            re.IGNORECASE)
_BY_URI: Final = re.compile(rb"value[\t ]*=[\t ]*uri", re.IGNORECASE)
#: vCalendar 1.0's transfer encodings of a value (``ENCODING=QUOTED-PRINTABLE``, also
#: written as the bare parameter ``;QUOTED-PRINTABLE``; ``ENCODING=BASE64`` or ``B``).
_ENCODED: Final = re.compile(
    rb";[\t ]*+(?:encoding[\t ]*+=[\t ]*+)?(quoted-printable|base64|b)[\t ]*+(?=[;:,]|$)",
    re.IGNORECASE)
_QUOTED_PRINTABLE: Final = re.compile(rb";[\t ]*+(?:encoding[\t ]*+=[\t ]*+)?quoted-printable",
                                      re.IGNORECASE)
_FETCHED: Final = frozenset({b"TZURL", b"SOURCE"})  # always a URI
_URI: Final = re.compile(rb"[\t ]*+[a-z][a-z0-9+.-]*+:", re.IGNORECASE)


def is_calendar(tree: MimeTree, part: MimePart) -> bool:
    """Whether a client may show this leaf as a calendar: its type says so, its (file)
    name ends in ``.ics``, ``.ical``, ``.icalendar``, ``.ifb`` or ``.vcs`` (folded, or
    split in RFC 2231 continuations), or its content starts with ``BEGIN:VCALENDAR`` -
    and it is not read as HTML, CSS or XML (the markup passes cover those)."""
    kind = part.content_type
    if part.is_multipart or kind in RENDERED_TYPES or "xml" in kind:
        return False  # read as markup (xCal, RFC 6321, is XML: no client shows it)
    if "calendar" in kind or kind in CALENDAR_TYPES:
        return True
    header = _FOLD.sub(b"", tree.data[part.header_span])
    if _FILE_NAME.search(_CONTINUATION.sub(b"", header)) is not None:
        return True
    start = part.body_span.start
    head = tree.data[start:min(part.body_span.stop, start + _SNIFF)]
    return _BEGIN.match(_start(head, part.transfer_encoding)) is not None


def _start(head: bytes, cte: str) -> bytes:
    """The first bytes of a body, transfer-decoded as far as they go, NULs left out (so
    UTF-16 and UTF-32 text reads as its ASCII)."""
    try:
        if cte == "base64":
            chunk = _NOT_BASE64.sub(b"", head)[:96]
            head = binascii.a2b_base64(chunk[:len(chunk) // 4 * 4])
        elif cte == "quoted-printable":
            head = binascii.a2b_qp(head)
    except (binascii.Error, ValueError):
        return b""
    return head.replace(b"\0", b"")


@dataclass(frozen=True, slots=True)
class CalendarChange:
    """A calendar part of an analysis: its refused form (``new``, transfer-decoded;
    None when nothing in it loads) and how many constructs that form neutralised."""

    path: tuple[int, ...]
    new: bytes | None
    count: int


def calendar_change(tree: MimeTree, part: MimePart) -> CalendarChange | str:
    """The precise path's reading of a calendar part (:func:`is_calendar`); a string says
    why it cannot (the copy then goes to the fallback, which reads it leniently)."""
    if not part.modifiable:
        return f"calendar: {part.reason}"
    body = tree.body(part)
    try:
        if part.transfer_encoding == "base64":
            decoded, raw = decode_base64(body)
        else:
            decoded, raw = decode(body, part.transfer_encoding), False
    except (TransferError, ValueError) as exc:
        return f"calendar that cannot be decoded: {exc}"
    if raw:
        return "calendar in base64 that some clients show undecoded (its length)"
    if part.transfer_encoding == "quoted-printable" and padded_soft_breaks(body):
        return ("calendar in quoted-printable with blanks after a soft line break's '=' "
                "(decoders join such lines in two ways)")
    if len(decoded) > MAX_CALENDAR:
        return f"calendar larger than {MAX_CALENDAR} bytes"
    result = neutralise_calendar(decoded, part.charset_label)
    if isinstance(result, str):
        return result
    new, count = result
    return CalendarChange(part.path, new if count else None, count)


def neutralise_calendar(decoded: bytes, label: str) -> tuple[bytes, int] | str:
    """``decoded`` (a calendar part's transfer-decoded body, in the charset ``label``
    says) with nothing that loads, and the number of constructs changed; or why no
    such copy can be made (then hold it).

    >>> neutralise_calendar(b"BEGIN:VEVENT\\r\\nIMAGE;VALUE=URI:https://t.example/p\\r\\n"
    ...                     b"DESCRIPTION:Hello\\r\\nEND:VEVENT\\r\\n", "utf-8")
    (b'BEGIN:VEVENT\\r\\nDESCRIPTION:Hello\\r\\nEND:VEVENT\\r\\n', 1)
    """
    charset = effective_charset(decoded, label)
    if not is_transcoded(charset):
        return _neutralised(decoded, scan_view(decoded, charset))
    try:
        text = to_utf8(decoded, charset)
    except ValueError as exc:
        return f"calendar part in {charset} that cannot be read: {exc}"
    new, count = _neutralised(text, text)
    if not count:
        return decoded, 0
    try:
        return from_utf8(new, charset, bom=has_bom(decoded, charset)), count
    except ValueError as exc:
        return f"calendar part in {charset} that cannot be written back: {exc}"


_Edit = tuple[int, int, bytes]  # (start, end, replacement), in the original bytes


def _neutralised(text: bytes, view: bytes) -> tuple[bytes, int]:
    edits: list[_Edit] = []
    count = 0
    lines = [(m.start(), m.end()) for m in _LINE.finditer(view) if m.end() > m.start()]
    index = 0
    while index < len(lines):  # one property: a line and its continuation lines
        start, end = lines[index]
        segments = [(start, _content_end(view, start, end))]
        soft: list[int] = []  # segments after a quoted-printable soft line break
        quoted_printable: bytes | None = None  # the head, once a soft break asks
        ambiguous = False
        index += 1
        while index < len(lines):
            cont, cont_end = lines[index]
            if view[cont] in b" \t":
                segments.append((cont + 1, _content_end(view, cont, cont_end)))
            elif view[segments[-1][0]:segments[-1][1]].endswith(b"="):
                if quoted_printable is None:  # once: a value's lines never change it
                    quoted_printable = _head(b"".join([view[a:b] for a, b in segments]))
                if not _QUOTED_PRINTABLE.search(quoted_printable):
                    break
                if b'"' in quoted_printable:  # maybe a quoted value's text: the next line
                    ambiguous = True          # is a property of its own to some clients
                    break
                soft.append(len(segments))
                segments.append((cont, _content_end(view, cont, cont_end)))
            else:
                break
            end = cont_end
            index += 1
        changed = None if ambiguous else _property(view, segments, soft)
        if soft and changed is not None and not _alone_too(view, segments, soft):
            changed = None
        if changed is None:  # the whole property goes, every physical line of it
            edits.append((start, end, b""))
            count += 1
        elif changed[0]:
            edits += changed[0]
            count += changed[1]
    return (applied(text, edits), count) if edits else (text, 0)


def _alone_too(view: bytes, segments: list[tuple[int, int]], soft: list[int]) -> bool:
    """Whether each line after a soft line break, read as a property of its own (as an
    iCalendar 2.0 client reads it: no soft breaks there), needs nothing either."""
    bounds = [*soft, len(segments)]
    return all(_property(view, segments[a:b], []) == ([], 0) for a, b in pairwise(bounds))


def _content_end(view: bytes, start: int, end: int) -> int:
    """Where the line from ``start`` to ``end`` (its line end included) ends without it."""
    while end > start and view[end - 1] in b"\r\n":
        end -= 1
    return end


def _property(view: bytes, segments: list[tuple[int, int]], soft: list[int]
              ) -> tuple[list[_Edit], int] | None:
    """The edits one property needs (in the original bytes) and their count; None when
    it is removed whole.  ``segments``: its physical lines' contents, the first blank of
    each continuation line left out (the unfolded property is their concatenation);
    ``soft``: those that follow a quoted-printable soft line break (vCalendar 1.0)."""
    line = b"".join([view[a:b] if n not in soft else b"\n" + view[a:b]
                     for n, (a, b) in enumerate(segments)]) if soft else \
        b"".join([view[a:b] for a, b in segments])
    name = _NAME.match(line).group().upper()  # type: ignore[union-attr]  # matches ""
    head = _head(line)
    encoded = _ENCODED.search(head)
    if encoded is not None:  # vCalendar 1.0: the value is transfer-encoded
        kept = _encoded_property(name, line, head, encoded.group(1).lower())
        if kept is None:
            return None
        # Read as plain text too (a client that knows no ENCODING parameter, or reads it
        # as a quoted value's text): up to the first soft break, the rest is _alone_too's
        own = segments[:soft[0]] if soft else segments
        plain = _plain_property(name, b"".join([view[a:b] for a, b in own]), head, own)
        return None if plain is None or plain[0] else kept
    return _plain_property(name, line, head, segments)


def _plain_property(name: bytes, line: bytes, head: bytes, segments: list[tuple[int, int]]
                    ) -> tuple[list[_Edit], int] | None:
    first = line.find(b":")
    values = _values(line)
    if name in _HTML_PROPERTIES or _HTML_FORMAT.search(head):
        if _BY_URI.search(head) or _markup(line) or any(
                not _INLINE_VALUE.match(v) and _URI.match(v) for v in values):
            return None
        return [], 0
    if name in _URI_PROPERTIES:
        inline = b'"' not in head and bool(values) and (
            all(_INLINE_VALUE.match(v) for v in values)
            or (name not in _FETCHED and _BINARY.search(head) is not None))
        return None if not inline else ([], 0)
    alternates: list[_Edit] = []
    if b"altrep" in head.lower():
        alternates = [(m.start(), m.end(), b"") for m in _ALTREP.finditer(head)]
        if not alternates or b"altrep" in _head(applied(line, alternates)).lower():
            return None  # an ALTREP this cannot take out alone
    edits, count = alternates, len(alternates)
    if b"<" in line:  # markup, for a client that shows the value as HTML
        body = first + 1 if first >= 0 else len(line)
        # the insertions only: the fallback's deletions are cosmetic, and in text they
        # would take words out ("(online)" read as a url() argument)
        found = [e for e in _markup(line) if e[0] == e[1] and e[0] >= body]
        edits = _union(alternates, found)
        if not set(alternates) <= set(edits):
            return None  # markup inside an ALTREP (read one way): not taken apart here
        count += len(found)
    return _mapped(edits, segments), count


def _encoded_property(name: bytes, line: bytes, head: bytes, encoding: bytes
                      ) -> tuple[list[_Edit], int] | None:
    """A property whose value is quoted-printable or base64 (vCalendar 1.0's ENCODING
    parameter): kept as it is or removed whole (never edited inside its encoding)."""
    if name in _URI_PROPERTIES and name not in _FETCHED and encoding != b"quoted-printable":
        return ([], 0) if b'"' not in head else None  # inline binary data
    if b"altrep" in head.lower():
        return None
    values = []
    for value in _values(line):
        try:
            values.append(binascii.a2b_qp(value) if encoding == b"quoted-printable"
                          else binascii.a2b_base64(value, strict_mode=False))
        except (binascii.Error, ValueError):
            return None  # what a client makes of it is anyone's guess
    for value in values:
        if name in _URI_PROPERTIES and not _INLINE_VALUE.match(value):
            return None
        if (name in _HTML_PROPERTIES or _HTML_FORMAT.search(head)) and _URI.match(value):
            return None
        if b"<" in value and _markup(value):
            return None
    return [], 0


def _values(line: bytes) -> list[bytes]:
    """The value as either reading of the line has it: after the first ``:``, after the
    first outside quotes (one value when they agree; none without a ``:``)."""
    first = line.find(b":")
    values = [line[first + 1:]] if first >= 0 else []
    quoted = _unquoted_colon(line)
    if quoted >= 0 and quoted != first:
        values.append(line[quoted + 1:])
    return values


def _head(line: bytes) -> bytes:
    """The name and parameters, as long as either reading of the line has them: up to
    the first ``:`` or the first outside quotes, whichever comes later (all of it when
    a quote is never closed)."""
    quoted = _unquoted_colon(line)
    return line if quoted < 0 else line[:max(line.find(b":"), quoted)]


def _markup(line: bytes) -> list[_Edit]:
    """The fallback's edits of the value read both ways: as written, and with the
    backslash escapes a client decodes (``\\n`` a newline) blanked."""
    return _union(markup_edits(line), markup_edits(_ESCAPE.sub(b"  ", line)))


def _union(first: list[_Edit], second: list[_Edit]) -> list[_Edit]:
    """Both lists of edits in one, sorted and not overlapping.  Every insertion is kept
    (one per place: it is what stops a load); a deletion (cosmetic: it empties a value
    whose attribute is renamed) only where it overlaps no insertion or deletion kept."""
    inserted: dict[int, bytes] = {}
    for start, end, replacement in (*first, *second):
        if start == end:
            inserted.setdefault(start, replacement)
    places = sorted(inserted)
    out: list[_Edit] = []
    pos = -1
    for start, end, _ in sorted({e for e in (*first, *second) if e[0] < e[1]}):
        after = bisect_right(places, start)  # the first insertion after start
        if start >= pos and (after == len(places) or places[after] >= end):
            out.append((start, end, b""))
            pos = end
    out += [(p, p, r) for p, r in inserted.items()]
    out.sort(key=lambda e: (e[0], e[1]))  # an insertion before a deletion at its start
    return out


def _unquoted_colon(line: bytes) -> int:
    """The first ``:`` outside double quotes (the value's start), -1 when none (an
    unclosed quote)."""
    pos = 0
    while True:
        colon = line.find(b":", pos)
        quote = line.find(b'"', pos)
        if colon < 0:
            return -1
        if quote < 0 or colon < quote:
            return colon
        close = line.find(b'"', quote + 1)
        if close < 0:
            return -1
        pos = close + 1


def _mapped(edits: list[_Edit], segments: list[tuple[int, int]]) -> list[_Edit]:
    """Edits of the unfolded property as edits of the original bytes: a deletion across
    a fold becomes one deletion per physical line, so the folds stay; an insertion goes
    before the byte it precedes (at the end of the last line after the last byte)."""
    out: list[_Edit] = []
    for start, end, replacement in edits:
        offset = 0
        for number, (seg_start, seg_end) in enumerate(segments):
            size = seg_end - seg_start
            if start == end:
                if start < offset + size or number == len(segments) - 1:
                    out.append((seg_start + start - offset, seg_start + start - offset,
                                replacement))
                    break
            else:  # the fallback's and ALTREP's deletions replace with nothing
                lo, hi = max(start, offset), min(end, offset + size)
                if lo < hi:
                    out.append((seg_start + lo - offset, seg_start + hi - offset, b""))
            offset += size
    return out
