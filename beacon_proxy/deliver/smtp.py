"""Delivery to an upstream smarthost over SMTP.

One :class:`SmtpCourier` holds at most one aiosmtplib connection and reuses it
for every call to :meth:`~SmtpCourier.deliver` (the scheduler gives each
worker its own courier, so there is no concurrent use; it closes the courier
when the worker has been idle for ``[delivery] idle_timeout``).  Each call is
one transaction for one recipient, and every reply is known exactly: when the
upstream offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write
and their replies are read in order (:class:`_Replies`), then the message;
otherwise command by command.  The results are the same either way:

==========================================  ==========================================
what happened                               result
==========================================  ==========================================
``250`` after the message data              ``DELIVERED``, the server's reply
a ``4xx`` reply to MAIL, RCPT or DATA       ``TEMPORARY``, the server's reply
a ``5xx`` reply to MAIL, RCPT or DATA       ``PERMANENT``, the server's reply
no connection, no greeting, EHLO refused,   ``TEMPORARY`` ``451 4.4.1``/``4.4.2``/``4.5.0``
lost connection or timeout
STARTTLS required but not offered           ``TEMPORARY`` ``451 4.7.4`` (as Postfix defers)
TLS handshake or certificate failure        ``TEMPORARY`` ``451 4.7.5``; with
                                            ``opportunistic``, a new connection
                                            without TLS instead (as Postfix)
SMTPUTF8 needed but not offered             ``PERMANENT`` ``554 5.6.7`` (as Postfix bounces)
==========================================  ==========================================

No RSET follows a delivered message (RFC 5321 needs none after a completed
transaction); a refusal is followed by RSET, a ``421`` by a new connection.
A connection found dead when MAIL is sent on it (the server closed it while
idle) is replaced once by a fresh one; nothing is ever re-sent once DATA has
begun, so a lost final reply is retried later by the scheduler (at-least-once).
The bytes given are sent as they are, dot-stuffed (which the receiving server
undoes); a bare CR or LF is sent as CRLF.  Line ends are made CRLF *before*
stuffing, so every line that starts with a period is stuffed and no content
line can end the data early at the next hop: a ``.`` line that smtpd took as
content (a client's ``<LF>..<LF>`` is queued as ``<CRLF>.<CRLF>``) goes out
as ``<CRLF>..<CRLF>``, never as an end of data followed by smuggled commands.
The message data is prepared with C-level operations (:func:`wire_data`: a
line-end check and one search for the periods to stuff, skipped for a copy
whose line ends and periods the copy steps proved: ``Copy.crlf`` and
``Copy.dots``) and written directly, instead of through aiosmtplib's
``data()``, whose two regular-expression passes over every message cost more
than the rest of the delivery.

The aiosmtplib internals used (``protocol.write``, ``read_response``, and for
pipelining the transport's protocol swapped for :class:`_Replies`) are listed,
checked and version-bounded in :mod:`beacon_proxy.internals`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import re
import socket
import ssl
from typing import Literal, TypeAlias, cast

from aiosmtplib import (
    SMTP,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from beacon_proxy.config import Endpoint
from beacon_proxy.deliver.courier import Outcome, Result
from beacon_proxy.metrics import UPSTREAM_CONNECTIONS
from beacon_proxy.rewrite.lineends import LINE_DOT, crlf_lines

__all__ = ["Dots", "SmtpCourier", "StartTls", "wire_data", "wire_pieces"]

StartTls = Literal["required", "opportunistic", "off"]

_log = logging.getLogger(__name__)
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_REPLY = 1000  # characters kept of a server's reply
_MAX_REPLY_LINE = 8192  # bytes, as aiosmtplib bounds a reply line ...
_MAX_REPLY_BYTES = 4 * _MAX_REPLY_LINE  # ... and a whole reply
# A plain dot-atom@domain, which email.utils.parseaddr (in quote_address) leaves as it is.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# The pipelined group (RFC 2920): each command's stage and the reply codes that accept it.
_GROUP = (("MAIL FROM", (250,)), ("RCPT TO", (250, 251)), ("DATA", (354,)))
# How a transaction ended: its final reply, or the exception for a refusal, a bad
# address, a lost connection or a timeout.
_Outcome: TypeAlias = SMTPResponse | Exception
Dots: TypeAlias = "tuple[int, ...] | None"
"""The proven offsets of a copy's line-start periods (:attr:`Copy.dots
<beacon_proxy.rewrite.step.Copy.dots>`), or None: not known."""


def wire_data(data: bytes, crlf: bool = False, dots: Dots = None) -> bytes:
    r"""The DATA section for ``data``: CRLF line ends, dot-stuffed, terminated.

    ``crlf``: the caller has proven that ``data`` has CRLF line ends only and ends in
    one (:attr:`~beacon_proxy.rewrite.step.Copy.crlf`: the DKIM step's output, or
    :class:`~beacon_proxy.rewrite.lineends.CrlfProof`'s), so the line-end check
    (:func:`~beacon_proxy.rewrite.lineends.crlf_lines`) is skipped.  ``dots``, with
    ``crlf`` only: the offsets of every period that starts a line, in order, proven
    by the same step (:attr:`~beacon_proxy.rewrite.step.Copy.dots`), so the stuffing
    needs no search: a period goes before each, and the pieces between are joined
    once (views: no copy of a piece).  Without them every line-start period is
    searched for.  :func:`wire_pieces` gives the same bytes unjoined.

    >>> wire_data(b".a\r\nb\n.c")
    b'..a\r\nb\r\n..c\r\n.\r\n'
    >>> wire_data(b".a\r\nb\r\n.c\r\n", True, (0, 8))
    b'..a\r\nb\r\n..c\r\n.\r\n'
    """
    pieces = wire_pieces(data, crlf, dots)
    if len(pieces) == 1:
        return bytes(pieces[0])
    return b"".join(pieces)


def wire_pieces(data: bytes, crlf: bool = False, dots: Dots = None
                ) -> list[bytes | memoryview]:
    r""":func:`wire_data` in pieces, to be written in order (``writelines``): with
    ``crlf`` and ``dots`` proven, views of ``data`` with the stuffed periods and the
    terminator between them, so the courier hands the copy to the socket without
    first copying 70 KB into one buffer (the kernel copies it anyway); otherwise one
    piece, the joined section.

    >>> [bytes(p) for p in wire_pieces(b".a\r\nb\r\n", True, (0,))]
    [b'', b'.', b'.a\r\nb\r\n', b'.\r\n']
    """
    if not crlf:
        data = crlf_lines(data)
    elif not data.endswith(b"\r\n"):
        data += b"\r\n"
    elif dots is not None:
        view, start = memoryview(data), 0
        parts: list[bytes | memoryview] = []
        for dot in dots:
            parts += (view[start:dot], b".")
            start = dot
        parts += (view[start:], b".\r\n")
        return parts
    # split + join: one search pass (replace() makes two: it counts first); re's search
    # for a literal starting with CR is faster than bytes.split's (70 KB: 0.052 ms
    # against 0.067).  The terminator goes onto the last piece: one copy of the rest.
    pieces = LINE_DOT.split(data)
    pieces[-1] += b".\r\n"
    if data.startswith(b"."):
        pieces[0] = b"." + pieces[0]
    return [b"\r\n..".join(pieces)]


def _write_pieces(protocol: SMTPProtocol, pieces: list[bytes | memoryview]) -> None:
    """``protocol.write`` for pieces: one ``writelines`` on its transport (uvloop: one
    ``writev``; asyncio joins them), raising as ``write`` does on a lost connection."""
    transport = protocol.transport
    if transport is None or transport.is_closing():
        raise SMTPServerDisconnected("Connection lost")
    cast(asyncio.WriteTransport, transport).writelines(pieces)


async def _send_data(client: SMTP, data: bytes, timeout: float, data_timeout: float,
                     crlf: bool = False, dots: Dots = None) -> SMTPResponse:
    """DATA, then the prepared message; raises like ``SMTP.data()``.  ``data_timeout``:
    the wait for the reply to the final dot (RFC 5321 4.5.3.2.6 suggests 10 minutes: the
    upstream may scan the message first, and a copy whose reply times out is sent again)."""
    start = await client.execute_command(b"DATA", timeout=timeout)
    if start.code != 354:
        raise SMTPDataError(start.code, start.message)
    if client.protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    client.protocol.write(wire_data(data, crlf, dots))
    reply = await client.protocol.read_response(timeout=data_timeout)
    if reply.code != 250:
        raise SMTPDataError(reply.code, reply.message)
    return reply


def _path(address: str) -> str:
    """``<address>`` as aiosmtplib's ``quote_address`` writes it (raising ``ValueError``
    as it does), without its ``email.utils.parseaddr`` call (some 20 us) for a plain
    ``dot-atom@domain``, which that leaves as it is."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


class _Replies(asyncio.Protocol):
    """Reads the replies to a pipelined group, standing in on the transport for
    aiosmtplib's protocol, which reads one reply per command and drops what comes while
    no command waits.  The connection's end and flow control are passed on to it."""

    def __init__(self, inner: SMTPProtocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def next(self, timeout: float) -> SMTPResponse:
        """The next reply, in order; raises as aiosmtplib's ``read_response`` does.

        The wait is bounded by a timer of the loop that fails the waiter, not by
        ``asyncio.wait_for`` (a task-level timeout with a future, a callback and a
        cancellation of its own: about twice the CPU, twice per copy)."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._replies.popleft()

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer += data
        try:
            self._parse()
        except SMTPResponseException as exc:
            self._fail(exc)
        self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done() and (
                self._replies or self._error is not None):
            self._waiter.set_result(None)

    def _parse(self) -> None:
        """Move every complete reply from the buffer to the queue (as aiosmtplib
        parses one: the last line's code, the lines' texts joined by newlines).

        The lines are cut from one ``bytes`` copy of the buffer (a few dozen bytes: the
        replies to a pipelined group come together), and a one-line reply's text is
        its line's, without a buffer to join lines in (3 -> 2 us a reply)."""
        buffer = self._buffer
        data = bytes(buffer)
        start = 0
        while True:
            offset, code = start, -1
            message: bytearray | None = None  # the lines' texts joined, for several
            while True:
                end = data.find(b"\n", offset)
                if end < 0:
                    del buffer[:start]
                    if len(buffer) > _MAX_REPLY_BYTES:
                        raise SMTPResponseException(-1, "Response too long")
                    return
                line = data[offset:end + 1]
                if len(line) > _MAX_REPLY_LINE:
                    raise SMTPResponseException(-1, "Response too long")
                try:
                    code = int(line[:3])
                except ValueError:
                    text = line.decode("utf-8", errors="ignore")
                    raise SMTPResponseException(
                        -1, f"Malformed SMTP response line: {text}") from None
                offset = end + 1
                text_bytes = line[4:].strip(b" \t\r\n")
                last = line[3:4] != b"-"
                if message is None:
                    if last:  # a one-line reply: its text as it is
                        break
                    message = bytearray()
                elif message:  # (as aiosmtplib: no newline after an empty first text)
                    message += b"\n"
                message += text_bytes
                if last:
                    text_bytes = bytes(message)
                    break
            self._replies.append(
                SMTPResponse(code, text_bytes.decode("utf-8", "surrogateescape")))
            start = offset


def _time_out(waiter: asyncio.Future[None]) -> None:
    """A reply did not come in time: the wait for it raises."""
    if not waiter.done():
        waiter.set_exception(SMTPReadTimeoutError("Timed out waiting for server response"))


class _SessionFailed(Exception):
    """Setting up a session failed; carries the result to report, and whether it
    was the TLS handshake that failed."""

    def __init__(self, result: Result, *, handshake: bool = False) -> None:
        super().__init__(result.reply)
        self.result = result
        self.handshake = handshake


class SmtpCourier:
    """Delivers to one upstream SMTP server, reusing one connection.

    >>> courier = SmtpCourier("127.0.0.1", 2600, starttls="opportunistic",
    ...                       tls_verify=True, timeout=60.0, helo_name="relay.example.org")
    >>> courier.remote
    '127.0.0.1:2600'
    """

    def __init__(self, host: str, port: int, *, starttls: StartTls, tls_verify: bool,
                 timeout: float, helo_name: str, data_timeout: float | None = None,
                 pipelining: bool = True) -> None:
        if starttls not in ("required", "opportunistic", "off"):
            raise ValueError(f"starttls must be required, opportunistic or off, not {starttls!r}")
        if timeout <= 0 or (data_timeout is not None and data_timeout <= 0):
            raise ValueError("timeouts must be positive")
        if any(c.isspace() or not c.isprintable() for c in helo_name):
            raise ValueError(f"bad helo_name {helo_name!r}")
        self._host = host
        self._port = port
        self._starttls: StartTls = starttls
        self._tls_verify = tls_verify
        self._timeout = timeout
        self._data_timeout = timeout if data_timeout is None else data_timeout
        self._helo_name = helo_name or None  # None: aiosmtplib uses the machine's FQDN
        self._remote = str(Endpoint(host, port))
        self._pipelining = pipelining  # False: never pipeline (the benchmark's old path)
        self._client: SMTP | None = None

    @property
    def remote(self) -> str:
        """The upstream as ``host:port``, as reported in :attr:`Result.remote`."""
        return self._remote

    async def deliver(self, sender: str, recipient: str, data: bytes, *,
                      smtputf8: bool = False, body_type: str | None = None,
                      crlf: bool = False, dots: Dots = None) -> Result:
        """Send ``data`` from ``sender`` to ``recipient``; never raises for failures.
        ``crlf``: ``data`` is proven CRLF-only, ending in CRLF; ``dots``: its line-start
        periods, proven (see :func:`wire_data`)."""
        try:
            return await self._deliver(sender, recipient, data, smtputf8, body_type, crlf,
                                       dots)
        except _SessionFailed as exc:
            return dataclasses.replace(exc.result, session=True)
        except asyncio.CancelledError:
            self._drop()  # the session is in an unknown state
            raise
        except Exception as exc:  # a surprise from below must not kill the worker
            _log.exception("unexpected error delivering to %s", self._remote)
            self._drop()
            return self._temporary("4.3.0", f"internal error talking to {self._remote}: "
                                            f"{type(exc).__name__}")

    async def close(self) -> None:
        """Say QUIT (bounded by the timeout) and drop the connection; errors are ignored."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                async with asyncio.timeout(self._timeout):
                    await client.quit(timeout=self._timeout)
        except (SMTPException, OSError):
            pass
        finally:
            client.close()

    # -- the transaction ---------------------------------------------------

    async def _deliver(self, sender: str, recipient: str, data: bytes, smtputf8: bool,
                       body_type: str | None, crlf: bool = False, dots: Dots = None
                       ) -> Result:
        paths = []
        for address, status in ((sender, "5.1.7"), (recipient, "5.1.3")):
            if _CONTROLS.search(address) or "<" in address or ">" in address:
                return self._result(501, f"{status} bad address syntax: {address!r}")
            try:  # what aiosmtplib would refuse to put on a command line
                paths.append(_path(address))
            except ValueError as exc:
                return self._result(501, f"{status} bad address syntax: {exc}")
        needs_utf8, wants_utf8 = _smtputf8(sender, recipient, data, smtputf8)
        eight_bit = (body_type or "").upper() == "8BITMIME"
        reused = self._client is not None and self._client.is_connected
        client = await self._connection()
        result = await self._transaction(client, sender, recipient, paths, data, needs_utf8,
                                         wants_utf8, eight_bit, retry_stale=reused, crlf=crlf,
                                         dots=dots)
        if result is None:  # the idle connection had died under us: once more, afresh
            _log.debug("connection to %s went stale; reconnecting", self._remote)
            client = await self._connection()
            result = await self._transaction(client, sender, recipient, paths, data,
                                             needs_utf8, wants_utf8, eight_bit,
                                             retry_stale=False, crlf=crlf, dots=dots)
        assert result is not None
        return result

    async def _transaction(self, client: SMTP, sender: str, recipient: str, paths: list[str],
                           data: bytes, needs_utf8: bool, wants_utf8: bool, eight_bit: bool, *,
                           retry_stale: bool, crlf: bool = False, dots: Dots = None
                           ) -> Result | None:
        """MAIL, RCPT, DATA; ``None`` when a reused connection was dead at MAIL.
        ``paths``: the sender's and the recipient's, as :func:`_path` writes them."""
        utf8 = wants_utf8 and client.supports_extension("smtputf8")
        if needs_utf8 and not utf8:
            return self._result(554, f"5.6.7 SMTPUTF8 is required, but was not offered "
                                     f"by host {self._remote}")
        options = []
        if client.supports_extension("size"):
            size = len(data) if data.endswith(b"\r\n") else len(data) + 2
            options.append(f"SIZE={size}")
        if utf8:
            options.append("SMTPUTF8")
        if eight_bit and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if utf8 else "ascii"
        if self._pipelining and client.supports_extension("pipelining"):
            stage, outcome = await self._pipelined(client, paths, options, encoding, data,
                                                   crlf, dots)
        else:
            stage, outcome = await self._stepwise(client, sender, recipient, options,
                                                  encoding, data, crlf, dots)
        if isinstance(outcome, SMTPResponse):
            return self._result(outcome.code, outcome.message)
        if isinstance(outcome, SMTPResponseException):
            if retry_stale and stage == "MAIL FROM" and outcome.code == 421:
                self._drop()
                return None
            await self._reset(client, outcome.code)
            if not 400 <= outcome.code < 600:  # a 2xx/3xx where it makes no sense: out of step
                return self._unexpected(outcome.code, outcome.message, stage)
            return self._result(outcome.code, outcome.message)
        if isinstance(outcome, ValueError):  # refused to put the address on a command line
            if stage != "MAIL FROM":  # nothing was sent for a bad sender
                await self._reset(client, 501)
            status = "5.1.7" if stage == "MAIL FROM" else "5.1.3"
            return self._result(501, f"{status} bad address syntax: {outcome}")
        # disconnects and timeouts
        self._drop()
        if retry_stale and stage == "MAIL FROM" and isinstance(outcome, SMTPServerDisconnected):
            return None
        what = "timeout" if isinstance(outcome, TimeoutError) else "lost connection"
        return self._temporary("4.4.2", f"{what} with {self._remote} while sending {stage}")

    async def _stepwise(self, client: SMTP, sender: str, recipient: str, options: list[str],
                        encoding: str, data: bytes, crlf: bool = False,
                        dots: Dots = None) -> tuple[str, _Outcome]:
        """MAIL, RCPT, DATA one by one, each reply awaited before the next command:
        (the stage reached, its final reply or what went wrong)."""
        stage = "MAIL FROM"
        try:
            await client.mail(sender, options=options, encoding=encoding)
            stage = "RCPT TO"
            await client.rcpt(recipient, encoding=encoding)
            stage = "DATA"
            return stage, await _send_data(client, data, self._timeout, self._data_timeout,
                                           crlf, dots)
        except (SMTPException, OSError, ValueError) as exc:
            return stage, exc

    async def _pipelined(self, client: SMTP, paths: list[str], options: list[str],
                         encoding: str, data: bytes, crlf: bool = False,
                         dots: Dots = None) -> tuple[str, _Outcome]:
        """MAIL, RCPT and DATA in one write (RFC 2920), their replies read in order, then
        the message: the same (stage, outcome) as :meth:`_stepwise` for every reply."""
        protocol, transport = client.protocol, client.transport
        if protocol is None or transport is None or transport.is_closing():
            return "MAIL FROM", SMTPServerDisconnected("Connection lost")
        mail = b"MAIL FROM:" + paths[0].encode(encoding)
        for option in options:
            mail += b" " + option.encode("ascii")
        group = b"%s\r\nRCPT TO:%s\r\nDATA\r\n" % (mail, paths[1].encode(encoding))
        replies = _Replies(protocol)
        transport.set_protocol(replies)
        try:
            return await self._exchange(protocol, replies, group, data, crlf, dots)
        finally:  # aiosmtplib's protocol reads RSET's and QUIT's replies again
            transport.set_protocol(protocol)

    async def _exchange(self, protocol: SMTPProtocol, replies: _Replies, group: bytes,
                        data: bytes, crlf: bool = False, dots: Dots = None
                        ) -> tuple[str, _Outcome]:
        stage = "MAIL FROM"
        refusal: tuple[str, _Outcome] | None = None
        try:
            protocol.write(group)
            for stage, accepted in _GROUP:
                reply = await replies.next(self._timeout)
                if refusal is None and reply.code not in accepted:
                    refusal = stage, SMTPResponseException(reply.code, reply.message)
                    if reply.code == 421:  # it hangs up: no further replies
                        return refusal
        except (SMTPException, OSError) as exc:
            if refusal is None:
                return stage, exc
            self._drop()  # out of step; the refusal stands
            return refusal
        if refusal is not None:
            if reply.code == 354:  # DATA accepted after a refused MAIL or RCPT: end the
                try:  # data at once (a lone dot), read its reply, report the refusal
                    protocol.write(b".\r\n")
                    await replies.next(self._timeout)
                except (SMTPException, OSError):
                    self._drop()
            return refusal
        stage = "DATA"
        try:
            _write_pieces(protocol, wire_pieces(data, crlf, dots))
            reply = await replies.next(self._data_timeout)
        except (SMTPException, OSError) as exc:
            return stage, exc
        if reply.code != 250:
            return stage, SMTPDataError(reply.code, reply.message)
        return stage, reply

    async def _reset(self, client: SMTP, code: int) -> None:
        """After a refusal: RSET so the connection can be reused, or drop it."""
        if code == 421 or not 400 <= code < 600 or not client.is_connected:
            self._drop()
            return
        try:
            await client.rset()
        except (SMTPException, OSError):
            self._drop()

    # -- the session ---------------------------------------------------------

    async def _connection(self) -> SMTP:
        """The open connection, or a new one (greeted, EHLO'd, TLS per policy).

        With ``opportunistic`` TLS, a failed handshake is followed at once by a
        fresh connection without STARTTLS, as Postfix does at its ``may`` level:
        the policy accepts clear text, and an upstream whose TLS is broken would
        otherwise get nothing until the mail bounces at the queue lifetime.
        """
        if self._client is not None and self._client.is_connected:
            return self._client
        self._drop()
        try:
            client = await self._open(self._starttls)
        except _SessionFailed as exc:
            if not (exc.handshake and self._starttls == "opportunistic"):
                raise
            _log.warning("%s; delivering in clear text (starttls = opportunistic)",
                         exc.result.reply.split(" ", 2)[-1])
            client = await self._open("off")
        self._client = client
        return client

    async def _open(self, starttls: StartTls) -> SMTP:
        """A new connection: greeted, EHLO'd, and upgraded to TLS per ``starttls``."""
        client = SMTP(hostname=self._host, port=self._port, local_hostname=self._helo_name,
                      timeout=self._timeout, start_tls=False, validate_certs=self._tls_verify)
        stage = "connect"
        try:
            await client.connect()
            stage = "EHLO"
            await _hello(client)
            if starttls != "off":
                stage = "STARTTLS"
                if await self._upgrade(client):
                    stage = "EHLO"
                    await _hello(client)
        except _SessionFailed:
            client.close()
            raise
        except Exception as exc:
            client.close()
            handshake = stage == "STARTTLS" and not isinstance(exc, SMTPResponseException)
            raise _SessionFailed(self._setup_failure(stage, exc), handshake=handshake) from None
        except BaseException:  # cancelled
            client.close()
            raise
        UPSTREAM_CONNECTIONS.labels(
            "yes" if client.supports_extension("pipelining") else "no").inc()
        return client

    async def _upgrade(self, client: SMTP) -> bool:
        """STARTTLS per policy; ``True`` when the session is now encrypted.

        We drive STARTTLS ourselves (aiosmtplib runs with ``start_tls=False``)
        rather than through ``start_tls=True/None`` only to tell "not offered"
        from "handshake failed"; the policy is the same.
        """
        if not client.supports_extension("starttls"):
            if self._starttls == "required":
                raise _SessionFailed(self._temporary(
                    "4.7.4", f"TLS is required, but was not offered by host {self._remote}"))
            return False
        try:
            await client.starttls()
        except SMTPResponseException:
            if self._starttls == "required" or not client.is_connected:
                raise
            return False  # opportunistic: STARTTLS refused, carry on in plain text
        return True

    def _setup_failure(self, stage: str, exc: BaseException) -> Result:
        r = self._remote
        if stage == "connect":
            if isinstance(exc, SMTPConnectResponseError):
                return self._temporary("4.4.1", f"connection to {r} failed: greeted with "
                                                f"{_reply_text(exc.code, exc.message)}")
            return self._temporary("4.4.1", f"connection to {r} failed: {_reason(exc)}")
        if stage == "STARTTLS":
            if isinstance(exc, SMTPResponseException):
                return self._temporary("4.7.5", f"{r} refused STARTTLS: "
                                                f"{_reply_text(exc.code, exc.message)}")
            return self._temporary("4.7.5", f"TLS handshake with {r} failed: {_reason(exc)}")
        if isinstance(exc, SMTPHeloError):
            return self._temporary("4.5.0", f"{r} refused EHLO and HELO: "
                                            f"{_reply_text(exc.code, exc.message)}")
        return self._temporary("4.4.2", f"connection to {r} lost during {stage}: {_reason(exc)}")

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- results -------------------------------------------------------------

    def _result(self, code: int, message: str) -> Result:
        """The result for a server reply (or a synthetic one in the same form)."""
        reply = _reply_text(code, message)
        klass = code // 100
        if klass not in (2, 4, 5):
            return self._unexpected(code, message, "DATA")
        outcome = {2: Outcome.DELIVERED, 4: Outcome.TEMPORARY, 5: Outcome.PERMANENT}[klass]
        return Result(outcome, code, reply, _status(code, reply), self._remote)

    def _unexpected(self, code: int, message: str, stage: str) -> Result:
        return self._temporary("4.5.0", f"unexpected reply from {self._remote} to {stage}: "
                                        f"{_reply_text(code, message)}")

    def _temporary(self, status: str, text: str) -> Result:
        reply = _one_line(f"451 {status} {text}")
        return Result(Outcome.TEMPORARY, 451, reply, status, self._remote)


async def _hello(client: SMTP) -> None:
    """EHLO, falling back to HELO when EHLO is refused (as aiosmtplib itself does)."""
    try:
        await client.ehlo()
    except SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _smtputf8(sender: str, recipient: str, data: bytes, declared: bool) -> tuple[bool, bool]:
    """(needs SMTPUTF8, asks for it).  Needed for UTF-8 addresses, or UTF-8 headers
    in a message whose client declared SMTPUTF8 (an ASCII one goes without, as in Postfix)."""
    if not (sender.isascii() and recipient.isascii()):
        return True, True
    if not declared:
        return False, False
    end = 0 if data.startswith(b"\r\n") else data.find(b"\r\n\r\n")
    return not (data if end < 0 else data[:end]).isascii(), True


def _one_line(text: str) -> str:
    """Control characters (CR, LF, ...) become single spaces; bounded in length."""
    return _CONTROLS.sub(" ", text).strip()[:_MAX_REPLY]


def _reply_text(code: int, message: str) -> str:
    """``"550 5.1.1 <x@y>: no such user"``: one line, continuation lines joined.

    A status code repeated at the start of continuation lines is dropped.

    A one-line reply of printable ASCII (every ``250`` in practice) takes a shortcut
    to the same text: it has no continuation line, nothing to replace and no control
    character, and the only blank that ``strip`` can meet in it is the space (the
    encoding round trip, the split, the regular expressions and the join: 5 us of
    the 6 a delivered copy's result took).
    """
    if message.isascii() and message.isprintable():  # no CR, LF or other control
        text = message.strip(" ")
        return (f"{code} {text}" if text else str(code))[:_MAX_REPLY]
    message = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    lines = [line.strip() for line in message.split("\n")]
    first = _ENHANCED.match(lines[0]) if lines else None
    if first:
        repeated = first.group(0)
        lines[1:] = [line.removeprefix(repeated).lstrip() for line in lines[1:]]
    return _one_line(f"{code} " + " ".join(line for line in lines if line))


def _status(code: int, reply: str) -> str:
    """The enhanced status code of a reply, or one derived from its class."""
    m = _ENHANCED.match(reply, len(str(code)) + 1)
    if m and m.group(1) == str(code)[0]:
        return m.group(0)
    return f"{code // 100}.0.0"


def _reason(exc: BaseException) -> str:
    """A short, traceback-free reason for a connection-level failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    cause = exc.__cause__ if isinstance(exc, SMTPException) and exc.__cause__ else exc
    if isinstance(cause, socket.gaierror):
        return str(cause.strerror or cause)
    if isinstance(cause, OSError) and not isinstance(cause, SMTPException) and cause.errno:
        return os.strerror(cause.errno)
    if isinstance(cause, SMTPException):
        return _one_line(cause.message)
    return _one_line(str(cause)) or type(cause).__name__
