"""Content-Transfer-Encoding: decode a body, and write edits back in its own encoding.

Edits are offsets into the *decoded* bytes; :func:`apply_edits` returns the
body re-encoded with the original transfer encoding and as little change as
it can: quoted-printable re-encodes only the encoded lines an edit touches,
base64 keeps every line before the first edit (and, when the edits do not
shift the 3-byte groups, every line after the last one) and the original line
length and line ending.

>>> body = b'<p>caf=C3=A9 <img src=3D"x"></p>\\r\\n'
>>> decode(body, "quoted-printable")
b'<p>caf\\xc3\\xa9 <img src="x"></p>\\r\\n'
>>> apply_edits(body, "quoted-printable", [Edit(9, 22, b"")])
b'<p>caf=C3=A9 </p>\\r\\n'
>>> apply_edits(body, "base64", [])  # no edits: the very same bytes
b'<p>caf=C3=A9 <img src=3D"x"></p>\\r\\n'
"""

from __future__ import annotations

import binascii
import re
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Final

__all__ = [
    "ENCODINGS",
    "Edit",
    "LineTooLongError",
    "QpIndex",
    "QpSlotted",
    "TransferError",
    "apply_edits",
    "decode",
    "decode_base64",
    "decode_indexed",
    "encode_whole",
    "line_ending",
    "normalise_cte",
    "padded_soft_breaks",
    "qp_slotted",
    "qp_two_readings",
    "shown_raw",
    "splice",
    "strip_padded_breaks",
]

ENCODINGS: Final = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})
"""The transfer encodings this module decodes and re-encodes; anything else is opaque."""

_LINE_LIMIT: Final = 998  # RFC 5322 section 2.1.1, without the CRLF
_QP_BLOCK: Final = 4096
_PADDED_BREAK: Final = re.compile(rb"=[ \t]+\r?\n")
# Where quoted-printable decoders part ways (see qp_two_readings): "==", a soft break
# padded with blanks, a soft break at a bare CR, an escape cut by a soft break.  One
# search from "=" to "=" (~1 ns a byte; the two substring tests it replaced, b"= " and
# b"=\t", took twice that).
_QP_TWO_WAYS: Final = re.compile(
    rb"=(?:=|[ \t]+\r?\n|[ \t]*\r(?!\n)|[0-9A-Fa-f]=[ \t]*\r?\n)")
#: Where ``_QP_TWO_WAYS`` may match: each of its matches is one of these (a blank after
#: "=" with the line's end not yet seen, an escape's first digit and "=").  Searched
#: first, it fails each "=" of an honest body (an escape, a soft break) in half the time.
_QP_TWO_WAYS_FIRST: Final = re.compile(rb"=(?:[=\t ]|\r(?!\n)|[0-9A-Fa-f]=)")
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64: Final = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_NOT_B64_OR_PAD: Final = bytes(b for b in range(256) if b not in _B64_ALPHABET and b != 0x3D)
_SEGMENT: Final = re.compile(rb"[^=]+=*|=+")

QpIndex = tuple[tuple[int, int], ...]
"""(encoded, decoded) offsets of quoted-printable line starts, about every 4 KB."""


class TransferError(ValueError):
    """A body cannot be edited in its transfer encoding (the part must be left as it is)."""


