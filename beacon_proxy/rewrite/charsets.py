"""Charsets for a byte-level HTML scanner: labels, scan views, text in and out.

Every label a mail client renders is understood (:func:`normalise_charset`:
the whole WHATWG Encoding Standard label table, UTF-32, UTF-7 and the labels
mail software writes), and every part can be scanned, in one of three ways:

* **ASCII-compatible** charsets (UTF-8, the ISO-8859 and windows-125x
  families, EUC, Shift_JIS, GBK, Big5, ISO-2022-JP/KR, ...): the scanner works
  on the transfer-decoded bytes and keeps byte offsets into them.
  :func:`scan_view` gives it a same-length copy in which a byte below 0x80 is
  always a real ASCII character; every byte that belongs to a multi-byte
  character is 0x80 or above (for Shift_JIS, GBK, Big5 and EUC-KR, trail bytes
  in the ASCII range get their top bit set; ISO-2022 escape sequences and the
  text they switch to become 0x80).
* **Unknown labels** (``x-unknown``) and WHATWG's ``replacement``: the markup
  and the URLs of any mail a client can render are ASCII, so such a part is
  scanned as its own bytes (the identity view) and may be modified; inserted
  text is ASCII with ``&#NNNN;`` for the rest.
* **Transcoded** charsets (:func:`is_transcoded`: UTF-16, UTF-32, UTF-7,
  HZ-GB-2312), whose bytes are not ASCII-compatible: the part is scanned and
  edited as a UTF-8 transcoding (:func:`to_utf8`, charset ``"utf-8"``) and
  written back with :func:`from_utf8`.  :func:`effective_charset` first says
  what a client really decodes (a byte order mark wins over the label).

>>> view = scan_view("<b>表</b>".encode("shift_jis"), "Shift_JIS")
>>> view
b'<b>\\x95\\xdc</b>'
>>> "<b>表</b>".encode("shift_jis")[4:5]        # the trail byte is a backslash
b'\\\\'
>>> normalise_charset("x-sjis"), normalise_charset(None), normalise_charset("klingon")
('shift_jis', 'us-ascii', 'x-unknown')
>>> data = "<img src=x>".encode("utf-16")            # a BOM, then the native byte order
>>> charset = effective_charset(data, "UTF-16")
>>> charset in ("utf-16le", "utf-16be"), is_transcoded(charset), to_utf8(data, charset)
(True, True, b'<img src=x>')
>>> from_utf8(b"<img>", charset, bom=has_bom(data, charset)) == "<img>".encode("utf-16")
True

:func:`looks_valid` tells whether the bytes agree with an ASCII-compatible label
("lying charsets"); :func:`lenient_view` is the view to scan when they do not.
"""

from __future__ import annotations

import codecs
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import methodcaller
from typing import Final, Literal

from beacon_proxy.rewrite.htmlattr import html_unescape
from beacon_proxy.rewrite.labels import roundcube_name

__all__ = [
    "MAX_RESYNCHRONISED",
    "UNKNOWN_CHARSET",
    "WHATWG_LABELS",
    "Reading",
    "decode_text",
    "effective_charset",
    "encode_text",
    "encodes_in_pieces",
    "escapes_join",
    "from_utf8",
    "has_bom",
    "is_supported",
    "is_transcoded",
    "lenient_view",
    "looks_valid",
    "normalise_charset",
    "read_the_same_by_all",
    "reading",
    "scan_view",
    "to_utf8",
]

UNKNOWN_CHARSET: Final = "x-unknown"
"""What :func:`normalise_charset` returns for a label it does not know."""

_Kind = Literal[
    "ascii", "utf8", "single", "xud", "euc", "sjis", "gbk", "big5", "uhc", "2022jp", "2022kr",
    "lenient", "transcoded",
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
          for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)),
        *(_Charset(f"windows-{i}", f"cp{i}", f"cp{i}", "single") for i in range(1250, 1259)),
        _Charset("windows-874", "cp874", "cp874", "single"),
        _Charset("koi8-r", "koi8-r", "koi8-r", "single"),
        _Charset("koi8-u", "koi8-u", "koi8-u", "single"),
        _Charset("ibm866", "cp866", "cp866", "single"),
        _Charset("macintosh", "mac-roman", "mac-roman", "single"),
        _Charset("x-mac-cyrillic", "mac-cyrillic", "mac-cyrillic", "single"),
        _Charset("x-user-defined", "x-user-defined", "x-user-defined", "xud"),
        _Charset("euc-jp", "euc_jp", "euc_jp", "euc"),
        _Charset("shift_jis", "cp932", "cp932", "sjis"),
        _Charset("gbk", "gb18030", "gbk", "gbk"),
        _Charset("gb18030", "gb18030", "gb18030", "gbk"),
        _Charset("big5", "big5hkscs", "big5hkscs", "big5"),
        _Charset("euc-kr", "cp949", "cp949", "uhc"),
        _Charset("iso-2022-jp", "iso2022_jp_2", "iso2022_jp", "2022jp"),
        _Charset("iso-2022-kr", "iso2022_kr", "iso2022_kr", "2022kr"),
        # Without a byte order mark, "utf-16" and "utf-32" are big-endian (RFC 2781);
        # effective_charset() picks the order the bytes show.
        _Charset("utf-16", "utf-16-be", "utf-16-be", "transcoded"),
        _Charset("utf-32", "utf-32-be", "utf-32-be", "transcoded"),
        *(_Charset(f"utf-{n}{e}", f"utf-{n}-{e}", f"utf-{n}-{e}", "transcoded")
          for n in (16, 32) for e in ("le", "be")),
        _Charset("utf-7", "utf-7", "utf-7", "transcoded"),
        _Charset("hz-gb-2312", "hz", "hz", "transcoded"),
        _Charset("replacement", "utf-8", "ascii", "lenient"),
        _Charset(UNKNOWN_CHARSET, "utf-8", "ascii", "lenient"),
    ]
    return {row.name: row for row in rows}


_CHARSETS: Final = _table()

WHATWG_LABELS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(labels.split()) for name, labels in {
        # The label table of the WHATWG Encoding Standard (encodings.json), encoding -> labels.
        "utf-8": "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
        "ibm866": "866 cp866 csibm866 ibm866",
        "iso-8859-2": "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 "
                      "iso_8859-2:1987 l2 latin2",
        "iso-8859-3": "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 "
                      "iso_8859-3:1988 l3 latin3",
        "iso-8859-4": "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 "
                      "iso_8859-4:1988 l4 latin4",
        "iso-8859-5": "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 "
                      "iso_8859-5 iso_8859-5:1988",
        "iso-8859-6": "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 "
                      "iso-8859-6 iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 "
                      "iso_8859-6 iso_8859-6:1987",
        "iso-8859-7": "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 "
                      "iso8859-7 iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek",
        "iso-8859-8": "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 "
                      "iso8859-8 iso88598 iso_8859-8 iso_8859-8:1988 visual",
        "iso-8859-8-i": "csiso88598i iso-8859-8-i logical",
        "iso-8859-10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
        "iso-8859-13": "iso-8859-13 iso8859-13 iso885913",
        "iso-8859-14": "iso-8859-14 iso8859-14 iso885914",
        "iso-8859-15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9",
        "iso-8859-16": "iso-8859-16",
        "koi8-r": "cskoi8r koi koi8 koi8-r koi8_r",
        "koi8-u": "koi8-ru koi8-u",
        "macintosh": "csmacintosh mac macintosh x-mac-roman",
        "windows-874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
        "windows-1250": "cp1250 windows-1250 x-cp1250",
        "windows-1251": "cp1251 windows-1251 x-cp1251",
        "windows-1252": "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 "
                        "iso-ir-100 iso8859-1 iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 "
                        "us-ascii windows-1252 x-cp1252",
        "windows-1253": "cp1253 windows-1253 x-cp1253",
        "windows-1254": "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 "
                        "iso_8859-9 iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254",
        "windows-1255": "cp1255 windows-1255 x-cp1255",
        "windows-1256": "cp1256 windows-1256 x-cp1256",
        "windows-1257": "cp1257 windows-1257 x-cp1257",
        "windows-1258": "cp1258 windows-1258 x-cp1258",
        "x-mac-cyrillic": "x-mac-cyrillic x-mac-ukrainian",
        "gbk": "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk",
        "gb18030": "gb18030",
        "big5": "big5 big5-hkscs cn-big5 csbig5 x-x-big5",
        "euc-jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
        "iso-2022-jp": "csiso2022jp iso-2022-jp",
        "shift_jis": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
        "euc-kr": "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 "
                  "ks_c_5601-1989 ksc5601 ksc_5601 windows-949",
        "replacement": "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr "
                       "replacement",
        "utf-16be": "unicodefffe utf-16be",
        "utf-16le": "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
        "x-user-defined": "x-user-defined",
    }.items()
}
"""The WHATWG Encoding Standard's labels by encoding name (lower case), as browsers use them.

:func:`normalise_charset` knows every one; where mail differs it keeps the mail
meaning (see ``_MAIL_LABELS``).
"""

