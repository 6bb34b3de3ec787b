"""Calendar parts (iCalendar, RFC 5545) in a refused copy: rebuilt, so nothing loads.

An invitation (``text/calendar``, iMIP) or an "add to your calendar" attachment is
shown by the mail client, and some of what it carries loads from the network: an
HTML description (Outlook shows ``X-ALT-DESC;FMTTYPE=text/html`` as the event's
body, images included; ``STYLED-DESCRIPTION``, RFC 9073, is the standard form);
properties whose value is a URI clients fetch (``IMAGE``, ``ATTACH``, also an
alarm's sound, ``TZURL``, ``SOURCE``, ``STRUCTURED-DATA``); the ``ALTREP``
parameter; vCalendar 1.0's ``ENCODING`` (quoted-printable, base64), which decodes to
any of that; markup in any value, for a client that shows it as HTML.

Readers split, unfold, unescape and upper-case these lines in more ways than a
copy could be neutralised for (two attacks found eighteen: a bare CR or U+2028 as a
line end, folds kept or across empty lines, a name with a blank or a dotless i
inside, ``\\:`` in a parameter, a second ``VALUE``, vobject's quoted-printable
joining, ...).  So :func:`neutralise_calendar` does not edit the text: it rebuilds
it, in the one form every reader reads alike - each property on one CRLF line
(never folded: a fold's blank is kept by some readers), an upper-case ASCII name
from a list of properties that load nothing (dates, times, recurrence, time zones,
texts, people, status: :data:`PROPERTIES`), parameters from a list of harmless
ones (:data:`PARAMETERS`), always quoted, their values cleaned of quotes, carets,
backslashes, ``<`` and ``>``; the value cleaned of control characters and line
separators (CR, LF, VT, FF, FS-US, NEL, U+2028, U+2029; a text value's newlines
stay as ``\\n``), its backslashes made ``/`` (no escape but ``\\n``, ``\\,``,
``\\;`` is left, so no two decoders differ), and any markup in it neutralised with
the fallback's insertions (:func:`~beacon_proxy.rewrite.markup.markup_edits`:
``x-bp-src``, a blank before a ``(``, ``@_import``), its words kept.  What is not
on the lists goes (``X-ALT-DESC``, ``IMAGE``, ``ATTACH``, ``TZURL``, ``SOURCE``,
unknown ``X-`` properties, components not on :data:`COMPONENTS` with all they
hold), and so does a ``mailto``-less organiser or attendee.  A calendar already in
that form - what most senders' tools write - comes out byte for byte.

The text is read as the part's charset says and written back in it; a charset
whose bytes read as ASCII differently (ISO-2022, UTF-7, HZ, a Shift_JIS or Big5
second byte that is a backslash) must load nothing read that way too - rebuilt or
kept as it was -, else no copy is made.  Work is linear in the part's size.

Granted copies keep their calendar parts as they are.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite.charsets import (
    decode_text,
    effective_charset,
    encode_text,
    from_utf8,
    has_bom,
    is_transcoded,
    to_utf8,
)
from beacon_proxy.rewrite.markup import Budget, TooMuchMarkup, applied, markup_edits
from beacon_proxy.rewrite.mime import RENDERED_TYPES, MimePart, MimeTree
from beacon_proxy.rewrite.transfer import (
    TransferError,
    decode,
    decode_base64,
    qp_two_readings,
)

__all__ = ["CalendarChange", "calendar_change", "is_calendar", "neutralise_calendar"]

#: Bytes of a decoded calendar part read (by both paths); a larger one is no copy's
#: (real invitations are a few KB; the rebuild costs under 0.5 us a byte of hostile text).
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

COMPONENTS: Final = frozenset({
    "VCALENDAR", "VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY", "VTIMEZONE", "STANDARD",
    "DAYLIGHT", "VALARM"})
"""Components a rebuilt calendar keeps (another one goes with everything inside it)."""

TEXTS: Final = frozenset({
    "SUMMARY", "DESCRIPTION", "LOCATION", "COMMENT", "CONTACT", "TZNAME", "X-WR-CALNAME",
    "X-WR-CALDESC"})
LISTS: Final = frozenset({"CATEGORIES", "RESOURCES"})  # texts whose commas separate
PROPERTIES: Final = TEXTS | LISTS | frozenset({
    "VERSION", "PRODID", "CALSCALE", "METHOD", "UID", "DTSTAMP", "DTSTART", "DTEND", "DUE",
    "DURATION", "COMPLETED", "PERCENT-COMPLETE", "PRIORITY", "SEQUENCE", "STATUS", "CLASS",
    "TRANSP", "RRULE", "RDATE", "EXDATE", "EXRULE", "RECURRENCE-ID", "CREATED",
    "LAST-MODIFIED", "GEO", "URL", "ORGANIZER", "ATTENDEE", "RELATED-TO", "FREEBUSY",
    "TZID", "TZOFFSETFROM", "TZOFFSETTO", "ACTION", "TRIGGER", "REPEAT", "X-WR-TIMEZONE",
    "X-LIC-LOCATION", "X-MICROSOFT-CDO-BUSYSTATUS", "X-MICROSOFT-CDO-INTENDEDSTATUS",
    "X-MICROSOFT-CDO-IMPORTANCE", "X-MICROSOFT-CDO-ALLDAYEVENT",
    "X-MICROSOFT-DISALLOW-COUNTER"})
"""Properties a rebuilt calendar keeps: none names anything a client fetches (``URL`` is a
link; ``ORGANIZER``/``ATTENDEE`` only with a ``mailto:`` address)."""

PARAMETERS: Final = frozenset({
    "TZID", "VALUE", "CN", "ROLE", "PARTSTAT", "RSVP", "CUTYPE", "LANGUAGE", "RELATED",
    "RANGE", "RELTYPE", "FBTYPE", "EMAIL", "X-NUM-GUESTS"})
"""Parameters a rebuilt calendar keeps (not ``ALTREP``, ``DIR``, ``ENCODING``, ``FMTTYPE``)."""

_VALUE_TYPES: Final = frozenset({
    "DATE", "DATE-TIME", "PERIOD", "DURATION", "TEXT", "INTEGER", "FLOAT", "BOOLEAN",
    "UTC-OFFSET", "RECUR", "TIME", "CAL-ADDRESS"})
_ADDRESSED: Final = frozenset({"ORGANIZER", "ATTENDEE"})
#: Line ends as this reading splits the input (folds: one of them, then a blank).
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_FOLDED: Final = re.compile(r"(?:\r\n|\r|\n)[\t ]")
#: Characters no rebuilt value keeps: controls, line separators of any reader.
_UNSAFE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_UNSAFE_PARAMETER: Final = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff"^\\<>]')
_NAME: Final = re.compile(r"[A-Za-z0-9-]+")
_UNESCAPE: Final = re.compile(r"\\([\s\S]?)")
_QUOTED_PRINTABLE: Final = re.compile(r"quoted-printable", re.IGNORECASE)


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
    None when it is the part as it is) and how many things that loaded went."""

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
        return ("calendar in base64 that clients read in two ways (its length, its "
                "padding, base64url's '-' and '_', or bytes over 0x7F)")
    if part.transfer_encoding == "quoted-printable" and qp_two_readings(body):
        return "calendar in quoted-printable that decoders read in two ways"
    result = neutralise_calendar(decoded, part.charset_label)
    if isinstance(result, str):
        return result
    new, count = result
    return CalendarChange(part.path, new if new != decoded else None, count)