class LineTooLongError(TransferError):
    """A 7bit/8bit edit would make a line longer than 998 octets."""


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``decoded[start:end]`` with ``replacement`` (``start == end`` inserts)."""

    start: int
    end: int
    replacement: bytes


def normalise_cte(value: str | None) -> str:
    """The lower-cased encoding name; ``7bit`` when absent.  Unknown names stay as they are.

    >>> normalise_cte(" Quoted-Printable "), normalise_cte(None), normalise_cte("x-uuencode")
    ('quoted-printable', '7bit', 'x-uuencode')
    """
    name = (value or "").strip().strip("\"'").strip().lower()
    return name or "7bit"


def _b64decode(data: bytes) -> bytes:
    """Lenient base64: junk is skipped and broken padding repaired, never an exception."""
    return decode_base64(data)[0]


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Lenient base64 (:func:`decode`), and whether clients read the body in two ways:
    when the count of alphabet characters is 1 more than a multiple of 4 no decoding
    exists, and Python's ``email`` returns the encoded bytes (bpo-27397) while others
    decode leniently (here: a character is dropped); and when base64 follows a padding
    ``=``, where Python stops and Thunderbird (every group of four) and Roundcube (each
    line) decode on: decoded segment by segment then (:func:`_by_segments`: an encoder
    that pads every chunk wrote the whole text so).  One decode for a well-formed body,
    as :func:`decode`.

    >>> decode_base64(b"aGVsbG8=\\r\\n"), decode_base64(b"<p>hi</p>\\r\\n")[1]
    ((b'hello', False), True)
    >>> decode_base64(b"aGVsbG8=\\r\\nd29ybGQ=\\r\\n")  # segment by segment: the whole text
    (b'helloworld', True)

    A ``-`` or ``_`` (base64url's ``+`` and ``/``) is junk to Python and most clients,
    which skip it, but data to decoders that take both alphabets (Node's
    ``Buffer.from(text, "base64")``), and so is a byte over 0x7F to ``mailparser``'s
    stream decoder, which reads the text as Node's ``"ascii"`` (the high bit cleared:
    ``0xc1`` is ``A``): two readings as well, the first returned.

    >>> import base64
    >>> decode_base64(b"PGI-aGk8L2I-\\r\\n")[1], base64.urlsafe_b64decode(b"PGI-aGk8L2I-")
    (True, b'<b>hi</b>')
    """
    # memchr each, and one pass in C
    other_alphabet = b"-" in data or b"_" in data or not data.isascii()
    padding = data.find(b"=")
    if padding >= 0 and data[padding:].translate(None, _NOT_B64):
        return _by_segments(data), True
    try:
        return binascii.a2b_base64(data), other_alphabet
    except binascii.Error:
        pass
    try:  # as email tries last: every padding a body could need (extra is ignored)
        binascii.a2b_base64(data + b"==")
        raw = other_alphabet
    except binascii.Error:
        raw = True
    clean = data.translate(None, _NOT_B64)
    clean = clean[: len(clean) - (len(clean) % 4 == 1)]
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4)), raw


def _by_segments(data: bytes) -> bytes:
    """Base64 with padding inside, decoded segment by segment (each run of the alphabet
    with the padding after it, as an encoder that pads every chunk writes it): the whole
    text, of which Python's reading is the first segment.  Such a part is written back
    canonically (:func:`shown_raw`), so every client reads the one decoding.

    >>> _by_segments(b"aGVsbG8=\\r\\nIHdvcmxk\\r\\n")
    b'hello world'
    """
    pieces = []
    for run in _SEGMENT.findall(data.translate(None, _NOT_B64_OR_PAD)):
        run = run.rstrip(b"=")
        run = run[: len(run) - (len(run) % 4 == 1)]
        pieces.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return b"".join(pieces)


def shown_raw(body: bytes, cte: str) -> bool:
    """Whether clients read this base64 body in two ways, some of them undecoded or
    decoded past a padding (see :func:`decode_base64`).

    >>> shown_raw(b"aGVsbG8=\\r\\n", "base64"), shown_raw(b"<p>hi</p>\\r\\n", "base64")
    (False, True)
    """
    return normalise_cte(cte) == "base64" and decode_base64(body)[1]


