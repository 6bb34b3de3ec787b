"""Round 9's receive-side cuts (the lazy idle timer, QUIT by a flag, the kept relay
verdicts) attacked from the network, on a real server and real sockets.

What is pinned here:

* no idle timer outlives its connection: whatever point a connection is lost at
  (mid-line, a pipelined burst and a close, mid-DATA, while its message is
  queued, mid-AUTH, after STARTTLS, mid-handshake (the client's side or the
  relay's idle timer), QUIT with commands pipelined after it, the
  relay's own idle timeout), once it is lost its timer is cancelled and no
  re-arm schedules another one (that one would keep the dead protocol alive
  for the timeout and then run aiosmtpd's ``_timeout_cb`` on a transport of
  ``None``: an AssertionError in a loop callback);
* the lazy timer still times out what the eager one did: a client stalled in
  the middle of DATA (``command_timeout``), an untrusted client idle after
  STARTTLS (the new session is not authenticated: ``idle_timeout_untrusted``),
  an untrusted client stalled inside a transaction only at ``command_timeout``;
* the relay verdict kept by address answers what ``relay_allowed`` answers for
  loopback clients inside and outside ``allow_networks``, connection after
  connection (the RCPT reply on the wire).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import ipaddress
import math
import weakref
from typing import Any

import pytest

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.eventloop import loop_factory
from beacon_proxy.smtpd.limits import FakeClock
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol
from beacon_proxy.smtpd.server import SmtpServer
from tests.smtpd.client import RawClient
from tests.smtpd.conftest import USER_HASH, WAIT, FakeEnqueue, Running, Serve, Tls

ONLY_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)  # 127.0.0.2 is not trusted


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> list[SmtpProtocol]:
    """Every connection whose ``connection_lost`` ran, in order."""
    seen: list[SmtpProtocol] = []
    original = SmtpProtocol.connection_lost

    def record(self: SmtpProtocol, error: Exception | None) -> None:
        original(self, error)
        if not self._refused:
            seen.append(self)

    monkeypatch.setattr(SmtpProtocol, "connection_lost", record)
    return seen


def _no_timer_left(conn: SmtpProtocol) -> None:
    handle: Any = conn._timeout_handle
    assert handle is None or handle.cancelled(), handle
    assert conn._timer_at == math.inf
    assert conn.transport is None


async def _ending(running: Running, ending: str, tls: Tls) -> None:
    """Play one way of losing a connection against ``running``."""
    # a transaction needs a trusted client; the others are untrusted (short timer)
    trusted = ending in ("mid-data", "while queued")
    client = await running.connect(source="127.0.0.1" if trusted else "127.0.0.2")
    if ending == "mid-line":
        await client.send(b"EHLO half-a-line")
    elif ending == "pipelined burst":
        await client.send(b"EHLO a\r\nNOOP\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n"
                          b"NOOP\r\nNOOP\r\n" * 20)
    elif ending == "mid-data":
        await client.send(b"EHLO a\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                          b"DATA\r\nSubject: x\r\n\r\nhalf a bo")
        for _ in range(4):
            await client.reply()  # EHLO's is one reply: 250-... lines
    elif ending == "while queued":
        assert running.enqueue.gate is not None
        # started stays set from the first round: wait for this round's own hand-off
        running.enqueue.started.clear()
        await client.send(b"EHLO a\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                          b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        await asyncio.wait_for(running.enqueue.started.wait(), WAIT)
    elif ending == "mid-auth":
        await client.send(b"EHLO a\r\nAUTH LOGIN\r\n")
    elif ending == "after starttls":
        assert (await client.cmd("EHLO a")).code == 250
        await client.starttls(tls.client)
        assert (await client.cmd("EHLO a")).code == 250
        await client.send(b"NOOP\r\nNOOP\r\n")
    elif ending == "mid-handshake":
        assert (await client.cmd("EHLO a")).code == 250
        assert (await client.cmd("STARTTLS")).code == 220
        await client.send(b"\x16\x03\x01\x00")
    elif ending == "handshake stalled":  # the relay's idle timer ends the handshake
        assert (await client.cmd("EHLO a")).code == 250
        assert (await client.cmd("STARTTLS")).code == 220
        assert await client.at_eof()
    elif ending == "quit pipelined":
        await client.send(b"EHLO a\r\nQUIT\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n")
        assert await client.at_eof()
    elif ending == "relay timeout":
        await client.send(b"EHLO a\r\n")
        assert await client.at_eof()  # idle_timeout_untrusted
    await client.close()


ENDINGS = ["mid-line", "pipelined burst", "mid-data", "while queued", "mid-auth",
           "after starttls", "mid-handshake", "handshake stalled", "quit pipelined",
           "relay timeout"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_no_idle_timer_outlives_its_connection(
        serve: Serve, tls: Tls, lost: list[SmtpProtocol], ending: str) -> None:
    """Lost at any point: the idle timer is cancelled and stays so (no re-arm after
    the loss), nothing fails in a loop callback, the slot is released."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        running = await serve(tls_cert=tls.cert, tls_key=tls.key,
                              allow_networks=ONLY_127_0_0_1, auth_users={"alice": USER_HASH},
                              idle_timeout_untrusted=0.3, command_timeout=300)
        if ending == "while queued":
            running.enqueue.gate = asyncio.Event()
        conns = running.server.connections
        for _ in range(3):
            await _ending(running, ending, tls)
            assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
        running.enqueue.release()
        for conn in lost:
            task = conn._handler_coroutine
            assert task is not None
            await asyncio.wait_for(asyncio.wait([task]), WAIT)
        await asyncio.sleep(0)
        assert len(lost) == 3
        for conn in lost:
            _no_timer_left(conn)
        # no _idle_check of a lost connection is left in the loop's timers
        scheduled: list[Any] = getattr(loop, "_scheduled", [])
        pending = [h for h in scheduled if not h.cancelled()
                   and getattr(h._callback, "__self__", None) in lost]
        assert pending == []
        assert errors == []
    finally:
        loop.set_exception_handler(previous)
    if ending == "while queued":
        assert len(running.enqueue.calls) == 3  # accepted: queued although the client left