def neutralise_calendar(decoded: bytes, label: str, budget: Budget | None = None
                        ) -> tuple[bytes, int] | str:
    """``decoded`` (a calendar part's transfer-decoded body, in the charset ``label``
    says) rebuilt so that nothing in it loads, and how many things that took (0: it
    comes out as it was); or why no such copy can be made (then hold it).  ``budget``:
    the message's, for the markup read in values (a fresh one by default).

    >>> neutralise_calendar(b"BEGIN:VEVENT\\r\\nIMAGE;VALUE=URI:https://t.example/p\\r\\n"
    ...                     b"SUMMARY:Hi\\r\\nEND:VEVENT\\r\\n", "utf-8")
    (b'BEGIN:VEVENT\\r\\nSUMMARY:Hi\\r\\nEND:VEVENT\\r\\n', 1)
    """
    if len(decoded) > MAX_CALENDAR:
        return f"calendar larger than {MAX_CALENDAR} bytes"
    try:
        return _neutralised(decoded, label, budget or Budget())
    except TooMuchMarkup as exc:
        return f"calendar part with {exc}"


def _neutralised(decoded: bytes, label: str, budget: Budget) -> tuple[bytes, int] | str:
    charset = effective_charset(decoded, label)
    transcoded = is_transcoded(charset)
    text = (to_utf8(decoded, charset) if transcoded else decoded).decode(
        "utf-8", "replace") if transcoded or _utf8(charset) else decode_text(decoded, charset)
    rebuilt, count = _rebuilt(text, budget)
    if transcoded:
        new = from_utf8(rebuilt.encode("utf-8"), charset, bom=has_bom(decoded, charset))
    else:
        new = rebuilt.encode("utf-8") if _utf8(charset) else encode_text(
            rebuilt, charset, errors="replace")
    # read as ASCII or UTF-8 by a client that ignores the label (ISO-2022's and HZ's
    # escapes, UTF-7, a Shift_JIS or Big5 second byte that is "\\"): nothing to drop
    # that way either, kept or rebuilt (UTF-16/32 so read is NULs between letters)
    if not _utf8(charset) and not charset.startswith(("utf-16", "utf-32")) and _rebuilt(
            new.decode("latin-1"), budget)[1]:
        return f"calendar part in {charset} whose bytes, read as ASCII, would load"
    return (decoded, 0) if new == decoded else (new, count)