def padded_soft_breaks(body: bytes) -> bool:
    """Whether quoted-printable ``body`` has a soft line break with blanks after its
    ``=``: decoders that delete a line's trailing blanks first, as RFC 2045 section 6.7
    says to (Dovecot, PHP's ``quoted_printable_decode`` behind Roundcube), join the two
    lines; Python's and Thunderbird's keep ``= `` and the line break.  So
    ``<img s= \\r\\nrc=...>`` has a ``src`` for some readers only: one of the
    shapes of :func:`qp_two_readings`, and the one the fallback reads as the RFC does
    (:func:`strip_padded_breaks`).

    >>> padded_soft_breaks(b"<img s= \\r\\nrc=x>"), padded_soft_breaks(b"a=\\r\\nb =3D c")
    (True, False)
    """
    return _PADDED_BREAK.search(body) is not None


def qp_two_readings(body: bytes) -> bool:
    """Whether quoted-printable decoders read ``body`` in more than one way, so that
    markup one of them sees may be text to another:

    * ``==``: Python's ``a2b_qp`` takes it for one ``=`` and goes on after both
      (``==3Cimg`` is the text ``=3Cimg``), PHP's ``quoted_printable_decode``
      (Roundcube) and nodemailer's ``libqp`` keep the first ``=`` and read on from the
      second (``=<img``; ``==`` + line break + ``3C`` is ``=<`` to ``libqp``);
    * blanks between a soft break's ``=`` and the line end (:func:`padded_soft_breaks`);
    * ``=`` (and blanks) then a CR that is no CRLF: PHP ends the soft break there and
      reads on, Python skips everything up to the next LF;
    * an escape cut by a soft break, ``=3=`` + line break + ``C``: ``libqp`` deletes
      soft breaks before it decodes escapes (``<``), the others keep ``=3C`` as text;
    * a byte over 0x7F, which no encoder writes: ``libqp``'s stream decoder (behind
      ``mailparser``) reads the body as Node's ``"ascii"``, which clears the high bit
      (``\\xbcimg`` is ``<img``).

    An ``=`` before anything else (``a=b`` in a URL a sloppy mailer left unencoded) is
    kept as text by all of them: one reading.  Otherwise they differ only in blanks at
    a line's end, at a NUL (PHP stops: :func:`~beacon_proxy.rewrite.charsets.reading`
    holds such text) and in an ``=`` at the very end (``tests/rewrite/test_transfer.py``
    holds the three to that).  A body with two goes to the fallback,
    which writes it back canonically, so that every decoder reads the one text it
    neutralised (:mod:`~beacon_proxy.rewrite.fallback`).

    >>> [qp_two_readings(b) for b in (b"a=3Db=\\r\\nc", b"x?a=1&b=2", b"==3Cimg",
    ...                               b"=3=\\r\\nCimg", b"s= \\r\\nrc", b"=\\rx\\n", b"\\xbci")]
    [False, False, True, True, True, True, True]
    """
    if not body.isascii():
        return True
    first = _QP_TWO_WAYS_FIRST.search(body)
    return first is not None and _QP_TWO_WAYS.search(body, first.start()) is not None


def strip_padded_breaks(body: bytes) -> bytes:
    """``body`` with the blanks after each soft line break's ``=`` deleted: the RFC 2045
    reading of :func:`padded_soft_breaks`, which every decoder then shares.

    >>> binascii.a2b_qp(strip_padded_breaks(b"<img s= \\t\\r\\nrc=x>"))
    b'<img src=x>'
    """
    return _PADDED_BREAK.sub(lambda m: m.group()[:1] + m.group()[-2:].lstrip(b" \t"), body)


def decode(body: bytes, cte: str) -> bytes:
    """Transfer-decode a body (leniently, as mail clients do).

    Raises :class:`TransferError` for an encoding not in :data:`ENCODINGS`.

    >>> decode(b"aGVsbG8=\\r\\n", "base64")
    b'hello'
    """
    name = normalise_cte(cte)
    if name == "quoted-printable":
        return binascii.a2b_qp(body)
    if name == "base64":
        return _b64decode(body)
    if name in ENCODINGS:
        return body
    raise TransferError(f"unknown transfer encoding {cte!r}")


