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
    "has_bare_cr_or_lf",
    "header_section",
    "printable_ascii",
]

MAX_HEADER_LINE = 998  # RFC 5322 2.1.1

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


def printable_ascii(text: str, limit: int = 255) -> str:
    """``text`` with each character outside printable ASCII replaced by ``?``, cut to ``limit``.

    >>> printable_ascii("mx.example.org\\udcff\\x00")
    'mx.example.org??'
    """
    return _NOT_PRINTABLE.sub("?", text[:limit])