def _utf8(charset: str) -> bool:
    return charset in ("utf-8", "us-ascii")


def _rebuilt(text: str, budget: Budget) -> tuple[str, int]:
    """The calendar in its rebuilt form, and how many properties, components and
    constructs it dropped or neutralised (0 when nothing but the form changed)."""
    out: list[str] = []
    count = 0
    skipped = 0  # depth inside a component that goes
    for line in _LINE_END.split(_FOLDED.sub("", text)):
        if not line.strip():
            continue
        parsed = _parse(line)
        if parsed is None:
            count += 1
            continue
        name, params, value = parsed
        if name in ("BEGIN", "END"):
            kind = value.strip().upper()
            if skipped or kind not in COMPONENTS:
                skipped += 1 if name == "BEGIN" else -1 if skipped else 0
                count += 1
                continue
            out.append(f"{name}:{kind}")
            continue
        if skipped:
            count += 1
            continue
        kept = _property(name, params, value, budget)
        if kept is None:
            count += 1
            continue
        out.append(kept[0])
        count += kept[1]
    return "".join(f"{line}\r\n" for line in out), count


def _parse(line: str) -> tuple[str, list[tuple[str, list[str]]], str] | None:
    """A content line's name (upper-case), parameters and value, as RFC 5545 reads it
    (quotes respected); None when it is not one (no ``:``, an unclosed quote, a name
    that is not plain ASCII letters, digits and hyphens)."""
    m = _NAME.match(line)
    if m is None or m.end() >= len(line) or line[m.end()] not in ";:":
        return None
    name, pos = m.group().upper(), m.end()
    params: list[tuple[str, list[str]]] = []
    while line[pos] == ";":
        p = _NAME.match(line, pos + 1)
        if p is None or p.end() >= len(line) or line[p.end()] != "=":
            return None
        values: list[str] = []
        pos = p.end()
        while True:  # at "=" or ","
            pos += 1
            if line.startswith('"', pos):
                close = line.find('"', pos + 1)
                if close < 0:
                    return None
                values.append(line[pos + 1:close])
                pos = close + 1
            else:
                end = pos
                while end < len(line) and line[end] not in ';:,"':
                    end += 1
                values.append(line[pos:end])
                pos = end
            if pos >= len(line) or line[pos] != ",":
                break
        params.append((p.group().upper(), values))
        if pos >= len(line) or line[pos] not in ";:":
            return None
    return name, params, line[pos + 1:]


def _property(name: str, params: list[tuple[str, list[str]]], value: str, budget: Budget
              ) -> tuple[str, int] | None:
    """The rebuilt line of a property and how many constructs that took; None: it goes."""
    if name not in PROPERTIES:
        return None
    count = 0
    kept: list[str] = []
    for pname, values in params:
        if pname not in PARAMETERS or (pname == "VALUE" and not all(
                v.strip().upper() in _VALUE_TYPES for v in values)):
            count += 1
            continue
        cleaned = [_UNSAFE_PARAMETER.sub("", v) for v in values]
        count += cleaned != values
        kept.append(f"{pname}=" + ",".join(f'"{v}"' if any(c in v for c in ":;,") else v
                                           for v in cleaned))
    if name in TEXTS or name in LISTS:
        text = _UNESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" and m.group(1) else
                             m.group(1), value)
        clean = _UNSAFE.sub(lambda m: "\n" if m.group() == "\n" else "", text)
        clean = clean.replace("\\", "/")
        clean, neutralised = _neutralised_markup(clean, budget)
        count += neutralised
        escaped = clean.replace(";", "\\;").replace("\n", "\\n")
        if name in TEXTS:
            escaped = escaped.replace(",", "\\,")
        # the form alone (escapes, backslashes) is no change worth a count
    else:  # no escapes in these, but readers decode "\\n" in most: no backslash stays
        clean = _UNSAFE.sub("", value).replace("\\", "/")
        if name in _ADDRESSED and not clean.strip().lower().startswith("mailto:"):
            return None
        escaped, neutralised = _neutralised_markup(clean, budget)
        count += neutralised
    return ";".join([name, *kept]) + ":" + escaped, count


def _neutralised_markup(value: str, budget: Budget) -> tuple[str, int]:
    """``value`` with the fallback's insertions where it holds markup (its deletions are
    cosmetic, and in text they would take words out).  The words "quoted-printable"
    lose their hyphen: vobject decodes any line holding them that ends in "="."""
    value = _QUOTED_PRINTABLE.sub("quoted printable", value)
    if "<" not in value:
        return value, 0
    data = value.encode("utf-8", "surrogatepass")
    # insertions only; also a blank before a "(" that has one (a CSS hex escape takes
    # a blank: "u\\72\\6c (" is "url(", its backslashes from "&#92;" in a style)
    edits = [e for e in markup_edits(data, budget) if e[0] == e[1]]
    if not edits:
        return value, 0
    return applied(data, edits).decode("utf-8", "surrogatepass"), len(edits)