def decode_indexed(body: bytes, cte: str) -> tuple[bytes, QpIndex]:
    """:func:`decode`, and for quoted-printable where its lines start, about every 4 KB.

    The same bytes as :func:`decode` (a2b_qp may be split after any LF).  Passed to
    :func:`apply_edits` as ``qp_index``, it spares decoding the body up to each edit
    again for every copy.

    >>> decode_indexed(b"caf=C3=A9\\r\\n", "quoted-printable")
    (b'caf\\xc3\\xa9\\r\\n', ((0, 0),))
    """
    if normalise_cte(cte) != "quoted-printable":
        return decode(body, cte), ()
    pieces: list[bytes] = []
    index = [(0, 0)]
    enc = dec = 0
    size = len(body)
    whole = memoryview(body)  # blocks without a copy each
    while True:
        stop = body.find(b"\n", enc + _QP_BLOCK) + 1 or size
        piece = binascii.a2b_qp(whole[enc:stop])
        pieces.append(piece)
        enc, dec = stop, dec + len(piece)
        if enc >= size:
            return b"".join(pieces), tuple(index)
        index.append((enc, dec))


def apply_edits(
    body: bytes, cte: str, edits: Sequence[Edit], *, decoded: bytes | None = None,
    qp_index: QpIndex = (), written: list[tuple[int, int]] | None = None,
) -> bytes:
    """Apply edits (sorted, non-overlapping, in decoded offsets) and re-encode the body.

    ``decoded`` may pass ``decode(body, cte)`` when the caller already has it (it
    saves a base64 decode), ``qp_index`` the index from :func:`decode_indexed` (it
    saves decoding a quoted-printable body up to each edit).  7bit/8bit: a plain
    splice, but a line that would grow past 998 octets raises
    :class:`LineTooLongError` rather than being wrapped
    (wrapping would change bytes outside the edits).  Raises :class:`ValueError`
    for edits out of order or out of range, :class:`TransferError` for an unknown
    encoding.

    ``written``, when given (quoted-printable, 7bit, 8bit, binary), gets the
    ``(start, stop)`` of every stretch of the result that was written anew, in
    order; every byte outside them is a byte of ``body``, in order (a granted copy's
    footer is derived from another copy's through them:
    :func:`~beacon_proxy.rewrite.footerplan.plan_footer`).  Quoted-printable: the
    re-encoded lines, each starting after an LF (or at 0) and ending after one (or
    at the end); 7bit/8bit: the replacements.  Base64 re-encodes up to the end and
    reports nothing (:class:`ValueError` when asked).
    """
    name = normalise_cte(cte)
    if name not in ENCODINGS:
        raise TransferError(f"unknown transfer encoding {cte!r}")
    _check_order(edits)
    if written is not None and name == "base64":
        raise ValueError("base64 bodies do not report what was written")
    if not edits:
        return body
    if name == "quoted-printable":
        return _qp_apply(body, edits, qp_index, written)
    if name == "base64":
        return _b64_apply(body, edits, decoded)
    if edits[-1].end > len(body):
        raise ValueError("edit beyond the end of the body")
    out = splice(body, edits, 0)
    if name != "binary":
        _check_line_lengths(body, out, edits)
    if written is not None:
        shift = 0
        for edit in edits:
            start = edit.start + shift
            written.append((start, start + len(edit.replacement)))
            shift += len(edit.replacement) - (edit.end - edit.start)
    return out


def _check_order(edits: Sequence[Edit]) -> None:
    previous = 0
    for edit in edits:
        if edit.start < previous or edit.end < edit.start:
            raise ValueError("edits must be sorted, non-overlapping and within the body")
        previous = edit.end


def splice(data: bytes, edits: Sequence[Edit], base: int = 0) -> bytes:
    """``data`` (which starts at decoded offset ``base``) with sorted edits applied.

    >>> splice(b"<p><img></p>", [Edit(3, 8, b"")])
    b'<p></p>'
    """
    pieces: list[bytes] = []
    pos = 0
    for edit in edits:
        pieces += (data[pos : edit.start - base], edit.replacement)
        pos = edit.end - base
    pieces.append(data[pos:])
    return b"".join(pieces)


