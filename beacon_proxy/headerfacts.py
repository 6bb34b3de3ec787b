"""The facts the relay reads from a message's header: one parser for each.

``List-Id`` decides per-list suppressions, so every path must read the same
label from the same message: the SMTP side when it queues a message (into
the envelope), the rewrite engine and ``beacon-proxy scan`` offline.  Two
readers with different rules disagreed on real mail (a folded field, a
non-ASCII display name, a label without angle brackets), and per-list
suppressions were skipped for such messages.  Both call :func:`list_id` now.

The rules, lenient as mail clients are:

* the header section ends at the first empty line (CRLF or LF line ends);
* the first field of the name counts (a duplicate is ignored), its folds
  unfolded, its bytes read as UTF-8 (anything else as Latin-1);
* ``List-Id``: the label is the last ``<...>`` in the value (RFC 2919, after
  any display name, quoted or encoded); without angle brackets, the value
  itself when it is a plain label.  A label is 1-255 printable ASCII
  characters without space, ``<`` or ``>``;
* ``Message-ID``: the first ``<...>`` of the value, brackets included.

>>> list_id(b'List-Id: "Caf\\xc3\\xa9 news" \\r\\n <news.shop.example>\\r\\n\\r\\nbody')
'news.shop.example'
>>> list_id(b"List-Id: news.shop.example\\n\\n"), list_id(b"Subject: none\\r\\n\\r\\n")
('news.shop.example', None)
>>> message_id(b"Message-ID:\\r\\n <1@example.org> (comment)\\r\\n\\r\\n")
'<1@example.org>'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["field", "header_block", "list_id", "message_id"]

MAX_HEADER: Final = 1 << 20  # bytes of header section searched at most
_LABEL: Final = re.compile(r"[!-;=?-~]{1,255}")  # RFC 2919 list-label characters, no < >
_BRACKETED_LABEL: Final = re.compile(r"<\s*([!-;=?-~]{1,255})\s*>")
_BRACKETED_ID: Final = re.compile(r"<[!-;=?-~]{1,250}>")
_FOLD: Final = re.compile(rb"\r?\n(?=[ \t])")


def header_block(data: bytes) -> bytes:
    """The header section of ``data``: up to the first empty line (CRLF or LF)."""
    if data.startswith((b"\r\n", b"\n")):
        return b""
    crlf = data.find(b"\r\n\r\n", 0, MAX_HEADER)
    lf = data.find(b"\n\n", 0, MAX_HEADER if crlf < 0 else crlf)
    if lf >= 0:
        return data[: lf + 1]
    return data[: crlf + 2] if crlf >= 0 else data[:MAX_HEADER]


def field(header: bytes, name: str) -> str | None:
    """The first ``name`` field's value (unfolded, stripped), or None when absent."""
    start = _field_start(name).search(header)
    if start is None:
        return None
    end = start.end()
    while True:  # the field runs to the first line break not followed by a fold
        nl = header.find(b"\n", end)
        if nl < 0 or header[nl + 1 : nl + 2] not in (b" ", b"\t"):
            end = len(header) if nl < 0 else nl
            break
        end = nl + 1
    raw = _FOLD.sub(b"", header[start.end() : end]).strip(b" \t\r\n")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@lru_cache(maxsize=8)
def _field_start(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?:\A|\n)" + re.escape(name.encode("ascii")) + rb"[ \t]*:",
                      re.IGNORECASE)


def list_id(header: bytes) -> str | None:
    """The ``List-Id`` label (see the module docstring), or None."""
    value = field(header_block(header), "list-id")
    if not value:
        return None
    labels = _BRACKETED_LABEL.findall(value)
    if labels:
        return str(labels[-1])
    return value if _LABEL.fullmatch(value) else None


def message_id(header: bytes) -> str | None:
    """The ``Message-ID`` (with its angle brackets), or None."""
    value = field(header_block(header), "message-id")
    found = _BRACKETED_ID.search(value) if value else None
    return found.group() if found else None
