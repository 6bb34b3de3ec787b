"""Checks on the message bytes received in DATA, and values taken from them.

The message given is already canonical (:func:`beacon_proxy.smtpd.data.canonical`):
every line ends in CRLF, a bare LF from the client having become CRLF
before anything here looks at it.  The header section is the bytes up to
and including the first empty line's CRLF (all of the message when there is
none).  What can still be left is a bare CR, which the handler refuses in the
header section.  Nothing here changes the message: the spool gets the
canonical bytes.  The facts read from the header (``List-Id``,
``Message-ID``) come from :mod:`beacon_proxy.headerfacts`, the one parser
every path uses.

    >>> msg = b"Subject: hi\\r\\nMessage-ID:\\r\\n <1@example.org>\\r\\n\\r\\nbody\\r\\n"
    >>> header_section(msg, 1024)
    b'Subject: hi\\r\\nMessage-ID:\\r\\n <1@example.org>\\r\\n'
    >>> has_bare_cr_or_lf(b"Subject: a\\rBcc: x\\r\\n")
    True
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_LINE",
    "has_bare_cr_or_lf",
    "header_section",
    "line_number",
    "long_line",
    "printable_ascii",
]

MAX_LINE = 998  # octets before CRLF: RFC 5322 2.1.1, RFC 5321 4.5.3.1.6 (1000 with CRLF)

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


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


def long_line(data: bytes, limit: int = MAX_LINE) -> int | None:
    r"""The offset where the first line longer than ``limit`` octets starts, or ``None``.

    Lines end at any CR or LF, as the courier sends a bare CR as a line end.
    Each step looks at the next ``limit + 1`` octets from a line start for their
    last LF (for their last CR only when they hold no LF: one ``rfind`` a step in
    a message of CRLF lines, not two); every line that starts before that break
    ends at it or earlier, so it is no longer than ``limit``.  A step that finds
    no break has found the line; one that jumps to an LF has no LF left in the
    window, so within three steps the start moves past the first window's end:
    the work is linear in ``len(data)``, in C, with a few Python steps per
    ``limit`` octets; nothing is copied.

    >>> long_line(b"ab\r\nabcd\r\n", limit=3), long_line(b"ab\r\nabc\rabc\r\n", limit=3)
    (4, None)
    """
    start, end = 0, len(data)
    while end - start > limit:
        stop = start + limit + 1  # a window of limit + 1 octets from a line start
        brk = data.rfind(b"\n", start, stop)
        if brk < 0:
            brk = data.rfind(b"\r", start, stop)
            if brk < 0:
                return start
        start = brk + 1
    return None


def line_number(data: bytes, offset: int) -> int:
    r"""The 1-based line (CRLF line ends) ``offset`` is on, for replies and logs.

    >>> line_number(b"a\r\nb\r\nc", 6)
    3
    """
    return data.count(b"\n", 0, offset) + 1


def printable_ascii(text: str, limit: int = 255) -> str:
    """``text`` with each character outside printable ASCII replaced by ``?``, cut to ``limit``.

    >>> printable_ascii("mx.example.org\\udcff\\x00")
    'mx.example.org??'
    """
    return _NOT_PRINTABLE.sub("?", text[:limit])
