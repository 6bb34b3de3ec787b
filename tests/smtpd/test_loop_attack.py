"""The relay's own command loop under attack, where the real relay cannot be driven
from outside: IPv4-mapped peers and the kept relay verdict, a client leaving while
its message is being queued, commands that raise (in the command and in
``handle_exception``) and clients leaving after that.  (The attacks from the
network are in ``tests/e2e/test_command_loop_attack.py``.)  And the one break
found: a connection closed by the relay in the middle of a STARTTLS handshake
(the idle timer, a stop) kept its slot forever."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from beacon_proxy.smtpd.handler import SmtpHandler
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol
from beacon_proxy.smtpd.replies import TOO_MANY_FROM_CLIENT
from tests.smtpd.conftest import WAIT, Serve, Tls

NETS = (ipaddress.ip_network("192.0.2.0/24"),)


def test_ipv4_mapped_peers_are_judged_and_counted_as_their_ipv4_address() -> None:
    """A dual-stack socket's ``::ffff:a.b.c.d``: outside allow_networks it is a
    stranger counted with ``a.b.c.d`` (no second budget), its RCPT verdict is the
    IPv4 address's; inside, trusted.  A kept verdict answers only its own
    spelling of the address and its own networks object."""
    loop = asyncio.new_event_loop()
    try:
        conns = Connections(8, 1, NETS)

        def conn() -> SmtpProtocol:
            return SmtpProtocol(object(), conns, hostname="h", loop=loop)

        mapped = conn()
        assert conns.admit(mapped, "::ffff:198.51.100.7") is None
        assert (mapped.trusted, mapped.client_group) == (False, "198.51.100.7")
        assert conns.admit(conn(), "198.51.100.7") == TOO_MANY_FROM_CLIENT
        assert conns.admit(conn(), "::ffff:c633:6407") == TOO_MANY_FROM_CLIENT  # same, in hex
        assert not mapped.allowed_by_address("::ffff:198.51.100.7", conns.trusted)
        # The same connection asked about an allowed address (another spelling,
        # other networks): computed afresh, never the kept "no" nor a kept "yes".
        assert mapped.allowed_by_address("::ffff:c000:209", conns.trusted)
        assert not mapped.allowed_by_address("::ffff:198.51.100.7", conns.trusted)
        assert mapped.allowed_by_address("::ffff:198.51.100.7",
                                         (ipaddress.ip_network("198.51.100.0/24"),))
        assert not mapped.allowed_by_address("::ffff:198.51.100.7", conns.trusted)
        inside = conn()
        assert conns.admit(inside, "::ffff:192.0.2.9") is None
        assert (inside.trusted, inside.client_group) == (True, None)
        assert inside.allowed_by_address("::ffff:192.0.2.9", conns.trusted)
        assert not inside.allowed_by_address("::ffff:198.51.100.7", conns.trusted)
    finally:
        loop.close()


async def test_a_client_leaving_while_its_message_is_queued_loses_nothing(
        serve: Serve) -> None:
    """The final dot sent, the client goes while the spool is still writing: the
    message is queued whole (never half), once, and the slot is released."""
    running = await serve()
    running.enqueue.gate = asyncio.Event()
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    client = await running.connect()
    body = b"Subject: x\r\n\r\n" + b"line\r\n" * 5000
    for line in ("EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"):
        assert (await client.cmd(line)).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send(body + b".\r\n")
    await asyncio.wait_for(running.enqueue.started.wait(), WAIT)
    await client.close()
    assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
    running.enqueue.release()
    await asyncio.wait_for(running.enqueue.finished.wait(), WAIT)
    ((envelope, data),) = running.enqueue.calls
    assert data.endswith(b"line\r\n" * 5000) and envelope.recipients == ("b@example.net",)


@pytest.mark.parametrize("inner", [False, True])
async def test_a_command_that_raises_answers_and_the_slot_is_released(
        serve: Serve, monkeypatch: pytest.MonkeyPatch, inner: bool) -> None:
    """A hook raising outside the handler's guard (and, ``inner``, handle_exception
    raising in turn): answered, the loop goes on, and a client leaving after it (or
    in the middle of the next command) is released; the limit is not leaked."""
    async def boom(*args: Any) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(SmtpHandler, "handle_NOOP", boom, raising=False)
    if inner:
        monkeypatch.setattr(SmtpHandler, "handle_exception", boom)
    running = await serve(max_connections=1)
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    for tail in (b"", b"MAIL FROM:<a@exa", b"NOOP\r\n"):
        client = await running.connect()
        reply = await client.cmd("NOOP")
        assert reply.code == (500 if inner else 451), reply
        assert (await client.cmd("EHLO c")).code == 250
        await client.send(tail)
        await client.close()
        assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
    assert running.enqueue.calls == []


@pytest.mark.parametrize("close", ["idle timer", "shutdown", "client"])
async def test_a_connection_closed_mid_tls_handshake_frees_its_slot(
        serve: Serve, tls: Tls, close: str) -> None:
    """STARTTLS answered, no handshake: the idle timer (or a stop) closes the
    connection.  asyncio's SSLProtocol then completes the STARTTLS waiter without
    an error and never tells the protocol the connection is lost: aiosmtpd's
    STARTTLS returned as if secured and its loop waited for a line forever, the
    slot against max_connections (and the client's) held for good.  (A client
    that goes mid-handshake itself was released already.)"""
    running = await serve(tls_cert=tls.cert, tls_key=tls.key, max_connections=1)
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    for _ in range(3):
        client = await running.connect()
        assert (await client.cmd("EHLO c")).code == 250
        assert (await client.cmd("STARTTLS")).code == 220
        (conn,) = list(conns._open)
        if close == "idle timer":
            timer: Any = conn
            timer._timeout_cb()
        elif close == "shutdown":
            conn.shutdown()
        else:  # the client goes instead: that was released already
            await client.send(b"\x16\x03\x01")
            await client.close()
        assert close == "client" or await client.at_eof()
        assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
        assert conn._handler_coroutine is not None
        await asyncio.wait_for(asyncio.wait([conn._handler_coroutine]), WAIT)
        await client.close()