# --- 7bit / 8bit ------------------------------------------------------------------------------

def _longest_line(data: bytes, start: int, end: int) -> int:
    """Length (without CR LF) of the longest line meeting data[start:end], capped near 1000."""
    window = _LINE_LIMIT + 3
    left = data.rfind(b"\n", max(0, start - window), start) + 1
    if left == 0 and start > window:
        return _LINE_LIMIT + 1
    right = data.find(b"\n", end, end + window)
    if right < 0:
        right = len(data) if len(data) - end <= window else -1
    if right < 0:
        return _LINE_LIMIT + 1
    longest = max(len(line.removesuffix(b"\r")) for line in data[left:right].split(b"\n"))
    return min(longest, _LINE_LIMIT + 1)


def _check_line_lengths(body: bytes, out: bytes, edits: Sequence[Edit]) -> None:
    shift = 0
    for edit in edits:
        start = edit.start + shift
        end = start + len(edit.replacement)
        shift += len(edit.replacement) - (edit.end - edit.start)
        new = _longest_line(out, start, end)
        if new > _LINE_LIMIT and new > _longest_line(body, edit.start, edit.end):
            raise LineTooLongError("an edit would make a line longer than 998 octets")


# --- quoted-printable -------------------------------------------------------------------------

def line_ending(data: bytes) -> bytes:
    """The line ending ``data`` uses (its first one), CRLF when it has none.

    >>> line_ending(b"a\\nb\\r\\n"), line_ending(b"a")
    (b'\\n', b'\\r\\n')
    """
    nl = data.find(b"\n")
    return b"\n" if nl == 0 or (nl > 0 and data[nl - 1] != 0x0D) else b"\r\n"


_eol = line_ending


def _has_long_line(data: bytes) -> bool:
    """Whether a line (without its line ending) is longer than 998 octets; linear, in C."""
    if len(data) <= _LINE_LIMIT:
        return False
    return any(len(line) > _LINE_LIMIT + 1 for line in data.split(b"\n"))


def encode_whole(decoded: bytes, cte: str, eol: bytes = b"\r\n") -> tuple[bytes, str]:
    """Encode a whole body in ``cte``; returns the body and the encoding used.

    A 7bit or 8bit body with a line over 998 octets cannot be sent as it is: it is
    encoded as quoted-printable instead (the caller changes the header).  Unknown
    encodings are written as 8bit.

    >>> encode_whole(b"<p>" + b"x" * 1000 + b"</p>", "7bit")[1]
    'quoted-printable'
    >>> encode_whole(b"hello", "base64")
    (b'aGVsbG8=', 'base64')
    """
    name = normalise_cte(cte)
    if name == "base64":
        return _b64_encode(decoded, 76, eol), name
    if name == "binary":
        return decoded, name
    if name != "quoted-printable":
        if not _has_long_line(decoded):
            return decoded, name if name in ENCODINGS else "8bit"
        name = "quoted-printable"
    return _qp_encode(decoded, eol, False), name


def _qp_seek(body: bytes, enc: int, dec: int, target: int,
             index: QpIndex = ()) -> tuple[int, int, int]:
    """From a line start (enc, dec), the encoded line [start, stop) holding decoded ``target``.

    Returns (start, stop, decoded offset of start).  a2b_qp may be split after any LF,
    so lines and blocks decode on their own.  The walk starts at the last indexed line
    start before ``target`` (if further on) and takes blocks of whole lines that end
    before it: encoded text is never shorter than its decoding, so a block of 7/8 of
    the decoded distance almost always does, and the distance shrinks geometrically
    to a few single lines.  A block that overshoots is halved.
    """
    size = len(body)
    if index:
        at = bisect_right(index, target, key=_decoded_offset) - 1
        if at >= 0 and index[at][0] > enc:
            enc, dec = index[at]
    cap = size
    while True:
        gap = target - dec
        step = min(gap - (gap >> 3) - 80, cap) if gap > 400 else 0
        stop = body.find(b"\n", enc + step) + 1 or size
        length = len(binascii.a2b_qp(body[enc:stop]))
        if dec + length <= target and stop < size:
            enc, dec = stop, dec + length  # the whole block ends before target
        elif step:
            cap = step // 2  # overshot: try a smaller block from the same line
        else:  # one line: it holds target, or it is the last one
            if dec + length < target:
                raise ValueError("edit beyond the end of the body")
            return enc, stop, dec


