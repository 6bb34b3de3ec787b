"""Checks on the message bytes received in DATA, and values taken from them.

The message given is already canonical (:func:`beacon_proxy.smtpd.data.canonical`):
every line ends in CRLF, a bare LF from the client having become CRLF
before anything here looks at it.  The header section is the bytes up to
and including the first empty line's CRLF (all of the message when there is
none).  What can still be left is a bare CR, which the handler refuses in the
header section.  Nothing here changes the message: the spool gets the
canonical bytes.

    >>> msg = b"Subject: hi\\r\\nMessage-ID:\\r\\n <1@example.org>\\r\\n\\r\\nbody\\r\\n"
    >>> header_section(msg, 1024)
    b'Subject: hi\\r\\nMessage-ID:\\r\\n <1@example.org>\\r\\n'
    >>> has_bare_cr_or_lf(b"Subject: a\\rBcc: x\\r\\n"), message_id(header_section(msg, 1024))
    (True, '<1@example.org>')
"""

from __future__ import annotations

import re

__all__ = [
    "field_value",
    "has_bare_cr_or_lf",
    "header_section",
    "list_id",
    "message_id",
    "printable_ascii",
]

MAX_HEADER_LINE = 998  # RFC 5322 2.1.1

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_LIST_LABEL = re.compile(r"<([!-;=?-~]{1,255})>")  # RFC 2919: <list-label>, no "<" or ">"


def header_section(data: bytes, limit: int) -> bytes | None:
    """The header section of ``data``, or ``None`` when it is longer than ``limit``.

    Only the first ``limit`` bytes (plus the separator) are searched.
    """
    if data.startswith(b"\r\n"):
        return b""
    end = data.find(b"\r\n\r\n", 0, limit + 2)
    if end >= 0:
        return data[: end + 2]
    return data if len(data) <= limit else None


def has_bare_cr_or_lf(header: bytes) -> bool:
    """True if a CR or LF appears other than as part of a CRLF pair.

    In a canonical message only a bare CR can be left; the check on LF is a
    guard for callers that pass something else.
    """
    rest = header.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest


def message_id(header: bytes) -> str | None:
    """The first Message-ID field's value (see :func:`field_value`)."""
    return field_value(header, "message-id")


def list_id(header: bytes) -> str | None:
    """The list label of the first List-Id field (RFC 2919), without the brackets.

    >>> list_id(b"List-Id: Shop news <news.shop.example>\\r\\n")
    'news.shop.example'
    """
    value = field_value(header, "list-id")
    m = _LIST_LABEL.search(value) if value is not None else None
    return m.group(1) if m else None


def field_value(header: bytes, name: str) -> str | None:
    """The first ``name`` field's value: unfolded, stripped, printable ASCII.

    ``None`` when there is none, or when the value is empty, longer than
    998 characters or not printable ASCII.  ``header`` must be free of bare
    CR/LF (see :func:`has_bare_cr_or_lf`).
    """
    start = re.compile(re.escape(name.encode("ascii")) + rb"[ \t]*:", re.IGNORECASE)
    lines = header.split(b"\r\n")
    for i, line in enumerate(lines):
        m = start.match(line)
        if m is None:
            continue
        parts = [line[m.end() :]]
        for cont in lines[i + 1 :]:
            if not cont.startswith((b" ", b"\t")):
                break
            parts.append(cont)
            if sum(map(len, parts)) > MAX_HEADER_LINE:
                return None
        value = b"".join(parts).strip(b" \t")
        if not value or len(value) > MAX_HEADER_LINE:
            return None
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        return None if _NOT_PRINTABLE.search(text) else text
    return None


def printable_ascii(text: str, limit: int = 255) -> str:
    """``text`` with each character outside printable ASCII replaced by ``?``, cut to ``limit``.

    >>> printable_ascii("mx.example.org\\udcff\\x00")
    'mx.example.org??'
    """
    return _NOT_PRINTABLE.sub("?", text[:limit])
