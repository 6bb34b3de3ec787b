"""The soak's load side made cheap: messages spliced into a byte template, a lean SMTP client.

The soak (``bench/_relaysoak.py``) offers hundreds of personalised messages a
second; on a 2-core machine every CPU millisecond the sender spends is taken
from the relay it measures.  aiosmtplib cost ~2.1 CPU ms per 70 KB message
(it normalises line endings and dot-stuffs every message with regular
expressions, parses replies into objects and wraps each read in its own
timeout), and the personalisation copied the 70 KB body three times.  Here:

* :class:`SoakTemplate` renders the message once, already in its DATA wire
  form (CRLF, dot-stuffed, ``.`` terminator), cut around the three values
  that differ per message (``X-Bench-Id``, ``To``, ``Message-ID``).  Message
  ``n`` is a list of seven byte strings (four shared, three a few bytes
  long) handed to ``transport.writelines``: no email-library work and no
  copy of the body in Python per message.  The values spliced in are digits
  inside a line, so they can neither start a line with a dot nor end one:
  the template's dot-stuffing holds for every ``n``.  :func:`wire` is the
  same rendering done the slow way, the reference the tests compare with.
* :class:`SmtpClient` speaks plain SMTP on asyncio streams: EHLO once per
  connection, then per message ``MAIL`` (with ``SIZE=`` when offered, as
  aiosmtplib sends it), ``RCPT``, ``DATA`` and the body, each reply read
  before the next command, or the three commands in one write when the server
  advertises PIPELINING (RFC 2920; the relay offers it since session 20: the
  soak's sender pipelines into it). Replies are parsed strictly (RFC 5321 4.2:
  three digits, ``-`` or space, CRLF, the same code on every line): a
  malformed one, a closed connection or a timeout is a :class:`Failed` send,
  any code other than the one expected (2xx; 354 after ``DATA``) a
  :class:`Refused` one. After either the connection is dropped (the next
  message opens a new one): a soak counts refusals, it does not recover from
  them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

__all__ = ["Failed", "Refused", "SmtpClient", "SoakTemplate", "dot_stuff", "soak_message", "wire"]

_MAX_REPLY_LINES = 100  # a bound on a multi-line reply (an EHLO has ~10)
_MAX_LINE = 4096  # RFC 5321 allows 512 octets per reply line; refuse far longer ones
_TO = b"To: rcpt@example.net"
_MESSAGE_ID = b"<20250320093000.8f3b21@mailer.shop.example>"


def dot_stuff(message: bytes) -> bytes:
    """``message`` (CRLF lines) as DATA sends it: dot-stuffed, ending CRLF, then ``.`` CRLF.

    >>> dot_stuff(b"a\\r\\n.b\\r\\n..c")
    b'a\\r\\n..b\\r\\n...c\\r\\n.\\r\\n'
    """
    rest = message.replace(b"\r\n", b"")
    if b"\r" in rest or b"\n" in rest:
        raise ValueError("message has a bare CR or LF: give it CRLF line endings")
    stuffed = (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def soak_message(n: int, body: bytes) -> bytes:
    """The newsletter as message ``n``: an X-Bench-Id header, its own To and Message-ID."""
    return (b"X-Bench-Id: %d\r\n" % n
            + body.replace(_TO, b"To: s%d@example.org" % n, 1)
            .replace(_MESSAGE_ID, b"<soak-%d@mailer.shop.example>" % n, 1))


def wire(n: int, body: bytes) -> bytes:
    """Message ``n`` as the DATA phase sends it, rendered the slow way (the reference)."""
    return dot_stuff(soak_message(n, body))


class SoakTemplate:
    """The soak message pre-rendered as DATA bytes, with three holes for message ``n``."""

    def __init__(self, body: bytes) -> None:
        stuffed = dot_stuff(body)  # the markers hold no line-start dot: stuffing keeps them
        to, mid = stuffed.find(_TO), stuffed.find(_MESSAGE_ID)
        if to < 0 or mid < 0:
            raise ValueError(f"body lacks {_TO!r} or {_MESSAGE_ID!r}: nothing to personalise")
        if mid < to:
            raise ValueError("body has its Message-ID before its To: not the benchmark's")
        self._head = b"X-Bench-Id: "
        self._to = b"\r\n" + stuffed[:to] + b"To: s"
        self._mid = b"@example.org" + stuffed[to + len(_TO):mid] + b"<soak-"
        self._tail = b"@mailer.shop.example>" + stuffed[mid + len(_MESSAGE_ID):]
        # The message's own size, without the dots stuffing added (RFC 1870), but the values.
        self._size = len(soak_message(0, body)) - 3

    def size(self, n: int) -> int:
        """``len(soak_message(n, body))``: for MAIL's SIZE= parameter."""
        return self._size + 3 * len(b"%d" % n)

    def parts(self, n: int) -> list[bytes]:
        """Message ``n``'s DATA bytes in pieces, for ``writelines`` (no copy of the body)."""
        num = b"%d" % n
        return [self._head, num, self._to, num, self._mid, num, self._tail]

    def render(self, n: int) -> bytes:
        return b"".join(self.parts(n))

    def rcpt(self, n: int) -> bytes:
        """The RCPT command for message ``n``."""
        return b"RCPT TO:<s%d@example.org>\r\n" % n


class Failed(Exception):
    """The send did not complete: connection lost or refused, timeout, malformed reply."""