def _soft_end(encoded: bytes, eol: bytes) -> bytes:
    """Encoded text followed by a soft line break; a full last line is split to make room."""
    if not encoded:
        return b""
    begin = encoded.rfind(b"\n") + 1
    if len(encoded) - begin > 75:  # cut at 75, never inside an =XX
        cut = begin + 75
        cut -= 1 if encoded[cut - 1] == 0x3D else 2 if encoded[cut - 2] == 0x3D else 0
        encoded = encoded[:cut] + b"=" + eol + encoded[cut:]
    return encoded + b"=" + eol


def _qp_line(content: bytes, eol: bytes) -> bytes:
    """One hard line as valid QP lines of at most 76 characters.

    b2a_qp(istext=False) encodes CR and LF, but lets the character before an LF
    overrun the line (it expects a line break there): bare LFs are cut out first.
    """
    pieces = [binascii.b2a_qp(piece, quotetabs=False, istext=False, header=False)
              for piece in content.split(b"\n")]
    if eol != b"\n":
        pieces = [piece.replace(b"\n", eol) for piece in pieces]  # only soft breaks
    if len(pieces) == 1:
        return pieces[0]
    return (b"=0A=" + eol).join([_soft_end(piece, eol) for piece in pieces[:-1]] + pieces[-1:])


def _qp_encode(decoded: bytes, eol: bytes, continues: bool) -> bytes:
    """Encode decoded text; end with a soft break when the next encoded line continues it."""
    pieces = decoded.split(eol)
    last = pieces.pop()
    out = [_qp_line(piece, eol) + eol for piece in pieces]
    if last:
        tail = _qp_line(last, eol)
        out.append(_soft_end(tail, eol) if continues else tail)
    return b"".join(out)


def _decoded_offset(entry: tuple[int, int]) -> int:
    return entry[1]


def _qp_segment(body: bytes, edits: Sequence[Edit], i: int, enc: int, dec: int,
                index: QpIndex) -> tuple[int, int, int, int, int]:
    """The encoded lines [start, stop) re-encoded for edits ``i`` to ``j - 1``: from the
    line holding edit ``i`` on, grown over every edit that starts inside them.

    Returns (start, stop, decoded offset of start, of stop, j); ``(enc, dec)`` is a line
    start at or before edit ``i``.
    """
    start, stop, start_dec = _qp_seek(body, enc, dec, edits[i].start, index)
    stop_dec = start_dec + len(binascii.a2b_qp(body[start:stop]))
    j, need = i, 0
    while j < len(edits):  # grow the segment over every edit that starts inside it
        if j > i and edits[j].start >= stop_dec and stop < len(body):
            break
        need = max(need, edits[j].start, edits[j].end - 1)
        if need >= stop_dec and stop < len(body):
            line, stop, line_dec = _qp_seek(body, stop, stop_dec, need, index)
            stop_dec = line_dec + len(binascii.a2b_qp(body[line:stop]))
        j += 1
    if edits[j - 1].end > stop_dec:
        raise ValueError("edit beyond the end of the body")
    return start, stop, start_dec, stop_dec, j


