"""Charsets for a byte-level HTML scanner: labels, scan views, text in and out.

The scanner works on the transfer-decoded bytes of a part, whatever their
charset, and keeps byte offsets into them.  :func:`scan_view` gives it a
same-length copy in which a byte below 0x80 is always a real ASCII character;
every byte that belongs to a multi-byte character is 0x80 or above (for
Shift_JIS, GBK, Big5 and EUC-KR, trail bytes in the ASCII range get their top
bit set; ISO-2022 escape sequences and the text they switch to become 0x80).

>>> view = scan_view("<b>表</b>".encode("shift_jis"), "Shift_JIS")
>>> view
b'<b>\\x95\\xdc</b>'
>>> "<b>表</b>".encode("shift_jis")[4:5]        # the trail byte is a backslash
b'\\\\'
>>> normalise_charset("x-sjis"), normalise_charset(None), normalise_charset("klingon")
('shift_jis', 'us-ascii', 'x-unknown')

A part whose charset is not supported (UTF-16/32, UTF-7, unknown labels) must
not be modified; :func:`looks_valid` tells whether the bytes agree with the
label ("lying charsets"), so the caller may leave such a part alone too.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache
from operator import methodcaller
from typing import Final, Literal

__all__ = [
    "UNKNOWN_CHARSET",
    "decode_text",
    "encode_text",
    "is_supported",
    "looks_valid",
    "normalise_charset",
    "scan_view",
]

UNKNOWN_CHARSET: Final = "x-unknown"
"""What :func:`normalise_charset` returns for a label it does not know."""

_Kind = Literal[
    "ascii", "utf8", "single", "euc", "sjis", "gbk", "big5", "uhc", "2022jp", "2022kr", "none"
]


@dataclass(frozen=True, slots=True)
class _Charset:
    name: str  # canonical (MIME / WHATWG) name
    decoder: str  # Python codec used to decode (a superset, as browsers do)
    encoder: str  # Python codec used to encode insertions
    kind: _Kind


def _table() -> dict[str, _Charset]:
    rows = [
        _Charset("us-ascii", "utf-8", "ascii", "ascii"),
        _Charset("utf-8", "utf-8", "utf-8", "utf8"),
        *(_Charset(f"iso-8859-{i}", f"iso8859-{i}", f"iso8859-{i}", "single")
          for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(_Charset(f"windows-{i}", f"cp{i}", f"cp{i}", "single") for i in range(1250, 1259)),
        _Charset("windows-874", "cp874", "cp874", "single"),
        _Charset("koi8-r", "koi8-r", "koi8-r", "single"),
        _Charset("koi8-u", "koi8-u", "koi8-u", "single"),
        _Charset("ibm866", "cp866", "cp866", "single"),
        _Charset("macintosh", "mac-roman", "mac-roman", "single"),
        _Charset("euc-jp", "euc_jp", "euc_jp", "euc"),
        _Charset("shift_jis", "cp932", "cp932", "sjis"),
        _Charset("gbk", "gb18030", "gbk", "gbk"),
        _Charset("gb18030", "gb18030", "gb18030", "gbk"),
        _Charset("big5", "big5hkscs", "big5hkscs", "big5"),
        _Charset("euc-kr", "cp949", "cp949", "uhc"),
        _Charset("iso-2022-jp", "iso2022_jp_2", "iso2022_jp", "2022jp"),
        _Charset("iso-2022-kr", "iso2022_kr", "iso2022_kr", "2022kr"),
        *(_Charset(n, n, n, "none") for n in ("utf-16", "utf-16le", "utf-16be", "utf-32",
                                             "utf-32le", "utf-32be", "utf-7")),
        _Charset("hz-gb-2312", "hz", "hz", "none"),
        _Charset(UNKNOWN_CHARSET, "utf-8", "utf-8", "none"),
    ]
    return {row.name: row for row in rows}


_CHARSETS: Final = _table()

# Labels seen in mail that Python's codec registry does not know or maps elsewhere.
_LABELS: Final = {
    "utf8": "utf-8", "unicode-1-1-utf-8": "utf-8", "ascii": "us-ascii", "us": "us-ascii",
    "latin1": "iso-8859-1", "latin-1": "iso-8859-1", "l1": "iso-8859-1",
    "x-sjis": "shift_jis", "shift-jis": "shift_jis", "sjis": "shift_jis", "ms_kanji": "shift_jis",
    "csshiftjis": "shift_jis", "windows-31j": "shift_jis", "cp932": "shift_jis",
    "ms932": "shift_jis", "x-ms-cp932": "shift_jis", "x-euc-jp": "euc-jp",
    "cseucpkdfmtjapanese": "euc-jp", "csiso2022jp": "iso-2022-jp", "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp", "gb2312": "gbk", "x-gbk": "gbk", "cp936": "gbk",
    "chinese": "gbk", "csgb2312": "gbk", "euc-cn": "gbk", "gb_2312-80": "gbk",
    "big5-hkscs": "big5", "cn-big5": "big5", "csbig5": "big5", "x-x-big5": "big5", "cp950": "big5",
    "ks_c_5601-1987": "euc-kr", "ks_c_5601-1989": "euc-kr", "ksc5601": "euc-kr",
    "ksc_5601": "euc-kr", "korean": "euc-kr", "cseuckr": "euc-kr", "windows-949": "euc-kr",
    "cp949": "euc-kr", "uhc": "euc-kr", "csiso2022kr": "iso-2022-kr",
    "cp-1252": "windows-1252", "x-cp1252": "windows-1252", "tis-620": "windows-874",
    "iso-8859-11": "windows-874", "dos-874": "windows-874", "iso-8859-8-i": "iso-8859-8",
    "mac": "macintosh", "x-mac-roman": "macintosh", "cp866": "ibm866", "866": "ibm866",
    "koi8": "koi8-r", "koi8-ru": "koi8-u", "unicode-1-1-utf-7": "utf-7", "unicode": "utf-16",
}
# Python codec names (codecs.lookup(label).name) that map to one of ours.
_CODEC_NAMES: Final = {
    **{row.decoder: row.name for row in _CHARSETS.values() if row.kind in ("single", "none")},
    "ascii": "us-ascii", "utf-8": "utf-8", "shift_jis": "shift_jis", "cp932": "shift_jis",
    "euc_jp": "euc-jp", "gb2312": "gbk", "gbk": "gbk", "gb18030": "gb18030", "big5": "big5",
    "big5hkscs": "big5", "cp950": "big5", "euc_kr": "euc-kr", "cp949": "euc-kr",
    "iso2022_jp": "iso-2022-jp", "iso2022_jp_1": "iso-2022-jp", "iso2022_jp_2": "iso-2022-jp",
    "iso2022_jp_ext": "iso-2022-jp", "iso2022_kr": "iso-2022-kr", "tis-620": "windows-874",
}


@lru_cache(maxsize=256)
def normalise_charset(name: str | None) -> str:
    """The canonical lower-case name of a charset label; ``us-ascii`` when absent.

    >>> normalise_charset('"UTF8"'), normalise_charset("cp-1252"), normalise_charset("latin1")
    ('utf-8', 'windows-1252', 'iso-8859-1')
    >>> normalise_charset("rot13")      # a Python codec, but not a charset
    'x-unknown'
    """
    if name is None:
        return "us-ascii"
    label = name.strip().strip("\"'").strip().lower()
    if not label:
        return "us-ascii"
    if label in _CHARSETS and label != UNKNOWN_CHARSET:
        return label
    if label in _LABELS:
        return _LABELS[label]
    if len(label) > 40 or not label.isascii():
        return UNKNOWN_CHARSET
    try:
        codec = codecs.lookup(label).name
    except (LookupError, ValueError, TypeError):
        return UNKNOWN_CHARSET
    return _CODEC_NAMES.get(codec, UNKNOWN_CHARSET)


def _info(charset: str) -> _Charset:
    return _CHARSETS.get(charset) or _CHARSETS[normalise_charset(charset)]


def is_supported(charset: str) -> bool:
    """Whether a part in this charset can be scanned and modified.

    >>> is_supported("ISO-2022-JP"), is_supported("utf-16"), is_supported("x-unknown")
    (True, False, False)
    """
    return _info(charset).kind != "none"


# --- scan views -------------------------------------------------------------------------------

def _bytemap(ranges: tuple[tuple[int, int], ...], value: int) -> bytes:
    return bytes(value if any(lo <= b <= hi for lo, hi in ranges) else 0 for b in range(256))


# Per double-byte family: (lead byte map -> 0xFF, ASCII-range trail byte map -> 0x01).
_PAIRS: Final = {
    "sjis": (_bytemap(((0x81, 0x9F), (0xE0, 0xFC)), 0xFF), _bytemap(((0x40, 0x7E),), 1)),
    "gbk": (_bytemap(((0x81, 0xFE),), 0xFF), _bytemap(((0x30, 0x39), (0x40, 0x7E)), 1)),
    "big5": (_bytemap(((0x81, 0xFE),), 0xFF), _bytemap(((0x40, 0x7E),), 1)),
    "uhc": (_bytemap(((0x81, 0xFE),), 0xFF), _bytemap(((0x41, 0x5A), (0x61, 0x7A)), 1)),
}
_CHUNK: Final = 16384
_EVEN_SIZE: Final = 65536
_EVEN: Final = int.from_bytes(b"\x01\x00" * (_EVEN_SIZE // 2), "little")  # 0x01 in even bytes
_ODD: Final = _EVEN << 8


def _parity_masks(n: int) -> tuple[int, int]:
    if n <= _EVEN_SIZE:
        return _EVEN, _ODD
    even = int.from_bytes(b"\x01\x00" * (n // 2 + 1), "little")
    return even, even << 8


def _mask_chunk(data: bytes, lead: bytes, trail: bytes) -> bytes:
    """Set the top bit of every ASCII-range trail byte, all in C via big-integer arithmetic.

    A byte right after a maximal run of lead-range bytes of odd length is a trail byte
    (a byte outside the lead range always ends a character).  Adding one at each run's
    start carries through the run (lead bytes are 0xFF) and lands on the byte after it;
    comparing the parity of both ends finds the odd runs (simdjson's backslash trick).
    """
    runs = int.from_bytes(data.translate(lead), "little")
    if not runs:
        return data
    trails = int.from_bytes(data.translate(trail), "little")
    if not trails & (runs << 8):
        return data
    even, odd = _parity_masks(len(data))
    starts = runs ^ (runs & (runs << 8))
    after_even_start = runs + (starts & even)
    after_odd_start = runs + (starts & odd)
    hits = ((after_even_start & odd) | (after_odd_start & even)) & trails
    if not hits:
        return data
    return (int.from_bytes(data, "little") | (hits << 7)).to_bytes(len(data), "little")


def _pairs_view(data: bytes, kind: _Kind) -> bytes:
    lead, trail = _PAIRS[kind]
    if len(data) <= _CHUNK:
        return _mask_chunk(data, lead, trail)
    # Cut at '<' (never a lead or trail byte): the chunks are independent and stay cache-sized.
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        cut = data.find(b"<", pos + _CHUNK)
        cut = len(data) if cut < 0 else cut
        out.append(_mask_chunk(data[pos:cut], lead, trail))
        pos = cut
    return b"".join(out)


_MASK: Final = 0x80
_ESCAPE: Final = re.compile(rb"\x1b[\x20-\x2f]{0,3}[\x30-\x7e]?")
_JP_ASCII: Final = frozenset({b"\x1b(B", b"\x1b(J"})
_JP_OTHER: Final = frozenset({b"\x1b$@", b"\x1b$A", b"\x1b$B", b"\x1b$(C", b"\x1b$(D", b"\x1b(I",
                              b"\x1b$(O", b"\x1b$(P", b"\x1b$(Q"})
_JP_G2: Final = frozenset({b"\x1b.A", b"\x1b.F"})
_JP_SHIFT: Final = frozenset({b"\x1bN", b"\x1bO"})
_STARTS_JIS: Final = methodcaller("startswith", (b"$B", b"$@"))
_STARTS_ASCII: Final = methodcaller("startswith", (b"(B", b"(J"))
_ALL_MASKED: Final = methodcaller("translate", bytes([_MASK]) * 256)
_KR_RUN: Final = re.compile(rb"\x1b[\x20-\x2f]{0,3}[\x30-\x7e]?|\x0e[^\x0f\n]*\x0f?")


def _iso2022jp_view(data: bytes) -> bytes:
    """Mask escape sequences and everything written in a non-ASCII G0 set."""
    if b"\x1b" not in data:
        return data
    parts = data.split(b"\x1b")
    shifted, back = parts[1::2], parts[2::2]
    if all(map(_STARTS_JIS, shifted)) and all(map(_STARTS_ASCII, back)):
        # The usual shape, ESC $ B ... ESC ( B ..., done without a Python loop.
        parts[1::2] = map(_ALL_MASKED, shifted)
        view = b"\x1b".join(parts)
        for seq in _JP_ASCII:
            view = view.replace(seq, bytes([_MASK]) * len(seq))
        return view.replace(b"\x1b", bytes([_MASK]))
    return _iso2022jp_view_any(data)


def _iso2022jp_view_any(data: bytes) -> bytes:
    """The general case: single shifts, G2 designations, unknown escapes."""
    out = bytearray(data)
    ascii_mode, run_start = True, 0
    esc = data.find(b"\x1b")
    while esc >= 0:
        match = _ESCAPE.match(data, esc)
        end = match.end() if match else esc + 1
        seq = data[esc:end]
        if not ascii_mode:
            out[run_start:esc] = bytes([_MASK]) * (esc - run_start)
        if seq in _JP_SHIFT:
            end = min(end + 1, len(data))  # a single-shifted character follows
        out[esc:end] = bytes([_MASK]) * (end - esc)
        if seq in _JP_ASCII:
            ascii_mode = True
        elif seq not in _JP_G2 and seq not in _JP_SHIFT:
            ascii_mode = False  # a known double-byte set, or unknown: hide what follows
        run_start = end
        esc = data.find(b"\x1b", end)
    if not ascii_mode:
        out[run_start:] = bytes([_MASK]) * (len(data) - run_start)
    return bytes(out)


def _iso2022kr_view(data: bytes) -> bytes:
    if b"\x1b" not in data and b"\x0e" not in data:
        return data
    return _KR_RUN.sub(lambda m: bytes([_MASK]) * (m.end() - m.start()), data)


def scan_view(decoded: bytes, charset: str) -> bytes:
    """A same-length view of ``decoded`` whose bytes below 0x80 are exactly its ASCII characters.

    Identity for UTF-8, EUC-JP and ASCII-compatible single-byte charsets.  Unsupported
    charsets (UTF-16/32, UTF-7) give an all-0x80 view; an unknown label gives the
    identity (best effort for reports: such a part is never modified).  Never raises.

    >>> scan_view(b"\\x1b$B%=\\x1b(B<a>", "iso-2022-jp")
    b'\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80<a>'
    """
    info = _info(charset)
    if info.kind in ("sjis", "gbk", "big5", "uhc"):
        return decoded if decoded.isascii() else _pairs_view(decoded, info.kind)
    if info.kind == "2022jp":
        return _iso2022jp_view(decoded)
    if info.kind == "2022kr":
        return _iso2022kr_view(decoded)
    if info.kind == "none" and info.name != UNKNOWN_CHARSET:
        return bytes([_MASK]) * len(decoded)
    return decoded


# --- validity and text ------------------------------------------------------------------------

def _strict(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def looks_valid(decoded: bytes, charset: str) -> bool:
    """Whether the bytes agree with their label (a "lying" charset gives False).

    ``us-ascii`` (also the default for a missing label) accepts UTF-8, which real
    mail sends unlabelled with a ``<meta charset>``.  ISO-2022 is checked for its
    structure (7-bit, known escape sequences) so vendor extensions such as NEC's
    circled digits pass.  Unsupported and unknown charsets are never valid.

    >>> looks_valid("café".encode(), "utf-8"), looks_valid("café".encode("latin-1"), "utf-8")
    (True, False)
    """
    info = _info(charset)
    if info.kind == "none":
        return False
    if info.kind == "ascii":
        return decoded.isascii() or _strict(decoded, "utf-8")
    if info.kind == "2022jp":
        allowed = _JP_ASCII | _JP_OTHER | _JP_G2 | _JP_SHIFT
        return decoded.isascii() and all(e in allowed for e in _ESCAPE.findall(decoded))
    if info.kind == "2022kr":
        return decoded.isascii() and all(e == b"\x1b$)C" for e in _ESCAPE.findall(decoded))
    return _strict(decoded, info.decoder)


def decode_text(raw: bytes, charset: str) -> str:
    """Decode a snippet (a URL, alt text) for reading; undecodable bytes become U+FFFD.

    ``us-ascii`` and unknown labels are read as UTF-8.

    >>> decode_text(b"\\x1b$BF|K\\\\\\x1b(B", "iso-2022-jp")
    '日本'
    """
    info = _info(charset)
    if info.kind == "2022jp":
        for codec in ("iso2022_jp_2", "iso2022_jp_ext"):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                continue
    return raw.decode(info.decoder, "replace")


def encode_text(text: str, charset: str, *, errors: str = "xmlcharrefreplace") -> bytes:
    """Encode text to insert into a part; characters the charset lacks become ``&#NNNN;``.

    ISO-2022-JP output always ends in ASCII mode.  Raises :class:`ValueError` for
    an unsupported or unknown charset (such a part is never modified).

    >>> encode_text("日本 €", "iso-2022-jp")
    b'\\x1b$BF|K\\\\\\x1b(B &#8364;'
    """
    info = _info(charset)
    if info.kind == "none":
        raise ValueError(f"cannot encode text for charset {charset!r}")
    return text.encode(info.encoder, errors)