@pytest.mark.parametrize("ending", ["pipelined burst", "mid-data", "while queued",
                                    "after starttls", "handshake stalled", "quit pipelined",
                                    "relay timeout"])
def test_no_idle_timer_outlives_its_connection_on_the_relays_loop(
        tls: Tls, lost: list[SmtpProtocol], ending: str) -> None:
    """The same on the loop the relay runs by default (``event_loop = "auto"``:
    uvloop where installed, whose clock and timers are libuv's)."""
    errors: list[dict[str, Any]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        cfg = SmtpConfig(listen=Endpoint("127.0.0.1", 0), tls_cert=tls.cert, tls_key=tls.key,
                         allow_networks=ONLY_127_0_0_1, auth_users={"alice": USER_HASH},
                         idle_timeout_untrusted=0.3, command_timeout=300)
        enqueue = FakeEnqueue()
        if ending == "while queued":
            enqueue.gate = asyncio.Event()
        server = SmtpServer(cfg, enqueue, hostname="mx.test.example", clock=FakeClock())
        await server.start()
        running = Running(server, enqueue, cfg, [])
        conns = server.connections
        try:
            for _ in range(2):
                await _ending(running, ending, tls)
                assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
            enqueue.release()
            for conn in lost:
                assert conn._handler_coroutine is not None
                await asyncio.wait_for(asyncio.wait([conn._handler_coroutine]), WAIT)
            await asyncio.sleep(0.05)
            assert len(lost) == 2
            for conn in lost:
                _no_timer_left(conn)
        finally:
            for client in running.clients:
                await client.close()
            await server.stop(1.0)

    factory, _ = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    assert errors == []


async def test_a_client_stalled_in_data_is_closed_at_the_command_timeout(
        serve: Serve) -> None:
    """The DATA command re-arms the timer once; a body that stops coming is cut at
    ``command_timeout`` from there (the lazy timer does not wait on for a later
    deadline nobody set), and nothing is queued."""
    running = await serve(command_timeout=0.3)
    client = await running.connect()
    assert (await client.cmd("EHLO a")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send(b"Subject: stalled\r\n\r\nand then noth")
    assert await client.at_eof()
    assert running.enqueue.calls == []
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)


async def test_an_untrusted_client_idle_after_starttls_gets_the_short_timeout(
        serve: Serve, tls: Tls) -> None:
    """STARTTLS makes a new session (not authenticated, no transaction): the short
    timer applies again, while a trusted client and an untrusted one in a
    transaction, idle as long, stay."""
    running = await serve(tls_cert=tls.cert, tls_key=tls.key, allow_networks=ONLY_127_0_0_1,
                          idle_timeout_untrusted=0.3, command_timeout=300)
    trusted = await running.connect()
    busy = await running.connect(source="127.0.0.2")
    assert (await busy.cmd("EHLO a")).code == 250
    assert (await busy.cmd("MAIL FROM:<a@example.org>")).code == 250
    idle = await running.connect(source="127.0.0.2")
    assert (await idle.cmd("EHLO a")).code == 250
    # in a transaction before STARTTLS: the handshake's new session ends it
    assert (await idle.cmd("MAIL FROM:<a@example.org>")).code == 250
    await idle.starttls(tls.client)
    assert await idle.at_eof()
    assert (await trusted.cmd("NOOP")).code == 250
    assert (await busy.cmd("NOOP")).code == 250


async def test_auth_then_rset_keeps_the_command_timeout(serve: Serve, tls: Tls) -> None:
    """An authenticated untrusted client outside a transaction is not on the short
    timer (the AUTH command's re-arm moved its deadline later: the lazy timer
    must not time it out at the earlier one)."""
    running = await serve(tls_cert=tls.cert, tls_key=tls.key, allow_networks=ONLY_127_0_0_1,
                          auth_users={"alice": USER_HASH}, idle_timeout_untrusted=0.3,
                          command_timeout=300)
    client = await running.connect(source="127.0.0.2")
    assert (await client.cmd("EHLO a")).code == 250
    await client.starttls(tls.client)
    assert (await client.cmd("EHLO a")).code == 250
    token = base64.b64encode(b"\0alice\0correct horse").decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).code == 235
    assert (await client.cmd("RSET")).code == 250
    witness = await running.connect(source="127.0.0.3")
    assert (await witness.cmd("EHLO w")).code == 250
    assert await witness.at_eof()  # 0.3 s went by
    assert (await client.cmd("NOOP")).code == 250