def _qp_apply(body: bytes, edits: Sequence[Edit], index: QpIndex = (),
              written: list[tuple[int, int]] | None = None) -> bytes:
    eol = _eol(body)
    out: list[bytes | memoryview] = []
    whole = memoryview(body)  # the unchanged stretches are joined without a copy each
    copied = enc = dec = 0
    i = 0
    size = 0  # of the result so far (for ``written``)
    while i < len(edits):
        start, stop, start_dec, stop_dec, j = _qp_segment(body, edits, i, enc, dec, index)
        segment = binascii.a2b_qp(body[start:stop])
        new = splice(segment, edits[i:j], start_dec)
        encoded = _qp_encode(new, eol, stop < len(body))
        out += (whole[copied:start], encoded)
        if written is not None:
            size += start - copied
            written.append((size, size + len(encoded)))
            size += len(encoded)
        copied, enc, dec, i = stop, stop, stop_dec, j
    out.append(whole[copied:])
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class QpSlotted:
    """A quoted-printable body with one insertion made of constant pieces around a slot
    (the same variable bytes at each), all of it encoded but the lines the slot is on.

    Why: a footer goes into every copy of a newsletter with only the recipient's link
    changing; :func:`apply_edits` decoded the edited line, spliced and encoded the
    footer's lines for each copy.  :meth:`fill` gives exactly
    ``apply_edits(body, "quoted-printable", [Edit(at, at, slot.join(pieces))], ...)``
    (:func:`qp_slotted` made with ``at`` and ``pieces``) for any ``slot`` without CR
    or LF, because :func:`_qp_encode` encodes each hard line (split at the body's line
    ending, made only of CR and LF) on its own: a slot without CR or LF neither adds,
    removes nor joins a line break, so the lines without it are the same bytes for
    every slot, and each line with it is encoded from its constant fragments joined by
    the slot, as one line, exactly as :func:`_qp_encode` does.
    """

    body: bytes
    start: int  # the encoded lines [start, stop) are replaced by ``lines``
    stop: int
    eol: bytes
    #: encoded constant lines (bytes) and lines holding the slot: their decoded
    #: fragments and whether the line is the last one of a segment the next line continues
    lines: tuple[bytes | tuple[tuple[bytes, ...], bool], ...]
    last: int  # index in ``lines`` of the segment's last line (no line ending after it)

    def fill(self, slot: bytes) -> bytes:
        """The body with ``slot`` (not empty, no CR, no LF: ``ValueError``) in every slot."""
        if not slot or b"\r" in slot or b"\n" in slot:
            raise ValueError("a slot must not be empty or hold a line break")
        body, eol = self.body, self.eol
        out: list[bytes | memoryview] = [memoryview(body)[: self.start]]
        for n, line in enumerate(self.lines):
            if isinstance(line, bytes):
                out.append(line)
                continue
            fragments, continues = line
            encoded = _qp_line(slot.join(fragments), eol)
            if n != self.last:
                out += (encoded, eol)
            else:
                out.append(_soft_end(encoded, eol) if continues else encoded)
        out.append(memoryview(body)[self.stop :])
        return b"".join(out)


