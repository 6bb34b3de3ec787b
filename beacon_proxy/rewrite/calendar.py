"""Calendar parts (iCalendar, RFC 5545; vCalendar 1.0) in a refused copy: nothing loads.

An invitation (``text/calendar``, iMIP) or an "add to your calendar" attachment is
shown by the mail client, and some of what it carries loads from the network:

* an HTML description: Outlook shows ``X-ALT-DESC;FMTTYPE=text/html`` as the
  event's body, images included (``STYLED-DESCRIPTION``, RFC 9073, is the
  standard form, also by URI); a client may show any value as HTML;
* a property whose value is a URI the client fetches: ``IMAGE`` (RFC 7986),
  ``ATTACH`` (a URI unless it says ``VALUE=BINARY``: an alarm's sound too),
  ``TZURL``, ``SOURCE`` (fetched to refresh the calendar), ``STRUCTURED-DATA``;
* the ``ALTREP`` parameter (RFC 5545 3.2.1), an alternate representation of a
  description, summary, location or comment that a client may fetch;
* a value in quoted-printable or base64 (vCalendar 1.0's ``ENCODING``), which
  decodes to any of that.

Readers split and unfold these lines in many ways, so, like the fallback's reading
of markup (:mod:`~beacon_proxy.rewrite.markup`), :func:`neutralise_calendar` does
not decide on one: it reads the text in every way a client may - as it is, and
unfolded as RFC 5545 says (a line end and one blank go), as RFC 822 and vCalendar
1.0 say (the blank stays), across empty lines (``icalendar``), with any of CR, LF,
VT, FF, FS-RS, NEL, U+2028 and U+2029 as a line end, and each of those with
iCalendar's backslash escapes read as a decoder reads them (``\\n`` a newline,
also where a naive decoder takes ``\\\\n`` for ``\\`` and a newline) - and makes
only insertions in the original bytes, each mapped back from the reading that
asked for it, which no other reading can undo:

* in any line that holds a ``<``, the fallback's insertions
  (:func:`~beacon_proxy.rewrite.markup.markup_edits`: ``x-bp-`` before an
  attribute that loads, a blank - ``/**/`` at the start of a line, where a
  blank would fold it - before a ``(`` of a CSS function, ``@_import``), the
  words kept;
* ``X-BP-`` before the name of a fetched-URI property at the start of a line (a
  group prefix ``item1.`` allowed), which makes it an unknown property that
  clients ignore - unless its value is inline, read both ways a client may split
  the line (``cid:``, ``mid:``, ``data:``, or a real ``VALUE=BINARY`` parameter of
  ``ATTACH``, ``IMAGE`` or ``STRUCTURED-DATA``, no quote before the value); an HTML
  description only when it is given by URI;
* ``X-BP-`` before every ``ALTREP`` and ``ENCODING`` parameter name (but the
  ``ENCODING`` of a kept binary value) and before a bare ``BASE64`` parameter, and
  an ``_`` inside every ``quoted-printable`` (``QUOTED_-PRINTABLE``): no decoder
  then decodes a value, not even one that takes any line with that word for
  quoted-printable and joins it to the next.

Links (``URL``, ``CONFERENCE``) are not loads and stay.  Charsets that are not
ASCII-compatible (UTF-16, UTF-32, UTF-7, HZ) are read through their UTF-8
transcoding and written back; their bytes as they are must need nothing (a client
that reads UTF-7 as ASCII), else no copy is made.  Work is linear in the part's
size (views are built once, insertions mapped back with a binary search).

Granted copies keep their calendar parts as they are.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite.charsets import (
    effective_charset,
    from_utf8,
    has_bom,
    is_transcoded,
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

#: Bytes of a decoded calendar part read (by both paths); a larger one is no copy's
#: (real invitations are a few KB; the readings cost up to ~4 us a byte of hostile text).
MAX_CALENDAR: Final = 4 << 20

CALENDAR_TYPES: Final = frozenset({"application/ics", "application/x-ical"})
"""Calendar types without "calendar" in their name (text/calendar, text/x-vcalendar
and the like are found by the word)."""

_EXTENSION: Final = re.compile(r"\.(?:ics|ical|icalendar|ifb|vcs)\s*\Z", re.IGNORECASE)
#: A name parameter ending in a calendar extension, as written (folds undone).
_FILE_NAME: Final = re.compile(
    rb"name[\t ]*=[\t ]*\"?[^;\"\r\n]{0,400}?\.(?:ics|ical|icalendar|ifb|vcs)"
    rb"[\t ]*(?:[\";\r\n]|\Z)", re.IGNORECASE)
#: What only Python's email reads right: RFC 2047 words, RFC 2231 sections and charsets.
_ENCODED_NAME: Final = re.compile(rb"name[^=\r\n]{0,12}\*|=\?", re.IGNORECASE)
_FOLD: Final = re.compile(rb"\r?\n(?=[\t ])")
_SNIFF: Final = 65536  # at most, bytes of a body decoded at a time to find BEGIN:VCALENDAR
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]+")
_BEGIN: Final = re.compile(rb"(?:\xef\xbb\xbf|\xff\xfe|\xfe\xff)?\s*begin[\t ]*:[\t ]*vcalendar",
                           re.IGNORECASE)

#: Every byte sequence some reader ends a line at: CR LF, CR, LF, VT, FF, FS, GS, RS,
#: NEL (Latin-1 and UTF-8), U+2028 and U+2029 (UTF-8).
_BREAK: Final = rb"(?:\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85]|\xc2\x85|\xe2\x80[\xa8\xa9])"
_BREAKS: Final = re.compile(_BREAK)
#: The unfoldings: each pattern's matches are deleted from the text.
_UNFOLDINGS: Final = (
    re.compile(_BREAK + rb"[\t ]"),             # RFC 5545: a line end and one blank
    re.compile(_BREAK + rb"(?=[\t ])"),         # RFC 822, vCalendar 1.0: the blank stays
    re.compile(_BREAK + rb"++[\t ]"),           # icalendar: across empty lines
    re.compile(_BREAK + rb"++(?=[\t ])"),
)
_ESCAPES: Final = (re.compile(rb"\\[\s\S]"),   # pairs, as RFC 5545 decodes them
                   re.compile(rb"\\[nN]"))       # "\n" anywhere, as a naive decoder does
#: A property's name at the start of a line (blanks and a group prefix allowed).
_PROPERTY: Final = re.compile(rb"[\t ]*+(?:[A-Za-z0-9_-]++\.)?([A-Za-z0-9_-]++)[\t ]*+[;:]")
_URI_PROPERTIES: Final = frozenset({b"IMAGE", b"ATTACH", b"TZURL", b"SOURCE",
                                    b"STRUCTURED-DATA"})
_BINARY_PROPERTIES: Final = frozenset({b"IMAGE", b"ATTACH", b"STRUCTURED-DATA"})
_HTML_PROPERTIES: Final = frozenset({b"X-ALT-DESC", b"STYLED-DESCRIPTION"})
_INLINE: Final = re.compile(rb"[\t ]*+(?:cid|mid|data):", re.IGNORECASE)
_SCHEME: Final = re.compile(rb"[\t ]*+[a-z][a-z0-9+.-]*+:", re.IGNORECASE)
_BY_URI: Final = re.compile(rb";[\t ]*+value[\t ]*+=[\t ]*+uri[\t ]*+(?=[;:,]|\Z)",
                            re.IGNORECASE)
_VALUE_BINARY: Final = re.compile(rb";[\t ]*+value[\t ]*+=[\t ]*+binary[\t ]*+(?=;|\Z)",
                                  re.IGNORECASE)
#: Parameter names renamed wherever they are: ALTREP and ENCODING (group 1), a bare
#: BASE64 after a ";" (group 2).
_PARAMETER: Final = re.compile(
    rb"(?<![A-Za-z0-9_-])(altrep|encoding)(?=[\t ]*+=)|;[\t ]*+(base64)(?=[\t ]*+[;:,])",
    re.IGNORECASE)
_QUOTED_PRINTABLE: Final = re.compile(rb"(?<=quoted)(?=-printable)", re.IGNORECASE)
_RENAMED: Final = b"X-BP-"
_Insertion = tuple[int, bytes]  # (position in the original bytes, what goes there)


def is_calendar(tree: MimeTree, part: MimePart) -> bool:
    """Whether a client may show this leaf as a calendar: its type says so, its (file)
    name ends in ``.ics``, ``.ical``, ``.icalendar``, ``.ifb`` or ``.vcs`` (folded,
    RFC 2047- or RFC 2231-encoded, split in continuations), or its content starts with
    ``BEGIN:VCALENDAR`` (after any blank lines; NULs left out, so UTF-16 too).  An
    HTML, CSS or XML part too: a client that opens it by its name reads it as a
    calendar (the precise path leaves such a part to the fallback)."""
    if part.is_multipart:
        return False
    kind = part.content_type
    if ("calendar" in kind and "xml" not in kind) or kind in CALENDAR_TYPES:
        return True  # (xCal, RFC 6321, is XML: no mail client shows it)
    header = tree.data[part.header_span]
    if (b"ame" in header or b"AME" in header) and (  # a (file) name, in any case
            _FILE_NAME.search(_FOLD.sub(b"", header)) is not None
            or (_ENCODED_NAME.search(header) is not None and _named_calendar(header))):
        return True
    # (a part read as markup by its type is a calendar only when opened by its name)
    return kind not in RENDERED_TYPES and _starts_calendar(tree, part)


def _named_calendar(header: bytes) -> bool:
    """Whether Python's email, which decodes every encoding of a parameter, reads a
    calendar name in ``header`` (a part's header block)."""
    msg = email.message_from_bytes(header.rstrip(b"\r\n") + b"\r\n\r\n",
                                   policy=email.policy.default)
    try:
        names = (msg.get_filename(), msg.get_param("name"))
    except Exception:  # a header email cannot read: the plain search above stands
        return False
    return any(isinstance(n, str) and _EXTENSION.search(n) for n in names)


def _starts_calendar(tree: MimeTree, part: MimePart) -> bool:
    """Whether the body, transfer-decoded, starts with ``BEGIN:VCALENDAR`` after
    blanks: decoded a piece at a time until something else than blanks comes."""
    pos, stop, cte = part.body_span.start, part.body_span.stop, part.transfer_encoding
    seen = carry = b""
    size = 128  # a first piece, doubled while all is blank (most bodies say at once)
    while pos < stop:
        end = min(stop, pos + size)
        size = min(size * 2, _SNIFF)
        if cte == "quoted-printable" and end < stop:
            cut = tree.data.rfind(b"=", end - 2, end)  # no "=XX" escape cut in two
            end = cut if cut > pos else end
        chunk = tree.data[pos:end]
        pos = end
        try:
            if cte == "base64":  # in quads: what a piece leaves over goes with the next
                chunk = carry + _NOT_BASE64.sub(b"", chunk)
                whole = len(chunk) // 4 * 4
                chunk, carry = binascii.a2b_base64(chunk[:whole]), chunk[whole:]
            elif cte == "quoted-printable":
                chunk = binascii.a2b_qp(chunk)
        except (binascii.Error, ValueError):
            return False
        seen = (seen + chunk.replace(b"\0", b"")).lstrip(b" \t\r\n\x0b\x0c")
        if len(seen) >= 32 or (seen and pos >= stop):
            break
    return _BEGIN.match(seen) is not None


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
    result = neutralise_calendar(decoded, part.charset_label)
    if isinstance(result, str):
        return result
    new, count = result
    return CalendarChange(part.path, new if count else None, count)


def neutralise_calendar(decoded: bytes, label: str) -> tuple[bytes, int] | str:
    """``decoded`` (a calendar part's transfer-decoded body, in the charset ``label``
    says) with nothing that loads, and the number of insertions; or why no such copy
    can be made (then hold it).

    >>> neutralise_calendar(b"IMAGE;VALUE=URI:https://t.example/p\\r\\nSUMMARY:Hi\\r\\n", "utf-8")
    (b'X-BP-IMAGE;VALUE=URI:https://t.example/p\\r\\nSUMMARY:Hi\\r\\n', 1)
    """
    if len(decoded) > MAX_CALENDAR:
        return f"calendar larger than {MAX_CALENDAR} bytes"
    charset = effective_charset(decoded, label)
    if not is_transcoded(charset):
        return _neutralised(decoded)
    if _insertions(decoded):  # UTF-7 read as ASCII by a client that ignores the label
        return f"calendar part in {charset} whose bytes read as ASCII load something"
    try:
        text = to_utf8(decoded, charset)
    except ValueError as exc:
        return f"calendar part in {charset} that cannot be read: {exc}"
    new, count = _neutralised(text)
    if not count:
        return decoded, 0
    try:
        return from_utf8(new, charset, bom=has_bom(decoded, charset)), count
    except ValueError as exc:
        return f"calendar part in {charset} that cannot be written back: {exc}"


def _neutralised(text: bytes) -> tuple[bytes, int]:
    found = _insertions(text)
    if not found:
        return text, 0
    edits = [(pos, pos, found[pos]) for pos in sorted(found)]
    return applied(text, edits), len(edits)


class _View:
    """The text as one reading has it: ``data``, and where each stretch of it is in the
    original bytes (``starts[i]`` in the view is ``origins[i]`` in the original)."""

    def __init__(self, text: bytes, deleted: re.Pattern[bytes] | None = None) -> None:
        self.starts = [0]
        self.origins = [0]
        if deleted is None:
            self.data = text
            return
        pieces: list[bytes] = []
        pos = size = 0
        for m in deleted.finditer(text):
            pieces.append(text[pos:m.start()])
            size += m.start() - pos
            pos = m.end()
            self.starts.append(size)
            self.origins.append(pos)
        pieces.append(text[pos:])
        self.data = b"".join(pieces)

    def origin(self, at: int) -> int:
        """Where the byte at ``at`` in the view is in the original bytes."""
        i = bisect_right(self.starts, at) - 1
        return self.origins[i] + at - self.starts[i]


def _insertions(text: bytes) -> dict[int, bytes]:
    """Every insertion any reading asks for: position in ``text`` -> bytes."""
    views = [_View(text)]
    if re.search(_BREAK + rb"[\t ]", text):
        seen = {text}
        for pattern in _UNFOLDINGS:
            view = _View(text, pattern)
            if view.data not in seen:
                seen.add(view.data)
                views.append(view)
    found: dict[int, bytes] = {}
    for view in views:
        _structure(text, view, found)
        _markup(text, view, view.data, found)
        if b"\\" in view.data:
            for escape in _ESCAPES:
                _markup(text, view, escape.sub(b"  ", view.data), found)
    return found


def _markup(text: bytes, view: _View, data: bytes, found: dict[int, bytes]) -> None:
    """The fallback's insertions in each line of ``data`` (``view``'s bytes, escapes
    perhaps blanked: the same length) that holds a ``<``."""
    for line_start, line_end in _lines(data):
        line = data[line_start:line_end]
        if b"<" not in line:
            continue
        for start, end, replacement in markup_edits(line):
            if start != end:
                continue  # a deletion is cosmetic (it empties a value), and takes words
            at = view.origin(line_start + start)
            if replacement == b" " and at > 0 and text[at - 1] in b"\r\n":
                replacement = b"/**/"  # a blank at a line's start would fold it
            found.setdefault(at, replacement)


def _structure(text: bytes, view: _View, found: dict[int, bytes]) -> None:
    """Fetched-URI properties and encoding or ALTREP parameters, line by line."""
    data = view.data
    for start, end in _lines(data):
        m = _PROPERTY.match(data, start, end)
        kept_binary = False
        if m is not None:
            name = m.group(1).upper()
            if name in _URI_PROPERTIES or name in _HTML_PROPERTIES:
                value = data[m.end(1):end]
                head, values = _split(value)
                if name in _HTML_PROPERTIES:
                    loads = _BY_URI.search(head) is not None or any(
                        _SCHEME.match(v) and not _INLINE.match(v) for v in values)
                else:
                    kept_binary = name in _BINARY_PROPERTIES and b'"' not in head and \
                        _VALUE_BINARY.search(head) is not None
                    loads = not kept_binary and not (
                        values and all(_INLINE.match(v) for v in values))
                if loads:
                    found.setdefault(view.origin(m.start(1)), _RENAMED)
        for p in _PARAMETER.finditer(data, start, end):
            name = (p.group(1) or p.group(2)).lower()
            if not (kept_binary and name != b"altrep"):
                found.setdefault(view.origin(p.start(1) if p.group(1) else p.start(2)),
                                 _RENAMED)
        for q in _QUOTED_PRINTABLE.finditer(data, start, end):
            found.setdefault(view.origin(q.start()), b"_")


def _lines(data: bytes) -> list[tuple[int, int]]:
    """The spans of ``data``'s lines, every :data:`_BREAK` a line end."""
    spans = []
    pos = 0
    for m in _BREAKS.finditer(data):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(data)))
    return spans


def _split(rest: bytes) -> tuple[bytes, list[bytes]]:
    """A property's parameters and value (``rest``: from after its name), as long as
    either reading has them: split at the first ``:`` and at the first outside double
    quotes; the parameters as far as the later split (all of it when a quote is never
    closed), the value as each split has it."""
    first = rest.find(b":")
    quoted = _unquoted_colon(rest)
    values = [rest[first + 1:]] if first >= 0 else []
    if quoted >= 0 and quoted != first:
        values.append(rest[quoted + 1:])
    return (rest if quoted < 0 else rest[:max(first, quoted)]), values


def _unquoted_colon(line: bytes) -> int:
    """The first ``:`` outside double quotes, -1 when none (an unclosed quote)."""
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