# Where mail clients read a WHATWG label differently from a browser, the mail meaning wins:
# ``us-ascii`` is the MIME default (and often unlabelled UTF-8), ISO-8859-1/-9 stay
# themselves, ISO-2022-KR and HZ are decoded by mail clients (browsers refuse them), and a
# bare "utf-16" follows RFC 2781 (byte order mark, else big-endian), not WHATWG's "LE".
_MAIL_LABELS: Final = {
    **dict.fromkeys(("ansi_x3.4-1968", "ascii", "us-ascii", "us"), "us-ascii"),
    **dict.fromkeys(("cp819", "csisolatin1", "ibm819", "iso-8859-1", "iso-ir-100", "iso8859-1",
                     "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1", "latin-1"),
                    "iso-8859-1"),
    **dict.fromkeys(("csisolatin5", "iso-8859-9", "iso-ir-148", "iso8859-9", "iso88599",
                     "iso_8859-9", "iso_8859-9:1989", "l5", "latin5"), "iso-8859-9"),
    "iso-8859-8-i": "iso-8859-8", "csiso88598i": "iso-8859-8", "logical": "iso-8859-8",
    "iso-2022-kr": "iso-2022-kr", "csiso2022kr": "iso-2022-kr", "hz-gb-2312": "hz-gb-2312",
    "utf-16": "utf-16",
}
# Labels seen in mail that neither WHATWG nor Python's codec registry map to our names.
_EXTRA_LABELS: Final = {
    "x-ms-cp932": "shift_jis", "cp932": "shift_jis", "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp", "cp936": "gbk", "euc-cn": "gbk", "cp950": "big5",
    "cp949": "euc-kr", "uhc": "euc-kr", "cp-1252": "windows-1252",
    **dict.fromkeys(("utf-32", "utf32", "ucs-4", "ucs4", "csucs4", "iso-10646-ucs-4"), "utf-32"),
    "utf-32le": "utf-32le", "utf-32be": "utf-32be", "x-utf-16le": "utf-16le",
    "x-utf-16be": "utf-16be",
    **dict.fromkeys(("utf-7", "utf7", "unicode-1-1-utf-7", "csunicode11utf7",
                     "unicode-2-0-utf-7", "x-unicode-2-0-utf-7", "x-unicode20utf7"), "utf-7"),
    "hz": "hz-gb-2312", "x-hz": "hz-gb-2312",
}
_FROM_WHATWG: Final = {"iso-8859-8-i": "iso-8859-8"}  # WHATWG encodings we decode as another
_BROWSER_NAMES: Final = {label: _FROM_WHATWG.get(name, name)
                         for name, labels in WHATWG_LABELS.items() for label in labels}
_LABELS: Final = {
    **{label: _FROM_WHATWG.get(name, name)
       for name, labels in WHATWG_LABELS.items() for label in labels},
    **_MAIL_LABELS,
    **_EXTRA_LABELS,
}
# Python codec names (codecs.lookup(label).name) that map to one of ours.
_CODEC_NAMES: Final = {
    **{codecs.lookup(row.decoder).name: row.name for row in _CHARSETS.values()
       if row.kind in ("single", "transcoded")},
    "ascii": "us-ascii", "utf-8": "utf-8", "shift_jis": "shift_jis", "cp932": "shift_jis",
    "euc_jp": "euc-jp", "gb2312": "gbk", "gbk": "gbk", "gb18030": "gb18030", "big5": "big5",
    "big5hkscs": "big5", "cp950": "big5", "euc_kr": "euc-kr", "cp949": "euc-kr",
    "iso2022_jp": "iso-2022-jp", "iso2022_jp_1": "iso-2022-jp", "iso2022_jp_2": "iso-2022-jp",
    "iso2022_jp_ext": "iso-2022-jp", "iso2022_kr": "iso-2022-kr", "tis-620": "windows-874",
    "iso8859-11": "windows-874", "utf-16": "utf-16", "utf-32": "utf-32",
    "utf-8-sig": "utf-8", "iso2022_jp_3": "iso-2022-jp", "iso2022_jp_2004": "iso-2022-jp",
    "euc_jis_2004": "euc-jp", "euc_jisx0213": "euc-jp", "shift_jis_2004": "shift_jis",
    "shift_jisx0213": "shift_jis",
}