def qp_slotted(body: bytes, at: int, pieces: Sequence[bytes],
               index: QpIndex = ()) -> QpSlotted:
    """Prepare the insertion of ``slot.join(pieces)`` at decoded offset ``at`` of a
    quoted-printable body (see :class:`QpSlotted`); raises as :func:`apply_edits` would.

    >>> body = b"Hello=\\r\\n world\\r\\nBye\\r\\n"
    >>> slotted = qp_slotted(body, 11, [b"<a href=", b">x</a>\\r\\n"])
    >>> edit = Edit(11, 11, b"<a href=u>x</a>\\r\\n")
    >>> slotted.fill(b"u") == apply_edits(body, "quoted-printable", [edit])
    True
    """
    if not pieces:
        raise ValueError("an insertion needs at least one piece")
    edit = [Edit(at, at, b"")]
    start, stop, start_dec, _, _ = _qp_segment(body, edit, 0, 0, 0, index)
    segment = binascii.a2b_qp(body[start:stop])
    eol = _eol(body)
    chunks = list(pieces)
    chunks[0] = segment[: at - start_dec] + chunks[0]
    chunks[-1] += segment[at - start_dec :]
    lines: list[list[bytes]] = [[b""]]  # the decoded lines, each as its slot's fragments
    for n, chunk in enumerate(chunks):
        first, *rest = chunk.split(eol)
        if n:
            lines[-1].append(first)  # a slot between the previous fragment and this one
        else:
            lines[-1][-1] += first
        lines += ([line] for line in rest)
    if lines[-1] != [b""]:
        last = len(lines) - 1
    else:  # the segment ends with a line break: _qp_encode adds nothing after it
        lines.pop()
        last = -1
    continues = stop < len(body)
    encoded: list[bytes | tuple[tuple[bytes, ...], bool]] = []
    for n, fragments in enumerate(lines):
        if len(fragments) > 1:
            encoded.append((tuple(fragments), continues))
            continue
        line = _qp_line(fragments[0], eol)
        if n != last:
            encoded.append(line + eol)
        else:
            encoded.append(_soft_end(line, eol) if continues else line)
    return QpSlotted(body, start, stop, eol, tuple(encoded), last)


# --- base64 -----------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _line_struct(length: int) -> struct.Struct:
    return struct.Struct(f"{length}s")


_FIRST: Final = itemgetter(0)


def _b64_encode(data: bytes, length: int, eol: bytes) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    full = len(encoded) - len(encoded) % length
    lines = list(map(_FIRST, _line_struct(length).iter_unpack(memoryview(encoded)[:full])))
    if full < len(encoded):
        lines.append(encoded[full:])
    return eol.join(lines)


def _b64_regular(content: bytes, lines: int, length: int, eol: bytes) -> bool:
    """Whether the first ``lines`` lines are exactly ``length`` base64 characters + eol."""
    stride = length + len(eol)
    head = content[: lines * stride]
    return (
        len(head) == lines * stride
        and head.translate(None, _B64_ALPHABET) == eol * lines
        and head[length::stride] == eol[:1] * lines
    )


def _b64_apply(body: bytes, edits: Sequence[Edit], decoded: bytes | None) -> bytes:
    content = body.rstrip(b" \t\r\n")
    tail = body[len(content) :]
    nl = content.find(b"\n")
    if nl < 0:
        eol, length = (b"\n" if tail.startswith(b"\n") else b"\r\n"), 76
    else:
        eol = b"\r\n" if content[nl - 1 : nl] == b"\r" else b"\n"
        length = nl + 1 - len(eol)
    regular = 4 <= length <= 76 and length % 4 == 0
    if not regular:
        length = 76
    per, stride = length // 4 * 3, length + len(eol)
    keep = edits[0].start // per if regular and nl >= 0 else 0
    last = max(edits[-1].end - 1, edits[-1].start) // per
    delta = sum(len(e.replacement) - (e.end - e.start) for e in edits)
    if (regular and nl >= 0 and delta % 3 == 0 and (last + 1) * stride < len(content)
            and _b64_regular(content, last + 1, length, eol)):
        # The groups after the last edit keep their alignment: re-encode only the edited lines.
        region = (decoded[keep * per : (last + 1) * per] if decoded is not None
                  else binascii.a2b_base64(content[keep * stride : (last + 1) * stride]))
        new = splice(region, edits, keep * per)
        middle = _b64_encode(new, length, eol) + eol if new else b""
        return content[: keep * stride] + middle + content[(last + 1) * stride :] + tail
    if keep and not _b64_regular(content, keep, length, eol):
        keep = 0
    rest = decoded[keep * per :] if decoded is not None else _b64decode(content[keep * stride :])
    if edits[-1].end - keep * per > len(rest):
        raise ValueError("edit beyond the end of the body")
    new = splice(rest, edits, keep * per)
    return content[: keep * stride] + _b64_encode(new, length, eol) + tail
