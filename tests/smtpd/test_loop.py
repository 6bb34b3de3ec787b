"""The relay's command loop (SmtpProtocol._handle_client) against aiosmtpd's own.

The relay replaces aiosmtpd 1.4's ``SMTP._handle_client`` for its cost per
command line; everything a client sees must stay the same.  Each script here is
played against two servers that differ only in the loop: ours, and a subclass
running aiosmtpd's (``Theirs``).  Scripts are sent one line at a time (each reply
read before the next line) and all at once (pipelined), and the bytes each
server sent, up to its close, must be equal: greeting, every reply, the order,
where the connection ends.  Lines come from a vocabulary that covers the
loop's branches: over-long lines (past the command limit, past the reader's
64 KB limit), empty and blank lines, non-ASCII verbs and arguments, bare LF line
ends, unknown commands up to the bogus-command budget, call limits, STARTTLS
required first, exceptions in a command and in ``handle_exception``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.eventloop import loop_factory
from beacon_proxy.smtpd.handler import SmtpHandler
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol
from tests.smtpd.conftest import WAIT, FakeEnqueue, Serve, Tls

T = TypeVar("T")


class _Handler(SmtpHandler):
    """The relay's handler, whose ``handle_exception`` itself fails for a KeyError."""

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, KeyError):
            raise ValueError("the handler failed too")
        return await super().handle_exception(error)


class Ours(SmtpProtocol):
    """The relay's protocol plus two commands that raise (for the exception paths)."""

    async def smtp_BOOM(self, arg: str | None) -> None:
        raise RuntimeError("boom")

    async def smtp_KBOOM(self, arg: str | None) -> None:
        raise KeyError("kboom")


class Theirs(Ours):
    """The same, with aiosmtpd's own command loop."""

    _handle_client = SMTP._handle_client


_BODY = b"Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\n"
_VOCABULARY = [
    b"HELO client.example", b"EHLO client.example", b"helo client.example", b"HELO",
    b"MAIL FROM:<a@example.org>", b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
    b"MAIL FROM:<>", b"mail from:<a@example.org>", b"MAIL FROM:<\xc3\xa9@example.org>",
    b"MAIL FROM:<\xff@example.org>", b"RCPT TO:<b@example.net>", b"RCPT TO:<>",
    b"RCPT TO:<b@example.net> NOTIFY=NEVER", b"RCPT TO:b", b"DATA", b"DATA x", b"RSET",
    b"NOOP", b"NOOP  arg  ", b"VRFY b@example.net", b"VRFY", b"HELP", b"HELP MAIL", b"HELP X",
    b"EXPN list", b"AUTH PLAIN", b"AUTH", b"STARTTLS", b"", b" ", b"   ", b"BOGUS", b"bogus x",
    b"\xff\xfe", b"N\xc3\xb6OP", b"NOOP \xff", b"BOOM", b"KBOOM", b"QUIT now",
    b"NOOP " + b"a" * 600,  # past the 512-octet command limit
    b"NOOP " + b"a" * 507, b"NOOP " + b"a" * 508,  # 512 and 513 octets
    # MAIL's limit after EHLO: 512 + 26 (SIZE) + 10 (SMTPUTF8)
    b"MAIL FROM:<a@example.org> X=" + b"x" * 510, b"MAIL FROM:<a@example.org> X=" + b"x" * 511,
    b"MAIL FROM:<a@example.org> " + b"X" * 600,
    b"X" * 70_000,  # past the reader's 64 KB limit: read away, then 500
    b"RCPT TO:<" + b"c" * 1100 + b"@example.net>",
]
_CONFIGS: dict[str, dict[str, Any]] = {
    "server": {},  # as SmtpServer builds a connection
    "ascii": {"enable_SMTPUTF8": False},
    "limits": {"command_call_limit": {"NOOP": 2, "RSET": 1, "*": 6}},
}


def _protocol(cls: type[SmtpProtocol], handler: SmtpHandler, extra: dict[str, Any],
              loop: asyncio.AbstractEventLoop) -> SmtpProtocol:
    kwargs: dict[str, Any] = {"hostname": "mx.test.example", "ident": "ESMTP beacon-proxy",
                              "data_size_limit": 10_000, "enable_SMTPUTF8": True,
                              "timeout": 300, "idle_timeout_untrusted": 30,
                              "auth_exclude_mechanism": ("PLAIN", "LOGIN"), "loop": loop}
    return cls(handler, Connections(100), **{**kwargs, **extra})


