"""PIPELINING on the receive side (RFC 2920): offered, and the replies to a pipelined
group written together (section 3.2), in order, none lost or held past its group."""

from __future__ import annotations

import asyncio
import threading

import pytest

from beacon_proxy.deliver.courier import Outcome
from beacon_proxy.smtpd import handler as handler_module
from beacon_proxy.smtpd.passwords import verify_password
from beacon_proxy.smtpd.protocol import SmtpProtocol
from tests.deliver.test_smtp import bounded, make_courier, send
from tests.smtpd.client import RawClient
from tests.smtpd.conftest import WAIT, Running, Serve, Tls
from tests.smtpd.test_handler_auth import PLAIN_OK, serve_tls, tls_client


def _writes(running: Running) -> list[bytes]:
    """The writes of the server's one connection from now on (its writer spied on)."""
    (conn,) = running.server._connections._open
    writer = conn._writer
    writes: list[bytes] = []
    write = writer.write

    def spy(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    writer.write = spy  # type: ignore[method-assign]
    return writes


async def _after_ehlo(serve: Serve) -> tuple[Running, RawClient, list[bytes]]:
    """A server, a client that has said EHLO, and the server's writes from then on."""
    running = await serve()
    client = await running.connect()
    await client.cmd("EHLO client.test")
    return running, client, _writes(running)



async def test_ehlo_offers_pipelining_in_one_write(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    writes = _writes(running)
    reply = await client.cmd("EHLO client.test")
    assert reply.code == 250 and "PIPELINING" in reply.lines
    assert len(writes) == 1 and writes[0].endswith(b"250 SMTPUTF8\r\n")
    assert writes[0].count(b"\r\n") == len(reply.lines)


async def test_a_pipelined_group_is_answered_in_one_write(serve: Serve) -> None:
    running, client, writes = await _after_ehlo(serve)
    await client.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                      b"RCPT TO:<c@example.net>\r\nDATA\r\n")
    replies = [await client.reply() for _ in range(4)]
    assert [r.code for r in replies] == [250, 250, 250, 354]
    assert len(writes) == 1 and writes[0].startswith(b"250 ") and writes[0].endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n")
    # The body, its end and the next group in one segment: the message's 250 is
    # written at once, alone (accepted mail is answered before anything else).
    await client.send(b"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\n"
                      b"RCPT TO:<d@example.net>\r\nDATA\r\n")
    assert (await client.reply()).code == 250
    assert [(await client.reply()).code for _ in range(3)] == [250, 250, 354]
    assert len(writes) == 3 and writes[1].startswith(b"250 ") and writes[1].count(b"\r\n") == 1
    await client.send(b"Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [(await client.reply()).code for _ in range(2)] == [250, 221]
    assert [len(e.recipients) for e, _ in running.enqueue.calls] == [2, 1]


async def test_a_refusal_in_a_group_writes_what_was_held_with_it(serve: Serve) -> None:
    _, client, writes = await _after_ehlo(serve)
    await client.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bad>\r\n"
                      b"RCPT TO:<b@example.net>\r\nNOOP\r\nRSET\r\n")
    codes = [(await client.reply()).code for _ in range(5)]
    assert codes[0] == 250 and codes[1] >= 500 and codes[2:] == [250, 250, 250]
    # MAIL's 250 with RCPT's refusal; the rest with the last (nothing more to read)
    assert [w.count(b"\r\n") for w in writes] == [2, 3]


async def test_quit_after_a_group_gets_every_reply(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    writes = _writes(running)
    await client.send(b"EHLO client.test\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n")
    ehlo = await client.reply()
    assert ehlo.code == 250 and "PIPELINING" in ehlo.lines
    assert [(await client.reply()).code for _ in range(3)] == [250, 250, 221]
    assert await client.at_eof()
    assert len(writes) == 1


async def test_a_shutdown_during_a_password_check_writes_what_was_held_first(
        serve: Serve, tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one wait with a reply held: EHLO pipelined with AUTH (over TLS) holds EHLO's
    reply while the password is checked; a shutdown then writes it before its 421."""
    checking, release = threading.Event(), threading.Event()

    def blocked(password: str, hashed: str) -> bool:
        checking.set()
        release.wait(WAIT)
        return verify_password(password, hashed)

    monkeypatch.setattr(handler_module, "verify_password", blocked)
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    await client.send(f"EHLO client.test\r\nAUTH PLAIN {PLAIN_OK}\r\n".encode())
    assert await asyncio.to_thread(checking.wait, WAIT)
    (conn,) = running.server._connections._open
    assert isinstance(conn, SmtpProtocol) and len(conn._pending) == 1  # EHLO's, held
    conn.shutdown()
    release.set()
    ehlo = await client.reply()
    assert ehlo.code == 250 and "AUTH PLAIN LOGIN" in ehlo.lines
    assert (await client.reply()).code == 421
    assert not conn._pending


async def test_commands_pipelined_after_starttls_are_not_answered(
        serve: Serve, tls: Tls) -> None:
    """EHLO's reply is held for STARTTLS's and both go out in clear; what was pipelined
    after STARTTLS (a command injection) is dropped, not answered over TLS."""
    running = await serve_tls(serve, tls)
    client = await running.connect()
    writes = _writes(running)
    await client.send(b"EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<evil@example.org>\r\n"
                      b"NOOP\r\n")
    assert (await client.reply()).code == 250
    assert (await client.reply()).code == 220
    assert len(writes) == 1  # EHLO's reply with STARTTLS's 220, in clear
    await asyncio.wait_for(client.writer.start_tls(tls.client, server_hostname="127.0.0.1"),
                           WAIT)
    reply = await client.cmd("RCPT TO:<b@example.net>")
    assert reply.code == 503  # no MAIL was taken, nor any EHLO over TLS


async def test_the_relays_own_courier_pipelines_into_it(serve: Serve) -> None:
    """A real pipelining client: the courier (which pipelines when PIPELINING is
    offered) sends messages over one connection; each group is answered in one write
    and every message arrives, with a refused recipient's group refused alone."""
    running = await serve()
    courier = make_courier(running.port)
    try:
        first = await send(courier, data=b"Subject: one\r\n\r\nbody\r\n")
        writes = _writes(running)
        second = await send(courier, data=b"Subject: two\r\n\r\nbody\r\n")
        refused = await send(courier, recipient="bad")
        third = await send(courier, data=b"Subject: three\r\n\r\nbody\r\n")
    finally:
        await bounded(courier.close())
    assert [r.outcome for r in (first, second, third)] == [Outcome.DELIVERED] * 3
    assert refused.outcome is not Outcome.DELIVERED
    assert [d.split(b"\r\n")[0] for _, d in running.enqueue.calls] == [
        b"Subject: one", b"Subject: two", b"Subject: three"]
    groups = [w for w in writes if w.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")]
    assert len(groups) == 2 and all(g.count(b"\r\n") == 3 for g in groups)  # MAIL RCPT DATA


async def test_a_flood_of_pipelined_commands_is_answered_a_batch_at_a_time(
        serve: Serve) -> None:
    """Replies are held at most 64 at a time: a client that pipelines without end gets
    them written a batch at a time (each batch a write the relay then drains)."""
    _, client, writes = await _after_ehlo(serve)
    await client.send(b"NOOP\r\n" * 200 + b"QUIT\r\n")
    codes = [(await client.reply()).code for _ in range(201)]
    assert codes == [250] * 200 + [221]
    assert max(w.count(b"\r\n") for w in writes) <= 65
    assert sum(w.count(b"\r\n") for w in writes) == 201