async def _rcpt_code(client: RawClient) -> int:
    assert (await client.cmd("EHLO a")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    code = (await client.cmd("RCPT TO:<b@example.net>")).code
    assert (await client.cmd("QUIT")).code == 221
    return code


async def test_kept_verdicts_on_the_wire(serve: Serve) -> None:
    """Connection after connection from a trusted and an untrusted address,
    interleaved: the untrusted one is refused relaying every time (never the
    trusted one's kept verdict), the trusted one accepted every time."""
    running = await serve(allow_networks=ONLY_127_0_0_1)
    for _ in range(3):
        inside = await running.connect()
        outside = await running.connect(source="127.0.0.2")
        assert await _rcpt_code(outside) == 554
        assert await _rcpt_code(inside) == 250


class _Handler:
    async def handle_NOOP(self, server: object, session: object, envelope: object,
                          arg: str) -> str:
        return "250 OK"

    async def auth_XTEST(self, server: object, args: list[str]) -> None:
        return None


def test_a_handler_is_freed_with_its_server_and_its_tables_kept_while_it_lives() -> None:
    """The hooks and AUTH mechanisms found once per handler are shared by its
    connections, and do not keep the handler (with the configuration and enqueue
    it holds) alive once nothing else does: kept in a table of their own, even
    weakly keyed by the handler, its bound methods kept it for good."""
    loop = asyncio.new_event_loop()
    try:
        conns = Connections(8)
        handler = _Handler()
        gone = weakref.ref(handler)
        first = SmtpProtocol(handler, conns, hostname="h", loop=loop)
        second = SmtpProtocol(handler, conns, hostname="h", loop=loop)
        assert first._handle_hooks is second._handle_hooks  # made once
        assert list(first._handle_hooks) == ["NOOP"]
        assert "XTEST" in first._auth_methods
        del first, second, handler
        gc.collect()
        assert gone() is None
    finally:
        loop.close()