class Refused(Exception):
    """The server answered a code the client did not expect at this step."""

    def __init__(self, step: str, code: int, text: bytes) -> None:
        super().__init__(f"{step} {code} {text[:80]!r}")
        self.step, self.code = step, code

    @property
    def reason(self) -> str:
        """``"<step> <code>"``: how a report groups refusals."""
        return f"{self.step} {self.code}"


def parse_reply_line(line: bytes) -> tuple[int, bool, bytes]:
    """(code, last line?, text) of one reply line, ``line`` ending CRLF; else :class:`Failed`.

    >>> parse_reply_line(b"250-PIPELINING\\r\\n")
    (250, False, b'PIPELINING')
    >>> parse_reply_line(b"354\\r\\n")
    (354, True, b'')
    """
    if not line.endswith(b"\r\n"):
        raise Failed("connection closed" if not line else f"reply line without CRLF: {line!r}")
    code, sep = line[:3], line[3:4]
    if (len(line) < 5 or not code.isdigit() or code[0] not in b"2345" or code[1] not in b"012345"
            or sep not in (b" ", b"-", b"\r") or (sep == b"\r" and len(line) != 5)):
        raise Failed(f"malformed reply line {line[:80]!r}")
    return int(code), sep != b"-", line[4:-2]


def _check(step: str, want: int, code: int, lines: list[bytes]) -> list[bytes]:
    """``lines`` when ``code`` is ``want`` (any 2xx when ``want`` is 250), else Refused."""
    if code != want and not (want == 250 and 200 <= code < 300):
        raise Refused(step, code, lines[0])
    return lines


class SmtpClient:
    """One SMTP connection that sends soak messages, one transaction at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 sender: str, timeout: float) -> None:
        self._reader, self._writer = reader, writer
        self._mail = f"MAIL FROM:<{sender}>".encode("ascii")
        self.timeout = timeout
        self.pipelining = False
        self.size = False  # the server takes MAIL's SIZE= (RFC 1870), as aiosmtplib sends it
        self.closed = False

    @classmethod
    async def connect(cls, host: str, port: int, sender: str, timeout: float = 60.0,
                      pipelining: bool = True, helo: str = "soak.bench") -> SmtpClient:
        """Connect, read the greeting, EHLO; ``pipelining=False`` never pipelines."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_MAX_LINE)
        except (OSError, TimeoutError) as exc:
            raise Failed(f"connect: {type(exc).__name__}") from exc
        client = cls(reader, writer, sender, timeout)
        try:
            async with asyncio.timeout(timeout):
                await client._expect("greeting", 220)
                writer.write(b"EHLO %s\r\n" % helo.encode("ascii"))
                lines = await client._expect("EHLO", 250)
        except BaseException:
            client.close()
            raise
        keywords = {ln.upper().split(b" ", 1)[0] for ln in lines[1:]}
        client.pipelining = pipelining and b"PIPELINING" in keywords
        client.size = b"SIZE" in keywords
        return client

    async def _reply(self) -> tuple[int, list[bytes]]:
        """One whole (maybe multi-line) reply: its code and the text of each line."""
        lines: list[bytes] = []
        first = 0
        for _ in range(_MAX_REPLY_LINES):
            try:
                line = await self._reader.readline()
            except (ValueError, OSError) as exc:  # ValueError: a line over the limit
                raise Failed(f"reading a reply: {type(exc).__name__}") from exc
            code, last, text = parse_reply_line(line)
            if lines and code != first:
                raise Failed(f"reply lines with codes {first} and {code}")
            first = code
            lines.append(text)
            if last:
                return code, lines
        raise Failed(f"reply longer than {_MAX_REPLY_LINES} lines")

    async def _expect(self, step: str, want: int) -> list[bytes]:
        """The next reply; :class:`Refused` unless its code is ``want`` (2xx for 250)."""
        return _check(step, want, *await self._reply())

    async def send(self, rcpt: bytes, data: Sequence[bytes], size: int) -> None:
        """One transaction: ``rcpt`` is the RCPT command, ``data`` the DATA bytes in pieces,
        ``size`` the message's (for MAIL's SIZE=, when the server takes it).

        Returns when the server answered 2xx to the end of DATA, i.e. accepted the
        message.  Raises :class:`Refused` or :class:`Failed`, after which this
        connection is closed; :class:`asyncio.CancelledError` closes it too.
        """
        mail = self._mail + (b" SIZE=%d\r\n" % size if self.size else b"\r\n")
        try:
            async with asyncio.timeout(self.timeout):
                if self.pipelining:
                    self._writer.writelines((mail, rcpt, b"DATA\r\n"))
                    # Every reply is read before the first wrong one is raised (RFC 2920).
                    replies = [await self._reply() for _ in range(3)]
                    for step, want, reply in zip(("MAIL", "RCPT", "DATA"), (250, 250, 354),
                                                 replies, strict=True):
                        _check(step, want, *reply)
                else:
                    self._writer.write(mail)
                    await self._expect("MAIL", 250)
                    self._writer.write(rcpt)
                    await self._expect("RCPT", 250)
                    self._writer.write(b"DATA\r\n")
                    await self._expect("DATA", 354)
                self._writer.writelines(data)
                await self._expect("end of DATA", 250)
        except TimeoutError as exc:
            self.close()
            raise Failed("timeout") from exc
        except BaseException:
            self.close()
            raise

    async def quit(self) -> None:
        """QUIT and close, bounded by the timeout; errors are ignored (the soak is over)."""
        if self.closed:
            return
        try:
            async with asyncio.timeout(self.timeout):
                self._writer.write(b"QUIT\r\n")
                await self._reply()
        except (Failed, OSError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
