"""Reading the DATA section in large chunks, into one canonical CRLF form.

aiosmtpd reads DATA one line at a time in Python, which dominates the CPU
cost of receiving a newsletter (a 70 KB quoted-printable message is about a
thousand lines).  :func:`read_data` searches the bytes where they arrive for
the periods that start a line and for bare LFs instead, in one pass, and
accepts a ``.<CRLF>`` as the end only when it starts a line (follows
``<CRLF>``, or is the very first byte): exactly RFC 5321's ``<CRLF>.<CRLF>``.
The smuggling variants (``<LF>.<LF>``, ``<LF>.<CRLF>``, ``<CR>.<CR>``,
``<CRLF>.<LF>``, ``<CRLF><NUL>.<CRLF>``) never end the data.

Line ends are taken as Postfix 3.9+ takes them by default
(``smtpd_forbid_bare_newline = normal``): the end of the data must be the
standard one, but a line may end in a bare LF -- what ``smtplib``'s
``sendmail(..., msg.as_bytes())`` and many PHP mailers send -- and is then
treated as if it ended in CRLF.  :func:`canonical` is the one place where
that happens, right after the data is read and before anything parses it:

1. every bare LF becomes CRLF (:func:`crlf_line_ends`), so the handler, the
   spool, the rewrite engine and the courier all see CRLF line ends;
2. a line that is just a period is dropped (:func:`drop_lone_dots`): the
   data has already ended at the first real ``<CRLF>.<CRLF>``, so such a
   line can only come from a smuggling attempt (``<LF>.<CRLF>``,
   ``<CRLF>.<LF>``, ``<LF>.<LF>``); it is neither the end nor content, and
   Postfix drops it the same way;
3. transparency (RFC 5321 section 4.5.2) is undone: a period at the start
   of any line, after CRLF or after a bare LF, is removed (:func:`unstuff`).

A bare CR (one not followed by LF) is no line end: it stays as it is (the
handler refuses one in the header section).  Each step is a few C-level
``bytes`` operations over the whole message, no loop over lines.  A message
that is all CRLF with at most ``MAX_DOTS`` stuffed lines does not need these
steps: :func:`read_data`'s one search found its stuffing periods, which it cuts
out by offset, and proved it free of bare LFs (its result is the same).

    >>> async def demo() -> tuple[bytes | None, int]:
    ...     reader = asyncio.StreamReader()
    ...     reader.feed_data(b"a\\r\\n..b\\nc.\\n..d\\n.\\r\\ne\\r\\n.\\r\\nQUIT\\r\\n")
    ...     return await read_data(reader, 100)
    >>> asyncio.run(demo())
    (b'a\\r\\n.b\\r\\nc.\\r\\n.d\\r\\ne\\r\\n', 20)

(The lone ``.`` after ``..d<LF>`` is not the end and is dropped; the size
counts the bytes received, before any change.)
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

from beacon_proxy.rewrite.lineends import LINE_DOT

__all__ = ["canonical", "crlf_line_ends", "drop_lone_dots", "has_bare_lf", "read_data", "unstuff"]

_END = b".\r\n"
_LONE_DOT = b"\r\n.\r\n"
_BARE_LF: Final = re.compile(rb"\n(?<!\r\n)")  # an LF, then a look back: see has_bare_lf


def has_bare_lf(data: bytes) -> bool:
    r"""True if an LF appears other than as part of a CRLF pair.

    One search for an LF not preceded by CR, stopping at the first: the pattern
    starts with the literal LF, so ``re`` skips from LF to LF in C and looks one
    byte back at each.  Comparing ``count(b"\n")`` with ``count(b"\r\n")`` gave
    the same answer in three times the CPU (a 70 KB all-CRLF message: 0.10 ms
    against 0.036; ``bytes.count`` of a two-byte needle is slow), on every message.

    >>> has_bare_lf(b"a\r\nb\r\n"), has_bare_lf(b"a\r\nb\n"), has_bare_lf(b"a\rb")
    (False, True, False)
    """
    return _BARE_LF.search(data) is not None


def crlf_line_ends(data: bytes) -> bytes:
    r"""``data`` with every bare LF turned into CRLF; CRLF and bare CR are kept.

    Returns ``data`` itself when it has no bare LF.

    >>> crlf_line_ends(b"a\nb\r\nc\r\rd\n")
    b'a\r\nb\r\nc\r\rd\r\n'
    """
    return _crlf(data) if has_bare_lf(data) else data


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def drop_lone_dots(content: bytes) -> bytes:
    r"""``content`` (CRLF line ends, still dot-stuffed) without its lines that are just ``.``.

    >>> drop_lone_dots(b".\r\na\r\n.\r\n.\r\n..\r\nb\r\n")
    b'a\r\n..\r\nb\r\n'
    """
    if not (content.startswith(b".\r\n") or _LONE_DOT in content):
        return content
    marked = b"\r\n" + content
    # replace() does not see overlapping matches, so a run of k such lines
    # takes about log2(k) passes: never one pass per line.
    while _LONE_DOT in marked:
        marked = marked.replace(_LONE_DOT, b"\r\n")
    return marked[2:]


def unstuff(content: bytes) -> bytes:
    r"""Remove the leading period of every line (RFC 5321 section 4.5.2); CRLF line ends.

    One regular-expression substitution: ``bytes.replace`` searches twice (it counts
    first) and its search is slower than ``re``'s for a literal that starts with CR
    (the 70 KB newsletter with nine stuffed lines: 0.050 ms of CPU against 0.107).

    >>> unstuff(b"..a\r\n...b\r\nc.\r\n.\r\n")
    b'.a\r\n..b\r\nc.\r\n\r\n'
    """
    if content.startswith(b"."):
        content = content[1:]
    return LINE_DOT.sub(b"\r\n", content)


def canonical(received: bytes) -> bytes:
    r"""The message for the bytes received in DATA before the end of data.

    Bare LFs become CRLF, lone ``.`` lines are dropped, and the period that
    starts any other line is removed.  ``received`` is what :func:`read_data`
    read, so a lone ``.`` line in it can only be next to a bare LF (with
    CRLF on both sides it would have been the end of data): a message
    without a bare LF is only unstuffed.

    >>> canonical(b"Subject: a\nBcc: b\n\n..x\n.\r\nMAIL FROM:<e@x>\r\n")
    b'Subject: a\r\nBcc: b\r\n\r\n.x\r\nMAIL FROM:<e@x>\r\n'
    """
    if not has_bare_lf(received):
        return unstuff(received)
    return unstuff(drop_lone_dots(_crlf(received)))


# A line-start period after CRLF ("\n" then "."), or a bare LF: the only places
# where the data can end, lose a stuffing period, or need the canonical form.
# The search starts with the literal LF, so ``re`` skips from LF to LF in C.
_MARK: Final = re.compile(rb"\n(?:(?<!\r\n)|\.)")
# Line-start periods taken in one pass before the rest goes the canonical way.
MAX_DOTS: Final = 64
# Bytes the reader may hold, searched, before they are taken out of it.
_TAKE_AT: Final = 1 << 17


def _ends(buf: bytearray, dot: int) -> bool | None:
    """The line-start period at ``dot`` ends the data (it is followed by CRLF): true,
    false, or ``None`` when the bytes that tell have not arrived yet."""
    after = buf[dot + 1 : dot + 3]
    if after == b"\r\n":
        return True
    if len(after) < 2 and b"\r\n".startswith(after):
        return None
    return False


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> tuple[bytes | None, int]:
    r"""Read up to and including the terminating ``<CRLF>.<CRLF>``.

    Returns ``(content, size)``: the :func:`canonical` message (its last line
    keeps its CRLF), or ``None`` when more than ``limit`` bytes were received,
    in which case the rest was read and discarded so the session can go on.
    ``size`` counts the bytes received (before any change).  Raises
    :class:`asyncio.IncompleteReadError` when the client disconnects first.

    One pass finds what matters in the usual message, all CRLF with a few
    stuffed lines: each LF that starts a line with a period (the end of data
    when CRLF follows it, else a period to remove) and each bare LF.  The
    bytes are searched where they arrive, in the reader's buffer, and taken
    out of it once: through the end of data when that is there, or when the
    buffer holds ``_TAKE_AT`` bytes (all but the last byte before where the
    search goes on, for the look back at CR).  The periods to remove are cut
    out by their offsets, so the message costs one search instead of three
    (the terminator, :func:`has_bare_lf`, :func:`unstuff`).  A bare LF, or
    more than ``MAX_DOTS`` line-start periods, or one past ``limit``, hands
    the rest to :func:`_read_to_end` and the whole message to
    :func:`canonical`, as before: the Python steps a message costs here are
    at most ``MAX_DOTS`` and one a wake-up.  Whichever way, the result is
    the same for any input split anyhow (``tests/smtpd/test_data.py`` checks
    every path against a line-by-line reading as Postfix's).
    """
    buf: bytearray = reader._buffer  # type: ignore[attr-defined]  # see internals.py
    chunks: list[bytes] = []  # the content taken out of the reader, as received
    dots: list[int] | None = []  # content offsets of stuffing periods; None: too big
    size = 0  # content bytes taken out of the reader
    tail = b"\r\n"  # the last two bytes before the buffer (at first the DATA line's end)
    pos = 0  # the search goes on here in buf
    first = True  # the content's first byte (a period there counts too) not yet seen
    search = _MARK.search
    while True:
        error = reader.exception()
        if error is not None:
            raise error
        end = -1  # where the content ends in buf, once the terminator is there
        slow = False
        if first and buf:
            verdict = _ends(buf, 0) if buf[0] == 0x2E else False
            if verdict is True:
                end = 0
            elif verdict is False:
                first = False
                if buf[0] == 0x2E and dots is not None:
                    dots.append(0)
        while not first and end < 0:
            found = search(buf, pos)
            if found is None:
                n = len(buf)
                pos = n - 1 if n and buf[n - 1] == 0x0A else n
                break
            lf = found.start()
            if found.end() - lf == 1:  # a bare LF
                slow = True
                break
            verdict = _ends(buf, lf + 1)
            if verdict is None:
                pos = lf  # searched again when more has come
                break
            if verdict:
                end = lf + 1
                break
            if dots is None or len(dots) >= MAX_DOTS:  # too big, or many
                slow = True
                break
            dots.append(size + lf + 1)
            pos = lf + 2
        if end >= 0:
            last = await reader.readexactly(end + 3)  # buffered: returns at once
            size += end
            if dots is None or (limit is not None and size > limit):
                return None, size
            chunks.append(last)
            return _unstuffed(chunks, end, dots), size
        if slow:
            return await _slow(reader, limit, chunks, size, tail)
        take = pos - 1  # keep the byte before the search's next LF, for its look back
        if take > 0 and len(buf) >= _TAKE_AT:
            piece = await reader.readexactly(take)  # buffered: returns at once
            pos -= take
            size += take
            tail = piece[-2:] if take >= 2 else (tail + piece)[-2:]
            if dots is not None and (limit is None or size <= limit):
                chunks.append(piece)
            else:
                chunks.clear()  # too big: keep reading, keep nothing
                dots = None
        if reader._eof:  # type: ignore[attr-defined]
            raise asyncio.IncompleteReadError(bytes(buf), None)
        await reader._wait_for_data("read_data")  # type: ignore[attr-defined]


def _unstuffed(chunks: list[bytes], end: int, dots: list[int]) -> bytes:
    """The content: ``chunks`` joined, the last one cut at ``end``, without the
    periods at the (ascending) content offsets ``dots``; one copy."""
    views = [memoryview(chunk) for chunk in chunks]
    views[-1] = views[-1][:end]
    if not dots:
        return views[0].tobytes() if len(views) == 1 else b"".join(views)
    parts: list[memoryview] = []
    following = iter(dots)
    dot = next(following, None)
    base = 0  # the content offset of the view's first byte
    for view in views:
        start, stop = 0, base + len(view)
        while dot is not None and dot < stop:
            parts.append(view[start : dot - base])
            start = dot - base + 1
            dot = next(following, None)
        parts.append(view[start:])
        base = stop
    return b"".join(parts)


async def _slow(reader: asyncio.StreamReader, limit: int | None, chunks: list[bytes],
                size: int, tail: bytes) -> tuple[bytes | None, int]:
    """The rest of :func:`read_data` for a message with a bare LF or many
    line-start periods: ``chunks`` (``size`` bytes; ``tail`` their last two, or
    the DATA line's CRLF) already read, the rest searched for ``.<CRLF>``."""
    kept: list[bytes | memoryview] = list(chunks)
    size = await _read_to_end(reader, limit, kept, size, tail)
    if limit is not None and size > limit:
        return None, size
    return canonical(b"".join(kept)), size


async def _read_to_end(reader: asyncio.StreamReader, limit: int | None,
                       chunks: list[bytes | memoryview], size: int, tail: bytes) -> int:
    """Read through the first ``.<CRLF>`` that starts a line, into ``chunks``
    (emptied when the content passes ``limit``); returns the content's size."""
    # Each piece is kept as read and joined once at the end (the terminator cut
    # off through a memoryview): no slice copies of a piece on the way.
    while True:
        try:
            piece = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            piece = await reader.readexactly(exc.consumed)  # no terminator yet
        n = len(piece)
        at_end = piece.endswith(_END) and (
            piece.endswith(b"\r\n", 0, n - 3) if n >= 5
            else (tail + piece[:-3]).endswith(b"\r\n")
        )
        kept: bytes | memoryview = memoryview(piece)[:-3] if at_end else piece
        size += len(kept)
        if limit is None or size <= limit:
            chunks.append(kept)
        elif chunks:
            chunks.clear()  # too big: keep reading, keep nothing
        if at_end:
            return size
        tail = piece[-2:] if n >= 2 else (tail + piece)[-2:]
