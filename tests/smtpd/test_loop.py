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
import gc
import re
import ssl
import weakref
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
from beacon_proxy.smtpd.server import SmtpServer
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
    smtp_QUIT = SMTP.smtp_QUIT


_BODY = b"Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\n"
_VOCABULARY = [
    b"HELO client.example", b"EHLO client.example", b"helo client.example", b"HELO",
    b"MAIL FROM:<a@example.org>", b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
    b"MAIL FROM:<>", b"mail from:<a@example.org>", b"MAIL FROM:<\xc3\xa9@example.org>",
    b"MAIL FROM:<\xff@example.org>", b"RCPT TO:<b@example.net>", b"RCPT TO:<>",
    b"RCPT TO:<b@example.net> NOTIFY=NEVER", b"RCPT TO:b", b"DATA", b"DATA x", b"RSET",
    b"NOOP", b"NOOP  arg  ", b"VRFY b@example.net", b"VRFY", b"HELP", b"HELP MAIL", b"HELP X",
    b"EXPN list", b"AUTH PLAIN", b"AUTH", b"STARTTLS", b"", b" ", b"   ", b"BOGUS", b"bogus x",
    b"\xff\xfe", b"N\xc3\xb6OP", b"NOOP \xff", b"BOOM", b"KBOOM", b"QUIT now", b"QUIT",
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


async def test_nothing_pipelined_after_quit_is_run(serve: Serve) -> None:
    """A transaction pipelined after QUIT is neither answered nor queued: aiosmtpd's
    QUIT cancels its loop, the relay's ends it by a flag (``smtp_QUIT``)."""
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO c")).code == 250
    await client.send(b"QUIT\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                      b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    assert await asyncio.wait_for(client.reader.read(), WAIT) == b"221 Bye\r\n"
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
    await asyncio.sleep(0)
    assert running.enqueue.calls == []
    await client.close()


@pytest.mark.parametrize("base", [Ours, Theirs])
def test_no_command_pipelined_after_quit_is_run(base: type[Ours]) -> None:
    """Not even one: with aiosmtpd's QUIT its loop is cancelled, and a command
    already buffered gets as far as its reply's drain; the relay's loop stops."""
    ran: list[str] = []

    class Counting(base):  # type: ignore[valid-type,misc]
        async def smtp_NOOP(self, arg: str) -> None:
            ran.append("NOOP")
            await super().smtp_NOOP(arg)

    async def run() -> bytes:
        return await _served(Counting, {}, lambda r, w: _pipelined(
            r, w, [b"NOOP\r\n", b"QUIT\r\n", b"NOOP\r\n", b"NOOP\r\n"]))

    factory, _ = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        got = runner.run(run())
    assert got == b"220 mx.test.example ESMTP beacon-proxy\r\n250 OK\r\n221 Bye\r\n"
    assert ran == (["NOOP"] if base is Ours else ["NOOP", "NOOP"])


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


class _Timed(SmtpProtocol):
    """Counts aiosmtpd's timeouts instead of closing a transport."""

    timeouts = 0

    def _timeout_cb(self) -> None:
        self.timeouts += 1


class _Eager(_Timed):
    """aiosmtpd's eager idle timer: cancelled and scheduled again at every re-arm."""

    def _reset_timeout(self, duration: float | None = None) -> None:
        SMTP._reset_timeout(self, duration or self._idle_duration())


def _fire_due(loop: asyncio.AbstractEventLoop, conn: SmtpProtocol, now: float) -> None:
    """Run the connection's timer callbacks due at ``now``, as the loop would."""
    while True:
        handle: Any = conn._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > now:
            return
        callback, args = handle._callback, handle._args
        handle.cancel()  # ran: its callback may schedule a new one
        callback(*args)


def test_a_rearm_stores_the_deadline_and_keeps_the_timer() -> None:
    loop = asyncio.new_event_loop()
    clock = _Clock()
    loop.time = clock  # type: ignore[method-assign]
    try:
        conn = _Timed(object(), Connections(1), hostname="h", timeout=300,
                      idle_timeout_untrusted=30, loop=loop)
        conn.trusted = False
        conn._reset_timeout()
        first = _timer(conn)
        assert first.when() == 1300.0
        clock.now += 10
        conn._reset_timeout()  # a later deadline: stored, the loop's timer kept
        assert _timer(conn) is first and conn._deadline == 1310.0
        conn.session = conn._create_session()  # not authenticated, no MAIL: untrusted idle
        conn._reset_timeout()  # an earlier deadline: the timer is set again
        second = _timer(conn)
        assert first.cancelled() and second.when() == 1040.0
        clock.now = 1040.0
        _fire_due(loop, conn, clock.now)
        assert conn.timeouts == 1
        conn._timeout_handle = None
        conn.trusted = True
        conn.session = None
        conn._reset_timeout()  # none pending after the timeout: a new one
        assert _timer(conn).when() == 1340.0
        _timer(conn).cancel()
    finally:
        loop.close()


def test_a_timer_that_fires_early_waits_for_the_deadline() -> None:
    loop = asyncio.new_event_loop()
    clock = _Clock()
    loop.time = clock  # type: ignore[method-assign]
    try:
        conn = _Timed(object(), Connections(1), hostname="h", timeout=300, loop=loop)
        conn._reset_timeout()
        clock.now = 1200.0
        conn._reset_timeout()  # deadline 1500
        clock.now = 1300.0
        _fire_due(loop, conn, clock.now)
        assert conn.timeouts == 0 and _timer(conn).when() == 1500.0
        clock.now = 1499.0
        _fire_due(loop, conn, clock.now)
        assert conn.timeouts == 0
        clock.now = 1500.0
        _fire_due(loop, conn, clock.now)
        assert conn.timeouts == 1
    finally:
        loop.close()


_STEP = st.tuples(
    st.sampled_from(["rearm", "mail", "end", "auth", "tick"]),
    st.sampled_from([0.0, 0.001, 0.5, 1.0, 9.0, 10.0, 29.0, 30.0, 31.0, 299.0, 300.0]))


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_STEP, max_size=30), trusted=st.booleans())
def test_the_lazy_idle_timer_times_out_when_aiosmtpds_would(
        steps: list[tuple[str, float]], trusted: bool) -> None:
    """Differential: the same re-arms and clock moves for the relay's lazy timer and
    aiosmtpd's eager one (each re-arm cancels and schedules); the timeout comes at
    the same step, or at none.  Steps change which timeout applies (MAIL starts a
    transaction, its end or an AUTH end it) as the connection's life does."""
    loop = asyncio.new_event_loop()
    clock = _Clock()
    loop.time = clock  # type: ignore[method-assign]
    try:
        conns = [cls(object(), Connections(1), hostname="h", timeout=300,
                     idle_timeout_untrusted=30, loop=loop) for cls in (_Timed, _Eager)]
        for conn in conns:
            conn.trusted = trusted
            conn.session = conn._create_session()
            conn.envelope = conn._create_envelope()
            conn._reset_timeout()  # connection_made
        for what, dt in steps:
            clock.now += dt
            for conn in conns:
                _fire_due(loop, conn, clock.now)
            assert conns[0].timeouts == conns[1].timeouts, (what, clock.now)
            if conns[0].timeouts:
                break
            for conn in conns:
                assert conn.session is not None and conn.envelope is not None
                if what == "mail":
                    conn.envelope.mail_from = "a@example.org"
                elif what == "end":
                    conn.envelope = conn._create_envelope()
                elif what == "auth":
                    conn.session.authenticated = True
                if what != "tick":
                    conn._reset_timeout()
        clock.now += 301  # past any deadline: both time out now, if not before
        for conn in conns:
            _fire_due(loop, conn, clock.now)
        assert conns[0].timeouts == conns[1].timeouts == 1
    finally:
        loop.close()


