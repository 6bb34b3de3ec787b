"""The charset other mail software decodes a part by, given its label.

Browsers and Thunderbird read a label by the WHATWG Encoding Standard
(:mod:`.charsets`).  Webmail converts a part to UTF-8 before its HTML engine sees
it, by names of its own: Roundcube cleans a label up before it asks mbstring or
iconv (a leading ``x-`` goes, anything with ``u..7``/``8``/``16``/``32`` in it is
that UTF, Windows' numeric charset ids are code pages, ``unicode`` is UTF-8,
``iso-2022-jp`` the Microsoft variant).  :func:`roundcube_name` says which charset
that is, as this project names it where it knows the charset (else the name as
Roundcube passes it on, lower-cased), so :func:`.charsets.reading` can read the part
that way too.  Written from Roundcube's documented behaviour (``rcube_charset``);
nothing of its code is used.

>>> roundcube_name("x-utf-7"), roundcube_name("UTF8"), roundcube_name("unicode-1-1-utf-7")
('utf-7', 'utf-8', 'utf-7')
>>> roundcube_name("x-iso-2022-jp"), roundcube_name("128"), roundcube_name("iso-8859-1")
('iso-2022-jp', 'shift_jis', 'windows-1252')
>>> roundcube_name("ebcdic-us"), roundcube_name("binary")
('ebcdic-us', None)
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["roundcube_name"]

#: The clean-up, in order: leading punctuation, a ``$`` suffix, RFC 1641's
#: ``UNICODE-1-1-`` prefix, ``X-``, an RFC 2231 language suffix.
_CLEAN_UP: Final = (re.compile(r"^[^0-9A-Z]+"), re.compile(r"\$.*$"),
                    re.compile(r"UNICODE-1-1-*"), re.compile(r"^X-"), re.compile(r"\*.*$"))
_NOT_ALNUM: Final = re.compile(r"[^A-Z0-9]")
#: Labels (letters and digits only) it maps to a charset of its choice, in this project's
#: names where one exists: Windows' numeric charset ids among them.
_ALIASES: Final = {
    "USASCII": "windows-1252", "ANSIX31101983": "windows-1252", "ANSIX341968": "windows-1252",
    "UNKNOWN8BIT": "iso-8859-15", "UNKNOWN": "iso-8859-15", "USERDEFINED": "iso-8859-15",
    "KSC56011987": "euc-kr", "GB2312": "gbk", "GB231280": "gbk", "UNICODE": "utf-8",
    "UTF7IMAP": "utf7-imap", "TIS620": "windows-874", "ISO88599": "windows-1254",
    "ISO885911": "windows-874", "MACROMAN": "macintosh", "77": "macintosh",
    "128": "shift_jis", "129": "euc-kr", "130": "johab", "134": "gbk", "136": "big5",
    "161": "windows-1253", "162": "windows-1254", "163": "windows-1258",
    "177": "windows-1255", "178": "windows-1256", "186": "windows-1257",
    "204": "windows-1251", "222": "windows-874", "238": "windows-1250", "MS950": "big5",
    "WINDOWS31J": "shift_jis", "WINDOWS949": "euc-kr", "WINDOWS1257": "iso-8859-13",
    "ISO2022JP": "iso-2022-jp",
}
_UTF: Final = re.compile(r"U[A-Z][A-Z](7|8|16|32)(BE|LE)*")
_ISO8859: Final = re.compile(r"ISO8859([0-9]{0,2})")
_WINDOWS: Final = re.compile(r"(?:WIN|WINDOWS)([0-9]+)")
_LATIN: Final = re.compile(r"LATIN(.*)")
_LATIN_PARTS: Final = {"2": 2, "3": 3, "4": 4, "5": 9, "6": 10, "7": 13, "8": 14, "9": 15,
                       "10": 16, "ARABIC": 6, "CYRILLIC": 5, "GREEK": 7, "GREEK1": 7,
                       "HEBREW": 8}


@lru_cache(maxsize=256)
def roundcube_name(label: str | None) -> str | None:
    """The charset Roundcube converts a part labelled ``label`` from, lower-cased (without
    a label: its default, ISO-8859-1 read as windows-1252); None for ``binary`` (not
    converted)."""
    if label is None:
        return "windows-1252"
    name = label.strip().strip("\"'").upper()
    for pattern in _CLEAN_UP:
        name = pattern.sub("", name)
    if name == "BINARY":
        return None
    letters = _NOT_ALNUM.sub("", name)
    if letters in _ALIASES:
        return _ALIASES[letters]
    if (utf := _UTF.search(letters)) is not None:
        return f"utf-{utf[1]}{(utf[2] or '').lower()}"
    if (iso := _ISO8859.search(letters)) is not None:
        part = iso[1] or "1"
        return "windows-1252" if part == "1" else f"iso-8859-{part}"
    if (windows := _WINDOWS.search(letters)) is not None:
        return f"windows-{windows[1]}"
    if (latin := _LATIN.search(letters)) is not None:
        if latin[1] == "1":
            return "windows-1252"
        if latin[1] in _LATIN_PARTS:
            return f"iso-8859-{_LATIN_PARTS[latin[1]]}"
    return name.lower()
