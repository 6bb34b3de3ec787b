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
* ``Message-ID``: the first ``<...>`` of the value, brackets included;
* the sender's RFC 8058 one-click URL: the first ``https`` URI in angle
  brackets of ``List-Unsubscribe``, only when ``List-Unsubscribe-Post`` says
  ``List-Unsubscribe=One-Click`` (without it the URL is for a browser, not a
  POST); printable ASCII, at most 1024 characters, a host and no user info.

>>> list_id(b'List-Id: "Caf\\xc3\\xa9 news" \\r\\n <news.shop.example>\\r\\n\\r\\nbody')
'news.shop.example'
>>> list_id(b"List-Id: news.shop.example\\n\\n"), list_id(b"Subject: none\\r\\n\\r\\n")
('news.shop.example', None)
>>> message_id(b"Message-ID:\\r\\n <1@example.org> (comment)\\r\\n\\r\\n")
'<1@example.org>'
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

__all__ = ["body_start", "field", "header_block", "list_id", "message_id", "one_click_url"]

MAX_HEADER: Final = 1 << 20  # bytes of header section searched at most
_LABEL: Final = re.compile(r"[!-;=?-~]{1,255}")  # RFC 2919 list-label characters, no < >
_BRACKETED_LABEL: Final = re.compile(r"<\s*([!-;=?-~]{1,255})\s*>")
_BRACKETED_ID: Final = re.compile(r"<[!-;=?-~]{1,250}>")
_FOLD: Final = re.compile(rb"\r?\n(?=[ \t])")
_EMPTY_LINE: Final = re.compile(rb"\n\r?\n")  # a line end, then an empty line
_URI: Final = re.compile(r"<\s*([^<>\s]{1,1024})\s*>")
_ONE_CLICK: Final = re.compile(r"\s*List-Unsubscribe\s*=\s*One-Click\s*", re.IGNORECASE)
_BLANKS_COLON: Final = re.compile(rb"[ \t]*+:")  # blanks, then the colon after a name
MAX_ONE_CLICK_URL: Final = 1024


def body_start(data: bytes, limit: int | None = None) -> int:
    r"""Where the body of ``data`` starts: after the first empty line; 0 without one
    (in the first ``limit`` bytes, that line included).

    The one search for the end of a header section (the relay's facts, the console's
    and ``queue show``'s header, the rewrite cache's split of header and body), with
    the MIME parser's rule (:mod:`beacon_proxy.rewrite.mime`): a line ends in CRLF or
    a bare LF, and so does the empty line, so after an LF it is ``\n`` or ``\r\n``.
    One ``re`` search, which skips from LF to LF in C and stops at the first empty
    line: 0.6 us of CPU for the 70 KB newsletter (a 500-byte header), CRLF or LF,
    where a ``find`` for each kind took 1.1 us with CRLF and 48 us with LF line ends
    (the search for the CRLF kind crossed the whole message).

    >>> [body_start(m) for m in (b"A: 1\r\n\r\nb", b"A: 1\n\nb", b"A: 1\n\r\nb", b"A: 1")]
    [8, 6, 7, 0]
    >>> body_start(b"\r\nbody"), body_start(b"\nbody"), body_start(b"A: 1\r\n\r\n", 7)
    (2, 1, 0)
    """
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
    found = _EMPTY_LINE.search(data, 0, len(data) if limit is None else limit)
    return 0 if found is None else found.end()


def header_block(data: bytes, limit: int = MAX_HEADER) -> bytes:
    r"""The header section of ``data``: up to the first empty line (:func:`body_start`),
    its last line's end included; the first ``limit`` bytes without one.

    >>> header_block(b"A: 1\r\n\r\nb"), header_block(b"A: 1\n\r\nb"), header_block(b"\r\nb")
    (b'A: 1\r\n', b'A: 1\n', b'')
    """
    start = body_start(data, limit)
    if not start:
        return data[:limit]
    return data[: start - 2 if data.endswith(b"\r\n", 0, start) else start - 1]


def field(header: bytes, name: str) -> str | None:
    """The first ``name`` field's value (unfolded, stripped), or None when absent."""
    value_start = _value_start(header, name)
    if value_start < 0:
        return None
    end = value_start
    while True:  # the field runs to the first line break not followed by a fold
        nl = header.find(b"\n", end)
        if nl < 0 or header[nl + 1 : nl + 2] not in (b" ", b"\t"):
            end = len(header) if nl < 0 else nl
            break
        end = nl + 1
    raw = _FOLD.sub(b"", header[value_start:end]).strip(b" \t\r\n")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


#: The last header :func:`_value_start` lowered, and its lowered bytes: the facts of one
#: message (Message-ID, List-Id, List-Unsubscribe and -Post) are read from one header.
_lowered: tuple[bytes, bytes] = (b"", b"")


def _value_start(header: bytes, name: str) -> int:
    r"""Where the value of the first ``name`` field starts (after its colon), or -1.

    What ``re.search(rb"(?:\A|\n)NAME[ \t]*:", header, re.IGNORECASE)`` finds (its
    ``end()``), with ``bytes.find`` in the ASCII-lowered header instead: an
    ``IGNORECASE`` pattern that starts with an alternation has no literal to skip
    to, so ``re`` tried it at every byte (3.4-5.5 us a field in a 500-byte header,
    four fields a message on the receive side).  ``bytes.lower`` folds ASCII only,
    as ``re.IGNORECASE`` does for a bytes pattern."""
    global _lowered
    last, lowered = _lowered
    if last is not header and last != header:
        lowered = header.lower()
        _lowered = (header, lowered)
    key = name.lower().encode("ascii")
    line_key = b"\n" + key
    # Candidates in order: the name at the very start, then after each LF.
    after = len(key) if lowered.startswith(key) else -1
    at = -1
    while True:
        if after >= 0:
            # The blanks before the colon, in C (a hostile header's 1000 blanks after a
            # name cost 3.4 times as much stepped over in Python).
            colon = _BLANKS_COLON.match(lowered, after)
            if colon is not None:
                return colon.end()
        at = lowered.find(line_key, at + 1)
        if at < 0:
            return -1
        after = at + len(line_key)


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


def one_click_url(header: bytes) -> str | None:
    """The sender's RFC 8058 one-click URL (see the module docstring), or None.

    >>> one_click_url(b"List-Unsubscribe: <mailto:u@x.example>, <https://x.example/u?s=1>\\r\\n"
    ...               b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\\r\\n\\r\\n")
    'https://x.example/u?s=1'
    >>> one_click_url(b"List-Unsubscribe: <https://x.example/u?s=1>\\r\\n\\r\\n") is None
    True
    """
    block = header_block(header)
    post = field(block, "list-unsubscribe-post")
    if post is None or not _ONE_CLICK.fullmatch(post):
        return None
    value = field(block, "list-unsubscribe")
    for uri in _URI.findall(value or ""):
        if uri[:8].lower() != "https://":
            continue
        if not uri.isascii() or not uri.isprintable() or len(uri) > MAX_ONE_CLICK_URL:
            return None
        try:
            parts = urlsplit(uri)
            host, _ = parts.hostname, parts.port
        except ValueError:
            return None
        if not host or "@" in parts.netloc:
            return None
        return str(uri)
    return None