@lru_cache(maxsize=256)
def normalise_charset(name: str | None) -> str:
    """The canonical lower-case name of a charset label; ``us-ascii`` when absent.

    >>> normalise_charset('"UTF8"'), normalise_charset("cp-1252"), normalise_charset("latin1")
    ('utf-8', 'windows-1252', 'iso-8859-1')
    >>> normalise_charset("unicode20utf8"), normalise_charset("ucs-2"), normalise_charset("UTF-16")
    ('utf-8', 'utf-16le', 'utf-16')
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
    found = _LABELS.get(label)
    if found is not None:
        return found
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
    """Whether a part in this charset can be scanned and modified: always, now.

    An unknown label is scanned as its ASCII bytes, a transcoded charset
    (:func:`is_transcoded`) through its UTF-8 transcoding.  Kept so that callers
    that ask keep working.

    >>> is_supported("ISO-2022-JP"), is_supported("utf-16"), is_supported("x-unknown")
    (True, True, True)
    """
    del charset
    return True


def encodes_in_pieces(charset: str) -> bool:
    """Whether :func:`encode_text` of ``a + b`` is always that of ``a``, then of ``b``.

    True for the stateless encoders: ASCII, UTF-8, the single-byte charsets and the
    EUC-JP, Shift_JIS, GBK/GB18030, Big5-HKSCS and UHC codecs, which encode each
    character (or a pair whose second character is a combining mark, never ASCII) on
    its own.  Not for ISO-2022 (shift states), x-user-defined, the transcoded
    charsets (a byte order mark, UTF-7's base64 runs, HZ's ``~{``) or unknown labels.

    >>> encodes_in_pieces("windows-1252"), encodes_in_pieces("ISO-2022-JP")
    (True, False)
    """
    return _info(charset).kind in _IN_PIECES


_IN_PIECES: Final = frozenset({"ascii", "utf8", "single", "euc", "sjis", "gbk", "big5", "uhc"})


def is_transcoded(charset: str) -> bool:
    """Whether the charset is not ASCII-compatible: scan ``to_utf8(...)``, not the bytes.

    UTF-16, UTF-32 (any byte order), UTF-7 and HZ-GB-2312.

    >>> is_transcoded("utf-16le"), is_transcoded("UTF-7"), is_transcoded("shift_jis")
    (True, True, False)
    """
    return _info(charset).kind == "transcoded"


# --- byte order marks and transcoding ---------------------------------------------------------

_BOMS: Final = (  # longest first: FF FE 00 00 is UTF-32LE if what follows is UTF-32 (_utf32)
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32le"),
    (b"\x00\x00\xfe\xff", "utf-32be"),
    (b"\xff\xfe", "utf-16le"),
    (b"\xfe\xff", "utf-16be"),
)
_ANY_BOM: Final = tuple(bom for bom, _ in _BOMS)
_BOM_OF: Final[dict[str, tuple[bytes, ...]]] = {
    **{name: (bom,) for bom, name in _BOMS},
    "utf-16": (b"\xff\xfe", b"\xfe\xff"),
    "utf-32": (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"),
    "utf-7": (b"+/v8", b"+/v9", b"+/v+", b"+/v/"),  # U+FEFF, then 2 bits of what follows
}
_UTF16: Final = frozenset({"utf-16", "utf-16le", "utf-16be"})
_UTF32: Final = frozenset({"utf-32", "utf-32le", "utf-32be"})
_SNIFF: Final = 4096  # bytes looked at to find the byte order (a multiple of 4)


def effective_charset(decoded: bytes, label: str) -> str:
    """The charset a client really decodes ``decoded`` with, given the part's label.

    * A byte order mark wins over any label, as in browsers: UTF-8
      (``EF BB BF``), UTF-32LE (``FF FE 00 00``), UTF-32BE (``00 00 FE FF``),
      UTF-16LE (``FF FE``), UTF-16BE (``FE FF``).  A UTF-32 mark counts only if
      the first 4 KB are valid UTF-32 and the length a multiple of 4: browsers
      know no UTF-32 and read ``FF FE 00 00 3C 00`` as UTF-16LE ``\\0<``.
    * Otherwise a ``utf-16`` or ``utf-32`` label gets the byte order that the
      NUL bytes of the first 4 KB show (ASCII markup is half or three quarters
      NULs), big-endian when they do not tell (RFC 2781).
    * A UTF-16/UTF-32 label on bytes without a single NUL cannot be UTF-16/32
      markup (``<`` would be ``3C 00``): it is a lying label on ASCII-compatible
      bytes, scanned as an unknown charset (``x-unknown``, the identity view).
    * Otherwise the normalised label.

    Looks at a prefix only (and, for UTF-16/32 labels, one ``memchr``).

    >>> effective_charset(b"\\xef\\xbb\\xbf<p>", "iso-8859-1")
    'utf-8'
    >>> effective_charset("<p>".encode("utf-16-le"), "utf-16"), effective_charset(b"<p>", "utf-16")
    ('utf-16le', 'x-unknown')
    """
    charset = normalise_charset(label)
    if decoded.startswith(_ANY_BOM):
        for bom, name in _BOMS:
            if decoded.startswith(bom) and (name[4:6] != "32" or _utf32(decoded, name)):
                return name
    if charset in _UTF16 or charset in _UTF32:
        if decoded and b"\x00" not in decoded:
            return UNKNOWN_CHARSET
        if charset == "utf-16":
            head = decoded[:_SNIFF]
            return "utf-16le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16be"
        if charset == "utf-32":
            head = decoded[:_SNIFF]
            return "utf-32le" if head[3::4].count(0) > head[0::4].count(0) else "utf-32be"
    return charset


def _utf32(decoded: bytes, charset: str) -> bool:
    """Whether a UTF-32 BOM really starts UTF-32 (else ``FF FE 00 00`` is UTF-16LE and U+0000).

    Browsers know no UTF-32 and read ``FF FE`` as UTF-16LE whatever follows, so a
    UTF-16 document must not be taken for UTF-32 (and then scanned as garbage)
    just because its first character is U+0000.
    """
    if len(decoded) % 4:
        return False
    try:
        decoded[:_SNIFF].decode(_CHARSETS[charset].decoder)
    except UnicodeDecodeError:
        return False
    return True


def has_bom(decoded: bytes, charset: str) -> bool:
    """Whether ``decoded`` starts with the byte order mark of ``charset``.

    UTF-8, UTF-16 and UTF-32 (either byte order for the bare labels) and UTF-7
    (``+/v8`` ...) have one; pass :func:`effective_charset`.

    >>> has_bom(b"\\xff\\xfe<\\x00", "utf-16le"), has_bom(b"<\\x00", "utf-16le")
    (True, False)
    """
    return decoded.startswith(_BOM_OF.get(normalise_charset(charset), ()))


def _transcoded(charset: str) -> _Charset:
    info = _info(charset)
    if info.kind != "transcoded":
        raise ValueError(f"charset {charset!r} is ASCII-compatible: scan its bytes")
    return info


def _text(decoded: bytes, info: _Charset) -> str:
    """The text of a transcoded charset, lenient, without its byte order mark.

    UTF-16/32 lone surrogates survive (``surrogatepass``) so that the round
    trip through UTF-8 is exact; other broken input becomes U+FFFD.
    """
    if info.name in _UTF16 or info.name in _UTF32:
        if info.name in ("utf-16", "utf-32"):
            info = _CHARSETS[effective_charset(decoded, info.name)]
            if info.kind != "transcoded":  # no NUL at all: not UTF-16/32 bytes
                return decoded.decode("utf-8", "replace")
        try:
            text = decoded.decode(info.decoder, "surrogatepass")
        except UnicodeDecodeError:
            text = decoded.decode(info.decoder, "replace")
    else:
        text = decoded.decode(info.decoder, "replace")
    return text[1:] if text.startswith("\ufeff") else text


def read_the_same_by_all(decoded: bytes, label: str, charset: str) -> bool:
    """Whether every client reads these bytes as the same text, given the part's label
    and :func:`effective_charset`.

    False when a bare ``utf-16``/``utf-32`` label without BOM meets bytes whose byte
    order is not clear from where the NULs are; when a UTF-32 label or byte order mark
    meets bytes that are not clean UTF-32 (browsers read such bytes as UTF-16, Outlook
    and Python as UTF-32 with
    replacement characters), and when a transcoded charset's bytes do not decode
    strictly (decoders resynchronise differently).  The engine leaves such a part to
    the fallback, and the fallback holds it: no single copy is safe for every reader.

    >>> read_the_same_by_all("<p>".encode("utf-16"), "utf-16", "utf-16le")
    True
    >>> read_the_same_by_all(b"\\xff\\xfe\\x00\\x00<\\x00\\x00\\x00\\r", "utf-32", "utf-16le")
    False
    """
    labelled = normalise_charset(label)
    utf32 = labelled in _UTF32 or decoded.startswith(
        (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"))
    if utf32 and charset not in _UTF32:
        return False
    if labelled in ("utf-16", "utf-32") and not decoded.startswith(_ANY_BOM):
        # No BOM: the byte order is sniffed, browsers assume little-endian.  Sniffing is
        # safe when the NULs are clearly on one side (the other reading is then CJK
        # garbage without markup); mixed, both readings may hold markup.
        step = 2 if labelled == "utf-16" else 4
        head = decoded[:_SNIFF]
        low, high = head[step - 1::step].count(0), head[0::step].count(0)
        if min(low, high) * 10 > max(low, high):
            return False
        # Browsers do not sniff: "utf-16" is little-endian to them.  The other order's
        # reading must hold no markup (big-endian filler, then little-endian tags).
        other = {"utf-16be": "utf-16-le", "utf-16le": "utf-16-be"}.get(charset)
        if other is not None and opens_tags(
                decoded[: len(decoded) // 2 * 2].decode(other, "replace").encode("utf-8")):
            return False
    info = _info(charset)
    if info.kind != "transcoded" or charset in ("utf-16", "utf-32"):
        return True
    try:
        decoded.decode(info.decoder)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Reading:
    """How a part's decoded bytes are scanned and edited: the one place that decides it.

    ``text`` is the bytes (ASCII-compatible charsets) or their UTF-8 transcoding
    (UTF-16/32/7, HZ); ``view`` its same-length scan view: the scan view of a
    charset the bytes agree with, else the bytes themselves (a lying label: every
    ASCII construct is found).  ``others``: the views of the other readings some
    client makes (:func:`reading`), empty for a correctly labelled part.
    :meth:`back` turns an edited ``text`` into bytes in the part's own charset.
    """

    text: bytes
    view: bytes
    charset: str  # of ``text``: "utf-8" when transcoded
    transcoded: str | None = None  # the part's own charset when ``text`` is a transcoding
    bom: bool = False  # the part's bytes start with a byte order mark
    #: Further same-length views of ``text`` that other clients' readings give (another
    #: charset, a browser that does not know the label, a ``<meta>`` charset): a copy is
    #: made from ``view`` only when every one of them finds the same loads.
    others: tuple[bytes, ...] = ()
    #: A transcoded part whose label browsers do not know: they read its bytes as ASCII
    #: text, so its bytes must never open a tag (:func:`opens_tags`), edited or not.
    foreign: bool = False

    def back(self, edited: bytes) -> bytes:
        if self.transcoded is None:
            return edited
        return from_utf8(edited, self.transcoded, bom=self.bom)


def reading(decoded: bytes, label: str) -> Reading | None:
    """How to scan a part labelled ``label``; None when clients read it in different ways
    (:func:`read_the_same_by_all`, or UTF-16/32/7 under a label browsers do not know
    whose bytes open a tag when read as ASCII), or when no same-length view shows how
    they read it (ISO-2022 shifts that join the characters around them:
    :func:`escapes_join`).

    ``label`` is the part's charset parameter as written (None when absent): whether
    browsers know it (:func:`browsers_read`) matters.  ``others`` gets the view of
    every further reading some client makes: the label's own view when the bytes lie
    (browsers resynchronise and keep to it), WHATWG's ISO-2022-JP reading
    (:func:`_iso2022jp_whatwg_view`), and, for a label browsers do not know, a
    missing or ``us-ascii`` one or lying bytes, the bytes themselves (windows-1252)
    and the view of any charset a ``charset=`` in the text names (:func:`_declared_views`).

    >>> r = reading("<p>".encode("utf-16"), "utf-16")
    >>> r.text, r.charset, r.transcoded, r.bom
    (b'<p>', 'utf-8', 'utf-16le', True)
    """
    charset = effective_charset(decoded, label)
    if not read_the_same_by_all(decoded, label, charset):
        return None
    if charset == UNKNOWN_CHARSET and not _python_reads_as_ascii(decoded, label):
        return None
    browsers = browsers_read(label)
    if not browsers and decoded.startswith(_UTF16_XML) and not decoded.startswith(_ANY_BOM):
        return None  # UTF-16 to Chromium ("<?x" in either order at the start), not to others
    try:
        labelled = _label_views(decoded, label, charset)
        if labelled is None:
            return None
        if is_transcoded(charset):
            foreign = not browsers and not decoded.startswith(_ANY_BOM)
            if foreign and opens_tags(decoded):
                return None  # browsers read these bytes as ASCII markup, other clients not
            text = to_utf8(decoded, charset)
            if not _roundcube_agrees(decoded, label, text):
                return None
            return Reading(text, text, "utf-8", charset, has_bom(decoded, charset), (), foreign)
        kind = _info(charset).kind
        if kind in ("2022jp", "2022kr") and escapes_join(decoded, charset):
            return None  # tokens that every reader joins across an escape: no view shows them
        webmail = _roundcube_views(decoded, label, charset)
        if webmail is None:
            return None
        return _views(decoded, charset, kind, browsers, [*labelled, *webmail],
                      _python_pairs(label, charset))
    except _Unreadable:
        return None


@lru_cache(maxsize=256)
def _python_codec(label: str) -> str | None:
    """The Python text codec a label names that this module does not read by (its
    :func:`normalise_charset` is ``x-unknown``), or None: a client built on Python's
    ``email`` decodes a part by it (``get_content()``: ``bytes.decode(label)``)."""
    name = label.strip().strip("\"'").strip()
    if not name or len(name) > 40 or not name.isascii():
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


#: Python codecs whose decoders take quadratic time (punycode inserts each character into a
#: list; idna decodes a label as punycode): a part labelled so is not read, but held.
_QUADRATIC_CODECS: Final = frozenset({"punycode", "idna"})
#: A run of characters beyond ASCII (one placeholder in a text's ASCII skeleton).
_NOT_ASCII_BYTES: Final = re.compile(rb"[\x80-\xff]+")


def _skeleton(data: bytes) -> bytes:
    """``data``'s ASCII between runs of other bytes (each run one 0x80): two readings
    with the same skeleton read the same ASCII at the same places among their text."""
    return _NOT_ASCII_BYTES.sub(b"\x80", data)


def _python_reads_as_ascii(decoded: bytes, label: str) -> bool:
    """Whether a client that decodes by a Python codec this module does not know reads the
    ASCII of ``decoded`` as it is scanned here (as ASCII bytes, ``x-unknown``).

    Most such codecs are ASCII-compatible (``cp858``, ``mac-turkish``): the same ASCII
    between the same runs of other characters.  Not EBCDIC (``cp500``, ``ibm037``: ``<``
    is ``0x4C``), ``unicode_escape`` (``\\x3cimg`` is ``<img``), or double-byte codecs
    whose second bytes may be ASCII (``johab``: ``<``, ``>``): such a part has no view
    (the copy is held).

    >>> _python_reads_as_ascii(b"<p>caf\\xe9</p>", "cp858")
    True
    >>> _python_reads_as_ascii(b"\\\\x3cimg src=x\\\\x3e", "unicode_escape")
    False
    >>> _python_reads_as_ascii("<img src=x>".encode("cp500"), "ibm500")
    False
    """
    codec = _python_codec(label)
    return codec is None or _reads_ascii_alike(decoded, codec)


def _reads_ascii_alike(decoded: bytes, codec: str) -> bool:
    """Whether Python's ``codec`` reads the same ASCII between the same runs of other
    characters in ``decoded`` as its bytes show (the ASCII skeletons compared), or at
    least no markup at all (UTF-16 of ASCII bytes: CJK characters only)."""
    if codec in _QUADRATIC_CODECS:
        return False  # not decoded here: 320 KB of punycode took 11 s
    try:
        text = decoded.decode(codec, "replace")
    except Exception:  # a codec's own failure: its reading is unknown
        return False
    seen = text.encode("utf-8", "replace")
    return _skeleton(seen) == _skeleton(decoded) or not opens_tags(seen)


#: A backslash before blanks Roundcube deletes at a line's end (tab, VT, NUL, CR other than
#: one CR of a CRLF): an escaped blank to browsers, a CSS line continuation to Roundcube.
_JOINED_ESCAPE: Final = re.compile(rb"\\(?!\r\n)[\t\r\x0b\x00]+\n")


def _roundcube_charset(label: str) -> str | None:
    """What Roundcube decodes a part labelled ``label`` by (:func:`.labels.roundcube_name`),
    in this module's names, else a Python codec's name; ``"x-unknown"`` for a name neither
    knows, None when it converts nothing (``binary``: the bytes as they are)."""
    name = roundcube_name(label)
    if name is None:
        return None
    ours = normalise_charset(name)
    return ours if ours != UNKNOWN_CHARSET else (_python_codec(name) or UNKNOWN_CHARSET)


#: Names Roundcube passes to iconv that neither this module nor Python knows and whose
#: bytes are not ASCII: EBCDIC, ISO-2022-CN and the like (a part so labelled is held).
_ICONV_NOT_ASCII: Final = re.compile(r"ebcdic|2022|ucs|utf|1361|johab|hz", re.IGNORECASE)


def _roundcube_views(decoded: bytes, label: str, charset: str) -> list[bytes] | None:
    """The view of an ASCII-compatible part as Roundcube reads it, where that is not
    ``charset``: the label's cleaned-up charset's own views, or the bytes; None when its
    reading has no view (a UTF-7, EBCDIC or other codec that reads the ASCII otherwise,
    ISO-2022 shifts that join characters)."""
    other = _roundcube_charset(label)
    if other == UNKNOWN_CHARSET or other == "replacement":
        # iconv may know it (EBCDIC, ISO-2022-CN): where it may not read ASCII, held
        name = roundcube_name(label) or ""
        return None if _ICONV_NOT_ASCII.search(name) and (
            not decoded.isascii() or _SHIFTS.search(decoded)) else []
    if other is None or other == charset:
        return []
    if other not in _CHARSETS or _CHARSETS[other].kind == "transcoded":
        if other.startswith(("utf-16", "utf-32")) and decoded.isascii():
            return []  # ASCII under a UTF-16/32 name: Roundcube reads it as UTF-8
        return [] if _reads_ascii_alike(decoded, _CHARSETS[other].decoder
                                        if other in _CHARSETS else other) else None
    if _CHARSETS[other].kind in _OWN_VIEW:
        return _named_views(decoded, {other})
    return [decoded] if _info(charset).kind in _OWN_VIEW else []


def _roundcube_agrees(decoded: bytes, label: str, text: bytes) -> bool:
    """Whether Roundcube reads a transcoded (UTF-16/32/7, HZ) part as ``text`` or as no
    markup.  It deletes every NUL first, then converts by its name for the label - from
    UTF-8 when that is UTF-16 or UTF-32 and the rest is ASCII: UTF-16 ASCII markup with
    its NULs deleted is ASCII markup.  Where it reads markup that ``text`` is not, False."""
    other = _roundcube_charset(label)
    rest = decoded[len(next((bom for bom in _ANY_BOM if decoded.startswith(bom)), b"")):]
    rest = rest.replace(b"\x00", b"")  # (a byte order mark: no markup either way)
    if other is None or other == UNKNOWN_CHARSET or (
            other in _CHARSETS and _CHARSETS[other].kind != "transcoded") or (
            other.startswith(("utf-16", "utf-32")) and rest.isascii()):
        seen = rest  # read as ASCII-compatible bytes
    else:
        try:
            seen = rest.decode(_CHARSETS[other].decoder if other in _CHARSETS else other,
                               "replace").encode("utf-8", "replace")
        except Exception:  # a codec's own failure: its reading is unknown
            return not opens_tags(rest)
    return not opens_tags(seen) or _skeleton(seen) == _skeleton(text)


@lru_cache(maxsize=256)
def _python_pairs(label: str, charset: str) -> str | None:
    """The codec a client built on Python's ``email`` decodes a double-byte part labelled
    ``label`` by, where it is not this module's decoder for ``charset``: Python's strict
    ``shift_jis``, ``big5``, ``gb2312`` and ``euc_kr`` (also for ``ks_c_5601-1987``) know
    fewer pairs than cp932, Big5-HKSCS, GB18030 and UHC, so a backslash after a lead
    byte only these know is a character here and a backslash there; ``"ascii"`` for a
    label Python does not know (``x-sjis``, ``windows-31j``: it decodes ASCII then, every
    other byte a replacement character).  None: the same pairs, or no pairs at all."""
    kind = _info(charset).kind
    if kind not in _PAIRS:
        return None
    try:
        codec = codecs.lookup(label.strip().strip("\"'").strip()).name
    except (LookupError, ValueError, TypeError):
        return "ascii"
    return None if codec == codecs.lookup(_info(charset).decoder).name else codec


class _ErrorSpans(threading.local):
    """Where the running :func:`_python_view` decode met errors (a thread's own list)."""

    spans: list[tuple[int, int]] | None = None


_ERROR_SPANS: Final = _ErrorSpans()


def _record_error(exc: UnicodeError) -> tuple[str, int]:
    """A codec error handler: remember the span, go on as ``"replace"`` does."""
    spans = _ERROR_SPANS.spans
    if spans is None or not isinstance(exc, UnicodeDecodeError):
        raise exc
    spans.append((exc.start, exc.end))
    if len(spans) > MAX_RESYNCHRONISED // 4:
        raise _Unreadable  # a Python call per error: lying text this long is not read
    return "\ufffd", exc.end


codecs.register_error("beacon-proxy-error-spans", _record_error)


def _python_view(data: bytes, codec: str, kind: _Kind) -> bytes:
    """The view of double-byte text as Python's ``codec`` reads it (``"replace"``): every
    error span masked, pairs in between masked as the label's ranges pair them (text
    valid in ``codec``, so its characters start where the ranges say).  One decode in C,
    a Python call per error only.

    >>> _python_view(b'"\\xfa\\\\" "\\x95\\\\"', "shift_jis", "sjis")   # NEC's 0xFA: no pair in it
    b'"\\x80\\\\" "\\x95\\xdc"'
    """
    if codec == "ascii":
        return data  # every byte beyond ASCII a character of its own: the bytes themselves
    spans: list[tuple[int, int]] = []
    _ERROR_SPANS.spans = spans
    try:
        data.decode(codec, "beacon-proxy-error-spans")
    finally:
        _ERROR_SPANS.spans = None
    if not spans:
        return _pairs_view(data, kind)
    out = bytearray()
    pos = 0
    for start, end in spans:
        out += _pairs_view(data[pos:start], kind)
        out += bytes([_MASK]) * (end - start)
        pos = end
    out += _pairs_view(data[pos:], kind)
    return bytes(out)


def _label_views(decoded: bytes, label: str | None, charset: str) -> list[bytes] | None:
    """The views of the part's label where a byte order mark of another charset overrides
    it (``charset``, :func:`effective_charset`); None when no view can show that reading.

    Browsers follow the mark; mail software that converts a part by its label before
    rendering it (Roundcube, a client built on Python's ``email``) does not: a
    ``shift_jis`` part that starts with UTF-8's mark is Shift_JIS to it, a ``utf-7`` one
    UTF-7 (``+ADw-img ...`` is ``<img ...``).  An ASCII-compatible label with a view of
    its own gives that view (the bytes themselves are a view already); UTF-16/32 text
    under an ASCII-compatible label, or ASCII-compatible text under a UTF-16/32/7 or HZ
    label, has no same-length view: None when that reading opens a tag.

    >>> _label_views(b"\\xef\\xbb\\xbf<p>", "shift_jis", "utf-8")  # ranges; resynchronised
    [b'\\xef\\xbb\\xbf<p>', b'\\x80\\x80\\x80<p>']
    >>> _label_views(b"\\xef\\xbb\\xbf+ADw-img src=x+AD4-", "utf-7", "utf-8") is None
    True
    >>> _label_views(b"\\xff\\xfe<\\x00p\\x00>\\x00", "latin1", "utf-16le")
    []
    """
    if not decoded.startswith(_ANY_BOM):
        return []
    name = normalise_charset(label)
    if has_bom(decoded, name):
        return []  # the label's own byte order mark: every reader follows it
    kind = _info(name).kind
    if kind == "transcoded":
        orders = {"utf-16": ("utf-16le", "utf-16be"),
                  "utf-32": ("utf-32le", "utf-32be")}.get(name, (name,))
        texts = (decoded[: len(decoded) // 4 * 4 if "32" in order else len(decoded)]
                 .decode(_CHARSETS[order].decoder, "replace") for order in orders)
        return None if any(opens_tags(text.encode("utf-8", "replace")) for text in texts) else []
    if is_transcoded(charset):  # UTF-16/32 under an ASCII-compatible label: ASCII to them
        return None if opens_tags(decoded) else []
    return _named_views(decoded, {name}) if kind in _OWN_VIEW else []


def _views(decoded: bytes, charset: str, kind: _Kind, browsers: bool,
           labelled: list[bytes], python: str | None = None) -> Reading | None:
    """:func:`reading` for an ASCII-compatible charset ``charset`` of ``kind``; ``labelled``:
    the views of a label its byte order mark overrides (:func:`_label_views`); ``python``:
    the codec Python's ``email`` decodes the label by, where it reads pairs otherwise
    (:func:`_python_pairs`)."""
    valid = kind not in _OWN_VIEW or looks_valid(decoded, charset)
    view = scan_view(decoded, charset) if valid else decoded
    views = [view, *labelled]
    if python is not None and not decoded.isascii():
        views.append(_python_view(decoded, python, kind))
    if kind in _OWN_VIEW and not valid:  # browsers resynchronise and keep to the label
        views.append(scan_view(decoded, charset))
        if kind in _PAIRS:  # character by character, as WHATWG's decoders do
            views.append(_resynchronised_view(decoded, charset))
    if kind == "2022jp" and (whatwg := _iso2022jp_whatwg_view(decoded)) is not None:
        views.append(whatwg)
    if not browsers or not valid:  # windows-1252, or what a <meta> says
        declared = _declared_views(decoded)
        if declared is None:
            return None
        views.append(decoded)
        views += declared
        if not browsers and _detected(decoded):
            views += _detection_views(decoded)
    if b"\x00" in decoded.rstrip(b"\x00") or (
            b"\\" in view and _JOINED_ESCAPE.search(view)):  # ("\\" of a character: none)
        # A NUL is U+FFFD to browsers, a space to Thunderbird (its QP decoder's =00) and
        # gone to Roundcube (which deletes every NUL and every tab, CR, VT or NUL before a
        # line feed: "\\<TAB><LF>" becomes a CSS line continuation): no view of one length
        # (NULs at the very end, a C string's, change no markup)
        return None
    others: list[bytes] = []
    for other in views[1:]:
        if other is not view and other != view and other not in others:
            others.append(other)
    return Reading(decoded, view, charset, others=tuple(others))


_TAG_OPEN: Final = re.compile(rb"<[!/?A-Za-z]")


def opens_tags(data: bytes) -> bool:
    """Whether ASCII-compatible reading of ``data`` would find any markup (a ``<`` that
    opens a tag, comment or declaration).  UTF-16/32 markup never does: its ASCII
    characters alternate with NUL bytes.

    >>> opens_tags("<img>".encode("utf-16-le")), opens_tags("\u4e3c".encode("utf-16-le"))
    (False, True)
    """
    return _TAG_OPEN.search(data) is not None


_BROWSER_LABELS: Final = frozenset(label for labels in WHATWG_LABELS.values()
                                   for label in labels) - {"us-ascii", "ascii",
                                                           "ansi_x3.4-1968"}


@lru_cache(maxsize=256)
def browsers_read(label: str | None) -> bool:
    """Whether browsers decode a part by this label (and not by a ``<meta>`` or windows-1252).

    True for the labels of the WHATWG Encoding Standard, which browser engines and
    Thunderbird use; False for a missing label and ``us-ascii`` (the MIME default:
    clients follow a ``<meta>`` then) and for labels only mail software and
    Python-based or iconv-based readers know (``cp932``, ``iso-2022-jp-2``,
    ``utf-16-le``, ``ks_c_5601_1987``, ...).

    A label in apostrophes (``charset='utf-8'``) is none they know: MIME quotes with
    ``"`` only, and a browser handed ``'utf-8'`` reads windows-1252 or what a ``<meta>``
    says (mail software that strips them reads UTF-8: both readings are scanned).

    >>> browsers_read("Shift_JIS"), browsers_read("cp932"), browsers_read(None)
    (True, False, False)
    >>> browsers_read("'utf-8'"), browsers_read(' "utf-8" ')
    (False, True)
    """
    if label is None:
        return False
    return label.strip().strip('"').strip().lower() in _BROWSER_LABELS


#: A charset declaration anywhere in the text (``<meta charset>``, ``http-equiv``).
#: ``charset=`` and a label; around ``=`` Blink skips every byte up to the space.
_DECLARED: Final = re.compile(rb"charset[\x00-\x20]*=[\x00-\x20\"']*([-\w.:]{1,40})")
#: An XML declaration's encoding, as Blink reads one at the very start of a part whose
#: label it does not know (``CheckForXMLCharset``): up to the first ">", blanks, controls
#: and bytes >= 0x80 skipped around "=", the value quoted (lower-cased here: more names).
_XML_ENCODING: Final = re.compile(
    rb"encoding[\x00-\x20\x80-\xff]*=[\x00-\x20\x80-\xff]*[\"']([-\w.:]{1,40})")
#: "<?x" in UTF-16, either byte order: Blink then reads a part without a known label as
#: UTF-16, whatever else it holds.
_UTF16_XML: Final = (b"<\x00?\x00x\x00", b"\x00<\x00?\x00x")
#: What makes ASCII text read differently in ISO-2022: ESC, SO, SI.
_SHIFTS: Final = re.compile(rb"[\x0e\x0f\x1b]")


def _unescaped_markup(data: bytes) -> bytes:
    """``data`` with its HTML character references decoded, as the attributes of a
    ``<meta>`` are read before its charset (other characters as they were: only the
    ASCII a label is made of matters)."""
    return html_unescape(data.decode("latin-1")).encode("latin-1", "replace")


#: What a browser's detector may take text for when the part's label is missing or unknown
#: to browsers: the double-byte charsets whose second bytes may be ASCII (a "\\" hidden in a
#: character), each read both ways.
_DETECTED: Final = ("shift_jis", "big5", "gbk", "euc-kr")


def _detected(decoded: bytes) -> bool:
    """Whether a browser may guess the charset of this text: it is neither ASCII nor UTF-8.
    A ``charset=`` in it does not rule that out (one outside a ``<meta>``, or past the
    part the prescan reads, is no declaration to a browser; "charset" anywhere would
    otherwise turn these views off)."""
    return not decoded.isascii() and not _strict(decoded, "utf-8")


def _detection_views(decoded: bytes) -> list[bytes]:
    """The views of :data:`_DETECTED`: by the label's ranges and as WHATWG resynchronises."""
    return [view for name in _DETECTED
            for view in (scan_view(decoded, name), _resynchronised_view(decoded, name))]


def _declared_views(decoded: bytes) -> list[bytes] | None:
    """The views of the charsets with their own view (multi-byte trail bytes in the
    ASCII range, ISO-2022) that a charset declaration in the text names, as a client
    honouring it reads the part; None when one of them has none (ISO-2022 shifts that
    join characters: :func:`escapes_join`).  Any ``charset=`` counts, in a ``<meta>`` or
    not (a superset), and an XML declaration's ``encoding`` at the very start (Blink reads
    it when the label is missing or unknown); ASCII text without ESC, SO or SI reads the
    same in every such charset."""
    if decoded.isascii() and not _SHIFTS.search(decoded):
        return []
    names: set[str] = set()  # at most the few charsets with their own view
    low = decoded.lower()
    # and as a <meta> is read: its attributes' character references decoded first
    # (<meta charset="&#115;hift_jis">; named ones before lower-casing: &Tab;, &UnderBar;)
    for text in (low, _unescaped_markup(decoded).lower()) if b"&" in low else (low,):
        at = text.find(b"charset")
        while at >= 0:
            if (match := _DECLARED.match(text, at)) is not None:
                _own_view_names(match.group(1), names)
            at = text.find(b"charset", at + len(b"charset"))
    if low.startswith(b"<?xml"):  # an XML declaration's encoding (and any later one in it)
        end = low.find(b">")
        for match in _XML_ENCODING.finditer(low, 0, len(low) if end < 0 else end):
            _own_view_names(match.group(1), names)
    return _named_views(decoded, names)


def _named_views(decoded: bytes, names: set[str]) -> list[bytes] | None:
    """The views of the charsets ``names`` (each with a view of its own) as their readers
    make them: the label's ranges, as WHATWG resynchronises lying bytes, WHATWG's
    ISO-2022-JP; None when ISO-2022 shifts join characters (:func:`escapes_join`)."""
    views: list[bytes] = []
    for name in sorted(names):
        if escapes_join(decoded, name):
            return None
        views.append(scan_view(decoded, name))
        if _CHARSETS[name].kind in _PAIRS and not looks_valid(decoded, name):
            views.append(_resynchronised_view(decoded, name))  # as browsers resynchronise
        if _CHARSETS[name].kind == "2022jp" and (
                whatwg := _iso2022jp_whatwg_view(decoded)) is not None:
            views.append(whatwg)
    return views


def _own_view_names(label: bytes, names: set[str]) -> None:
    """Add the charsets with their own view that ``label`` names (as mail software and as
    browsers read it) to ``names``."""
    text = label.decode("ascii", "replace")
    webmail = roundcube_name(text)
    for name in (normalise_charset(text), _BROWSER_NAMES.get(text, UNKNOWN_CHARSET),
                 normalise_charset(webmail) if webmail else UNKNOWN_CHARSET):
        if _CHARSETS[name].kind in _OWN_VIEW:
            names.add(name)


def to_utf8(decoded: bytes, charset: str) -> bytes:
    """The UTF-8 transcoding of a part in a transcoded charset, to scan and edit as ``utf-8``.

    Lenient (undecodable bytes become U+FFFD); a leading byte order mark is
    dropped (:func:`has_bom` remembers it); UTF-16/32 lone surrogates are kept
    (as their 3-byte UTF-8-style forms, so the round trip is exact).  The bare
    ``utf-16``/``utf-32`` labels are resolved by :func:`effective_charset`.
    Raises :class:`ValueError` for an ASCII-compatible charset.

    >>> to_utf8(b"+ADw-img src=x+AD4-", "utf-7")
    b'<img src=x>'
    """
    return _text(decoded, _transcoded(charset)).encode("utf-8", "surrogatepass")


def from_utf8(data: bytes, charset: str, *, bom: bool) -> bytes:
    """Encode an (edited) UTF-8 transcoding back to ``charset``, with a BOM if ``bom``.

    ``charset`` must be definite (what :func:`effective_charset` returns): a bare
    ``utf-16``/``utf-32`` has no byte order and raises :class:`ValueError`, as
    does an ASCII-compatible charset.  For UTF-16/32 ``from_utf8(to_utf8(b, c),
    c, bom=has_bom(b, c)) == b`` for any well-formed ``b``; UTF-7 and HZ
    encodings are not unique, so only the text is the same.  Characters HZ
    lacks become ``&#NNNN;``.

    >>> from_utf8(b"<a>", "utf-16be", bom=True)
    b'\\xfe\\xff\\x00<\\x00a\\x00>'
    """
    info = _transcoded(charset)
    if info.name in ("utf-16", "utf-32"):
        raise ValueError(f"{charset!r} has no byte order: pass effective_charset()")
    try:
        text = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    if bom:
        text = "\ufeff" + text
    if info.name == "hz-gb-2312":
        return _hz_encode(text)
    return text.encode(info.encoder, "surrogatepass")


_HZ_GB: Final = re.compile(rb"[\x80-\xff]+")
_SEVEN_BITS: Final = bytes(b & 0x7F for b in range(256))


def _hz_encode(text: str, errors: str = "xmlcharrefreplace") -> bytes:
    """HZ (RFC 1843): ASCII with ``~~`` for ``~``, GB2312 runs 7-bit inside ``~{`` ... ``~}``.

    CPython's own ``hz`` encoder sometimes drops the second ``~`` of ``~~`` at a
    buffer boundary (3.11), which would turn ``~x`` into an escape.
    """
    gb = text.replace("~", "~~").encode("gb2312", errors)
    return _HZ_GB.sub(lambda m: b"~{" + m.group().translate(_SEVEN_BITS) + b"~}", gb)


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


_HIGH: Final = re.compile(rb"[\x80-\xff]")
#: The longest text read character by character (:func:`_resynchronised_view`: about 6 us
#: a byte for the four guesses at worst); a longer one that needs it has no reading (held).
MAX_RESYNCHRONISED: Final = 256 * 1024


class _Unreadable(Exception):
    """A text too long to be read every way it needs (:data:`MAX_RESYNCHRONISED`)."""
#: The most bytes one character takes in the double-byte charsets (GB18030: four).
_MAX_CHAR: Final = 4


def _resynchronised_view(data: bytes, charset: str) -> bytes:
    """The view of double-byte text whose bytes are not all valid in their label, as
    WHATWG's decoders (browsers, Thunderbird) read it: character by character, and after
    an invalid pair whose second byte is ASCII, that byte read again as ASCII (a
    non-ASCII one is part of the error).

    :func:`scan_view` masks by byte ranges alone, so a lying text's valid and invalid
    pairs look alike in it (both ``\\`` masked), and the bytes themselves show both
    (``\\`` twice); a browser masks one and not the other, which can close a CSS string
    the other two views leave open.  Pairs are checked with Python's codec of the label
    (the WHATWG indexes' closest kin); only lying text is read this way (slowly, one
    character at a time), as one more view among the others.

    >>> _resynchronised_view(b'"\\x95\\\\" "\\x85\\\\"', "shift_jis")
    b'"\\x80\\x80" "\\x80\\\\"'
    """
    if len(data) > MAX_RESYNCHRONISED:
        raise _Unreadable
    info = _info(charset)
    decoder, leads = info.decoder, _PAIRS[info.kind][0]
    out = bytearray(data)
    pos = 0
    while (high := _HIGH.search(data, pos)) is not None:
        pos = high.start()
        size = _character_size(data, pos, decoder)
        if not size:  # an error: a lead byte takes a non-ASCII byte after it along
            size = 2 if (leads[data[pos]] == 0xFF and pos + 1 < len(data)
                         and data[pos + 1] >= 0x80) else 1
        out[pos:pos + size] = bytes([_MASK]) * size
        pos += size
    return bytes(out)


def _character_size(data: bytes, pos: int, decoder: str) -> int:
    """How many bytes the valid character at ``pos`` takes in ``decoder``; 0: none."""
    for size in range(1, _MAX_CHAR + 1):
        if pos + size > len(data):
            return 0
        try:
            data[pos:pos + size].decode(decoder)
        except UnicodeDecodeError as exc:
            if exc.reason.startswith("incomplete") or exc.end >= size:
                continue  # a lead byte: the character goes on
            return 0
        return size
    return 0


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


#: ISO-2022-JP's SO and SI (0x0E, 0x0F): no shift in it, a decoding error (U+FFFD) to
#: WHATWG's decoder, so a character that is no ASCII in every view (kept as a control
#: byte, a URL's ``\x0e`` would end it as a bad url where Chromium reads on).
_JP_SO_SI: Final = bytes(_MASK if b in (0x0E, 0x0F) else b for b in range(256))


def _iso2022jp_view(data: bytes) -> bytes:
    """Mask escape sequences, everything written in a non-ASCII G0 set, SO and SI."""
    if b"\x0e" in data or b"\x0f" in data:
        data = data.translate(_JP_SO_SI)
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


#: The escape sequences the WHATWG iso-2022-jp decoder (browsers, Thunderbird) knows, and
#: the state each selects; any other ESC is an error and what follows stays in the state.
_WHATWG_JP: Final = {b"(B": "ascii", b"(J": "roman", b"(I": "masked", b"$@": "masked",
                     b"$B": "masked"}
#: JIS X 0201 Roman: 0x5C is the yen sign and 0x7E the overline, not "\\" and "~".
_ROMAN: Final = bytes(b | _MASK if b in (0x5C, 0x7E) else b for b in range(256))


def _iso2022jp_whatwg_view(data: bytes) -> bytes | None:
    """The view of ``data`` as the WHATWG iso-2022-jp decoder reads it; None when that
    is :func:`scan_view` 's (every escape is ``ESC $ B``, ``ESC $ @`` or ``ESC ( B``).

    :func:`scan_view` follows the readers that know ISO-2022-JP-2 and its extensions
    (Python, iconv): ``ESC $ A`` (GB 2312), ``ESC $ ( C`` (KS C 5601), ``ESC $ ( D``
    (JIS X 0212), ``ESC $ ( Q`` (JIS X 0213) and the single shift ``ESC N`` hide what
    follows, and JIS X 0201 Roman (``ESC ( J``) is read as ASCII, as some clients do.
    Browsers read those escapes as an error and what follows in the mode they were in
    (ASCII: markup), and Roman's ``0x5C`` as a yen sign (never a CSS escape).  Both
    views are scanned (:attr:`Reading.others`).

    >>> _iso2022jp_whatwg_view(b"<p>\x1b$A<img>\x1b(B")
    b'<p>\x80$A<img>\x80\x80\x80'
    >>> _iso2022jp_whatwg_view(b"\x1b$BF|\x1b(B<a>") is None
    True
    """
    escapes = data.count(b"\x1b")
    if escapes == data.count(b"\x1b$B") + data.count(b"\x1b$@") + data.count(b"\x1b(B"):
        return None
    out = bytearray(data.translate(_JP_SO_SI))
    state, run_start = "ascii", 0
    esc = data.find(b"\x1b")
    while True:
        stop = len(data) if esc < 0 else esc
        if state == "masked":
            out[run_start:stop] = bytes([_MASK]) * (stop - run_start)
        elif state == "roman":
            out[run_start:stop] = data[run_start:stop].translate(_ROMAN)
        if esc < 0:
            return bytes(out)
        selected = _WHATWG_JP.get(data[esc + 1:esc + 3])
        end = esc + 3 if selected is not None else esc + 1
        out[esc:end] = bytes([_MASK]) * (end - esc)
        state = selected or state
        run_start = end
        esc = data.find(b"\x1b", end)


#: For each reading of ISO-2022-JP, the escape sequences it outputs nothing for and the
#: set each selects (True: bytes after it are ASCII or JIS-Roman characters; False: a
#: double-byte set or katakana; None: no change, a G2 designation).  Python and iconv
#: (the scan view): every designation; WHATWG (browsers, Thunderbird): its five, and
#: only after a character (an escape right after another is an error, a character).
_JP_SILENT_PY: Final = {**dict.fromkeys(_JP_OTHER, "other"), **dict.fromkeys(_JP_G2, None),
                        b"\x1b(B": "ascii", b"\x1b(J": "roman"}
_JP_SILENT_WHATWG: Final = {b"\x1b" + seq: "other" if state == "masked" else state
                            for seq, state in _WHATWG_JP.items()}
#: JIS-Roman's yen sign and overline (0x5C, 0x7E): not ASCII to Python's codec nor to
#: WHATWG's, so a character that stands between shifts (``ESC ( J \ ESC ( B`` is how
#: Python's encoder writes "¥").
_ROMAN_OWN: Final = b"\\~"

def escapes_join(decoded: bytes, charset: str) -> bool:
    """Whether ISO-2022 shifts that output nothing stand alone between ASCII characters.

    A reader outputs nothing for an escape sequence (a designation: ``ESC ( B``) or for
    an empty ``SO``...``SI`` (ISO-2022-KR), so the characters on either side join:
    ``s ESC ( B rc`` is ``src`` to Chromium, Thunderbird and Python alike.  The scan
    view keeps every offset and so masks those bytes instead, which splits the token
    (``s\x80\x80\x80rc``) where every reader finds one: no same-length view shows such
    text, and :func:`reading` gives it none (the copy is held).  A character between (a
    kanji, a decoding error) is one in every reading too, where the view's masked bytes
    stand: that is the usual shape, ``text ESC $ B kanji ESC ( B text``, and it is read,
    as is a yen sign in JIS-Roman (``ESC ( J \\ ESC ( B``: "¥" to Python and WHATWG).
    Masked bytes between ``>`` and ``<``, at the start before whitespace or ``<`` or at
    the end after whitespace or ``>`` join no token either (ISO-2022-KR's ``ESC $ ) C``
    at the start); any other neighbour may be part of one, whitespace too (``<img
    ESC ( B src=``: the view's attribute would be ``\x80\x80\x80src``; ``src= ESC ( B
    URL``: its value the masked bytes; at the start, ``ESC ( B @import`` in a style
    sheet).

    >>> escapes_join(b"<img s\x1b(Brc=x>", "iso-2022-jp")
    True
    >>> escapes_join(b"<p>\x1b$BF|\x1b(B<img src=x>", "iso-2022-jp")
    False
    >>> escapes_join(b"\x1b$)C<img s\x0e\x0frc=x>", "iso-2022-kr")
    True
    """
    kind = _info(charset).kind
    if kind == "2022kr":
        return _kr_joins(decoded)
    return kind == "2022jp" and b"\x1b" in decoded and (
        _jp_joins(decoded, _JP_SILENT_PY, single=False)
        or _jp_joins(decoded, _JP_SILENT_WHATWG, single=True))


def _jp_joins(data: bytes, silent: Mapping[bytes, str | None], *, single: bool) -> bool:
    """:func:`escapes_join` in one reading of ISO-2022-JP: ``silent`` (its escapes that
    output nothing, and the set each selects: ``ascii``, ``roman``, ``other``; None: no
    change), ``single``: only one at a time (WHATWG: a second in a row is an error)."""
    mode = "ascii"  # the set ASCII-range bytes are read in before the first escape
    esc = data.find(b"\x1b")
    while esc >= 0:
        before, end, count = mode, esc, 0
        while end < len(data) and data[end] == 0x1B:
            match = _ESCAPE.match(data, end)
            seq = match.group() if match else b"\x1b"
            if seq not in silent or (single and count):
                break  # a character (an error, a single shift): no join across it
            mode = silent[seq] or mode
            end, count = end + len(seq), count + 1
        if count and _letter(data, esc - 1, before) and (
                end == len(data) or _letter(data, end, mode)) and _joined(data, esc, end):
            return True
        esc = data.find(b"\x1b", max(end, esc + 1))
    return False


def _letter(data: bytes, at: int, mode: str) -> bool:
    """Whether ``data[at]``, read in ``mode``, is an ASCII character (or the text's start):
    not SO, SI or the ESC of a sequence that prints (an error, a single shift), which
    every reader shows as some other character."""
    if at < 0:
        return True
    if data[at] in _NOT_LETTERS:
        return False
    return mode == "ascii" or (mode == "roman" and data[at] not in _ROMAN_OWN)


_NOT_LETTERS: Final = frozenset(b"\x0e\x0f\x1b")


#: ISO-2022-KR's runs that output nothing: designations and empty shifts, back to back.
_KR_SILENT: Final = re.compile(rb"\x1b[\x20-\x2f]{0,3}[\x30-\x7e]?|\x0e\x0f")


def _kr_joins(data: bytes) -> bool:
    """:func:`escapes_join` for ISO-2022-KR: outside ``SO``...``SI`` bytes are ASCII.

    Each designation or empty shift is matched alone and back-to-back ones joined into a
    run here (one pattern repeated over a long run keeps a backtracking state per
    repetition: a busy machine read 4x the input as 17x the time)."""
    if b"\x1b" not in data and b"\x0e" not in data:
        return False
    shift_out = shift_in = -1  # the last SO and SI before the run, found once each
    scanned = 0
    start = end = -1  # the run being joined
    for match in (*_KR_SILENT.finditer(data), None):
        if match is not None and match.start() == end:
            end = match.end()
            continue
        if end >= 0:
            # within SO...SI the bytes before are KS C 5601 (a character), not ASCII;
            # after a run that ends at SO, a character
            shift_out = max(shift_out, data.rfind(b"\x0e", scanned, start))
            shift_in = max(shift_in, data.rfind(b"\x0f", scanned, start))
            scanned = start
            if shift_out <= shift_in and data[end:end + 1] != b"\x0e" and _joined(
                    data, start, end):
                return True
        if match is not None:
            start, end = match.span()
    return False


_BLANK: Final = frozenset(b"\t\n\f\r ")


def _joined(data: bytes, start: int, end: int) -> bool:
    """Whether ASCII bytes next to the masked ``data[start:end]`` may join a token
    across it: unless it stands between ``>`` and ``<``, or at the text's start before
    whitespace or ``<``, or at its end after whitespace or ``>`` (no token there for
    the masked bytes to join).  Whitespace alone is no border: ``src= ESC ( B URL`` is
    ``src=URL`` to a browser, whose view would give ``src`` the masked bytes for a value."""
    before = data[start - 1] if start else None
    after = data[end] if end < len(data) else None
    if before is None:
        return not (after is None or after in _BLANK or after == 0x3C)
    if after is None:
        return not (before in _BLANK or before == 0x3E)
    return not (before == 0x3E and after == 0x3C)


def _iso2022kr_view(data: bytes) -> bytes:
    if b"\x1b" not in data and b"\x0e" not in data:
        return data
    return _KR_RUN.sub(lambda m: bytes([_MASK]) * (m.end() - m.start()), data)


#: The kinds whose :func:`scan_view` is not the bytes themselves.  For every other
#: (non-transcoded) kind both views are ``decoded``, so :func:`reading` does not ask
#: :func:`looks_valid`: its answer would change nothing, and for UTF-8 it is a strict
#: decode of the whole part (25 us of the 70 KB benchmark newsletter's ~1.2 ms).
_OWN_VIEW: Final = frozenset({"sjis", "gbk", "big5", "uhc", "2022jp", "2022kr"})


def scan_view(decoded: bytes, charset: str) -> bytes:
    """A same-length view of ``decoded`` whose bytes below 0x80 are exactly its ASCII characters.

    Identity for UTF-8, EUC-JP, ASCII-compatible single-byte charsets and unknown
    labels.  A transcoded charset's own bytes have no ASCII structure: they give
    an all-0x80 view; the engine scans ``to_utf8(decoded, charset)`` with
    charset ``"utf-8"`` instead.  Never raises.

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
    if info.kind == "transcoded":
        return bytes([_MASK]) * len(decoded)
    return decoded


def lenient_view(decoded: bytes, charset: str) -> bytes:
    """The view to scan when ``looks_valid`` is False (a lying label): the bytes themselves.

    Clients disagree about bytes that are not valid in their label: a browser
    engine resynchronises after an invalid sequence and reads a following ASCII
    byte as ASCII, others give up on the label and render the part as UTF-8 or
    windows-1252, some guess another charset.  Every ASCII-compatible reading
    shows an ASCII byte as that character at least when it is not inside a
    valid multi-byte character, so the identity view finds every tag, attribute
    and URL any of them can see, plus possibly a few spurious ones made of trail
    bytes (``@``, letters, ``[\\]^_`{|}~``, digits; never ``<``, ``>``, quotes,
    ``=`` or space).  For a refused recipient a missed tracker is a leak while a
    spurious match at worst removes a few bytes of an already garbled
    character, so the superset is the safe side.  One exception: a valid
    character whose trail byte is ``\\`` just before a CSS string's closing quote
    (Shift_JIS ``表``, ``能``, ``ソ``) escapes that quote in this view, so a
    ``url()`` later on the same line is read as string text; so :func:`reading`
    gives :func:`scan_view` as a further view (:attr:`Reading.others`), and the
    engine keeps the precise path only when both find the same references.

    A transcoded charset is never scanned as bytes: :class:`ValueError`.

    >>> lenient_view(b"<p>\\x82</p>", "shift_jis")
    b'<p>\\x82</p>'
    """
    if _info(charset).kind == "transcoded":
        raise ValueError(f"scan the UTF-8 transcoding of {charset!r}, not its bytes")
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
    circled digits pass.  An unknown label (scanned as ASCII) and
    ``x-user-defined`` accept any bytes.  A transcoded charset's bytes are never
    a scan input (False): its UTF-8 transcoding is checked as ``utf-8``.

    >>> looks_valid("café".encode(), "utf-8"), looks_valid("café".encode("latin-1"), "utf-8")
    (True, False)
    """
    info = _info(charset)
    if info.kind in ("lenient", "xud"):
        return True
    if info.kind == "transcoded":
        return False
    if info.kind == "ascii":
        return decoded.isascii() or _strict(decoded, "utf-8")
    if info.kind == "2022jp":
        allowed = _JP_ASCII | _JP_OTHER | _JP_G2 | _JP_SHIFT
        return decoded.isascii() and all(e in allowed for e in _ESCAPE.findall(decoded))
    if info.kind == "2022kr":
        return decoded.isascii() and all(e == b"\x1b$)C" for e in _ESCAPE.findall(decoded))
    return _strict(decoded, info.decoder)


# x-user-defined (WHATWG): ASCII, then bytes 0x80-0xFF as U+F780-U+F7FF.
_XUD_DECODE: Final = "".join(map(chr, range(0x80))) + "".join(map(chr, range(0xF780, 0xF800)))
_XUD_ENCODE: Final = codecs.charmap_build(_XUD_DECODE)


def decode_text(raw: bytes, charset: str) -> str:
    """Decode a snippet (a URL, alt text) for reading; undecodable bytes become U+FFFD.

    ``us-ascii`` and unknown labels are read as UTF-8.  A transcoded charset is
    read in its own encoding (the engine reads its transcoding as ``utf-8``).

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
    elif info.kind == "transcoded":
        return _text(raw, info)
    elif info.kind == "xud":
        return codecs.charmap_decode(raw, "strict", _XUD_DECODE)[0]
    return raw.decode(info.decoder, "replace")


def encode_text(text: str, charset: str, *, errors: str = "xmlcharrefreplace") -> bytes:
    """Encode text to insert into a part; characters the charset lacks become ``&#NNNN;``.

    ISO-2022-JP output always ends in ASCII mode.  An unknown label gets ASCII
    (the rest as ``&#NNNN;``).  A transcoded charset gets its own encoding
    without a byte order mark (big-endian for bare ``utf-16``/``utf-32``), but
    the engine inserts into the UTF-8 transcoding, i.e. with ``"utf-8"``.

    >>> encode_text("日本 €", "iso-2022-jp"), encode_text("Désolé", "x-unknown")
    (b'\\x1b$BF|K\\\\\\x1b(B &#8364;', b'D&#233;sol&#233;')
    """
    info = _info(charset)
    if info.kind == "xud":
        return codecs.charmap_encode(text, errors, _XUD_ENCODE)[0]
    if info.name == "hz-gb-2312":
        return _hz_encode(text, errors)
    return text.encode(info.encoder, errors)