async def _served(cls: type[SmtpProtocol], extra: dict[str, Any],
                  talk: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]]
                  ) -> T:
    """``talk(reader, writer)`` with a server of ``cls`` connections."""
    loop = asyncio.get_running_loop()
    handler = _Handler(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue())
    server = await loop.create_server(lambda: _protocol(cls, handler, extra, loop),
                                      "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(talk(reader, writer), WAIT)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


_CLOSING = (b"221 ", b"421 ", b"502 5.5.1 Too many")  # replies after which the server closes


async def _lockstep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    lines: list[bytes], ends: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Each line, then its reply (a body after DATA's 354), QUIT at the end, until
    the server closes: what it sent (queue ids masked) and the chunks sent."""
    got = await _reply(reader)  # the greeting
    sent: list[bytes] = []
    chunks = [line + ends[i % len(ends)] for i, line in enumerate(lines)]
    for chunk in [*chunks, b"QUIT\r\n"]:
        reply = await _send(reader, writer, chunk, sent)
        if reply.startswith(b"354 "):
            got += reply
            reply = await _send(reader, writer, _BODY, sent)
        got += reply
        if reply.startswith(_CLOSING):
            break
    got += await reader.read()  # the server's close
    return _masked(got), sent


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: bytes,
                sent: list[bytes]) -> bytes:
    writer.write(chunk)
    await writer.drain()
    sent.append(chunk)
    return await _reply(reader)


async def _pipelined(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     chunks: list[bytes]) -> bytes:
    """All the chunks in one write, then everything the server sends to its close."""
    writer.write(b"".join(chunks))
    await writer.drain()
    return _masked(await reader.read())


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (all its lines)."""
    got = b""
    while True:
        line = await reader.readline()
        got += line
        if not line.endswith(b"\n") or line[3:4] != b"-":
            return got


def _masked(transcript: bytes) -> bytes:
    return re.sub(rb"queued as \w+", b"queued as ID", transcript)


def _same(extra: dict[str, Any], lines: list[bytes], ends: list[bytes]) -> None:
    """The line by line dialogue, and the same chunks pipelined, get the same bytes
    from both loops."""
    async def both() -> None:
        ours, sent = await _served(Ours, extra, lambda r, w: _lockstep(r, w, lines, ends))
        theirs, sent_theirs = await _served(Theirs, extra,
                                            lambda r, w: _lockstep(r, w, lines, ends))
        assert ours == theirs
        assert sent == sent_theirs
        assert ours.startswith(b"220 mx.test.example ESMTP beacon-proxy\r\n")
        piped = await _served(Ours, extra, lambda r, w: _pipelined(r, w, sent))
        assert piped == await _served(Theirs, extra, lambda r, w: _pipelined(r, w, sent))
        assert piped.startswith(b"220 mx.test.example ESMTP beacon-proxy\r\n")

    factory, _ = loop_factory("auto")  # uvloop where installed, as serve runs
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(both())


_LINES = st.lists(st.sampled_from(_VOCABULARY), max_size=14)
_ENDS = st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=1, max_size=3)


@pytest.mark.parametrize("config", sorted(_CONFIGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_LINES, ends=_ENDS)
def test_every_reply_is_aiosmtpds(config: str, lines: list[bytes], ends: list[bytes]) -> None:
    _same(_CONFIGS[config], lines, ends)


def test_a_transaction_and_each_limit() -> None:
    """Fixed scripts through each branch, whatever hypothesis draws."""
    mail = [b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA"]
    for lines in (mail, [b"X" * 70_000, b"NOOP " + b"a" * 600, b"", b"\xff", *mail],
                  [b"BOGUS"] * 6, [b"BOOM", b"KBOOM", b"NOOP"], [b"NOOP"] * 4, [b"RSET"] * 2,
                  [b"EHLO c", b"HELO c", b"MAIL FROM:<a@example.org> X=" + b"x" * 510]):
        for config in _CONFIGS.values():
            _same(config, lines, [b"\r\n"])


def test_starttls_required_first(tls: Tls) -> None:
    """Before STARTTLS, only NOOP, EHLO, STARTTLS and QUIT (RFC 3207 section 4)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    extra = {"tls_context": context, "require_starttls": True}
    _same(extra, [b"HELO c", b"EHLO c", b"NOOP", b"MAIL FROM:<a@example.org>", b"BOGUS",
                  b"HELP", b"DATA"], [b"\r\n", b"\n"])


def test_the_proxy_protocol_is_refused() -> None:
    """aiosmtpd's PROXY handshake is in the loop the relay replaces: not offered."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="PROXY"):
            SmtpProtocol(object(), Connections(1), hostname="h", proxy_protocol_timeout=5.0,
                         loop=loop)
    finally:
        loop.close()


async def test_a_client_closing_mid_command_or_mid_data_is_released(serve: Serve) -> None:
    running = await serve()
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    for tail in (b"MAIL FROM:<a@exa", b"DATA\r\nSubject: x\r\n\r\nhalf a bo"):
        client = await running.connect()
        assert (await client.cmd("EHLO c")).code == 250
        if tail.startswith(b"DATA"):
            assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
            assert (await client.cmd("RCPT TO:<b@example.net>")).code == 250
        await client.send(tail)
        client.writer.close()
        assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
    assert running.enqueue.calls == []


class _Clock:
    """A loop clock the test moves (no wall clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _timer(conn: SmtpProtocol) -> asyncio.TimerHandle:
    handle: Any = conn._timeout_handle
    assert isinstance(handle, asyncio.TimerHandle)
    return handle


def test_the_idle_timer_is_rearmed_only_when_its_deadline_would_move() -> None:
    loop = asyncio.new_event_loop()
    clock = _Clock()
    loop.time = clock  # type: ignore[method-assign]
    try:
        conn = SmtpProtocol(object(), Connections(1), hostname="h", timeout=300,
                            idle_timeout_untrusted=30, loop=loop)
        conn.trusted = False
        conn._reset_timeout()
        first = _timer(conn)
        assert first.when() == 1300.0
        conn._rearm()  # the same instant, the same duration: the same deadline
        assert _timer(conn) is first
        clock.now += 0.001
        conn._rearm()
        second = _timer(conn)
        assert second is not first and second.when() == 1300.001 and first.cancelled()
        conn.session = conn._create_session()  # not authenticated, no MAIL: untrusted idle
        conn._rearm()  # the same instant, a shorter duration
        assert _timer(conn) is not second and _timer(conn).when() == 1030.001
        armed: Any = conn._armed
        assert armed == (1000.001, 30)
        _timer(conn).cancel()
    finally:
        loop.close()