_ENDINGS = {
    "quit": [b"EHLO c\r\n", b"QUIT\r\n"],
    "message then quit": [b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                          b"RCPT TO:<b@example.net>\r\n", b"DATA\r\n", _BODY, b"QUIT\r\n"],
    "client closes": [b"EHLO c\r\n"],
    "client closes in data": [b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                              b"RCPT TO:<b@example.net>\r\n", b"DATA\r\n", b"Subject: x\r\n"],
    "refused": [],
}


@pytest.mark.parametrize("ending", sorted(_ENDINGS))
@pytest.mark.parametrize("loop_name", ["asyncio", "auto"])
def test_a_finished_connection_is_freed_without_the_cyclic_gc(ending: str,
                                                                loop_name: str) -> None:
    """No reference cycle is left when a connection ends, however it ends: its
    objects go when the last reference does, not at a collection of the cyclic
    GC (which they also used to trigger, ~25 objects a connection)."""
    chunks = _ENDINGS[ending]

    async def run() -> None:
        cfg = SmtpConfig(listen=Endpoint("127.0.0.1", 0),
                         max_connections=0 if ending == "refused" else 10)
        server = SmtpServer(cfg, FakeEnqueue(), hostname="mx.test.example")
        made: list[weakref.ref[SmtpProtocol]] = []
        real = server._new_connection

        def tracked() -> SmtpProtocol:
            conn = real()
            made.append(weakref.ref(conn))
            return conn

        server._new_connection = tracked  # type: ignore[method-assign]
        await server.start()
        conns = server.connections
        loop = asyncio.get_running_loop()
        try:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                await _reply(reader)  # the greeting, or the refusal
                for chunk in chunks:
                    writer.write(chunk)
                    if chunk != b"Subject: x\r\n":  # a message cut short: no reply
                        await _reply(reader)
                if not chunks or chunks[-1] == b"QUIT\r\n":
                    assert await asyncio.wait_for(reader.read(), WAIT) == b""
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
                for _ in range(10):  # the close's callbacks, the loop task's end
                    await asyncio.sleep(0)
            assert len(made) == 2 and all(ref() is None for ref in made), ending
        finally:
            await server.stop(1.0)

    gc.collect()
    gc.disable()
    try:
        factory, _ = loop_factory(loop_name)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run())
    finally:
        gc.enable()
