"""SmtpServer: binding, connection limits, graceful stop."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess

import pytest

from beacon_proxy import metrics
from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.smtpd.server import (
    LISTEN_BACKLOG,
    SmtpServer,
    _SharedListener,
    server_tls_context,
)
from beacon_proxy.workers import bind_listeners
from tests.smtpd.client import RawClient
from tests.smtpd.conftest import WAIT, FakeEnqueue, Running, Serve, Tls, events

MESSAGE = b"Subject: x\r\n\r\nx\r\n.\r\n"


def sessions() -> float:
    return metrics.REGISTRY.get_sample_value("beacon_proxy_smtp_sessions") or 0.0


async def start_transaction(running: Running) -> RawClient:
    """A client whose message is sent and now waits in the (gated) enqueue."""
    running.enqueue.gate = asyncio.Event()
    client = await running.connect()
    assert (await client.cmd("EHLO busy.client")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send(MESSAGE)
    await asyncio.wait_for(running.enqueue.started.wait(), WAIT)
    return client


async def test_port_zero_binds_a_free_port(serve: Serve) -> None:
    running = await serve()
    assert running.port > 0
    client = await running.connect(greet=False)
    assert (await client.reply()).text == "220 mx.test.example ESMTP beacon-proxy"


async def test_port_before_start_is_an_error() -> None:
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="h")
    with pytest.raises(RuntimeError):
        _ = server.port


async def test_start_twice_is_an_error(serve: Serve) -> None:
    running = await serve()
    with pytest.raises(RuntimeError):
        await running.server.start()


async def test_empty_hostname_means_fqdn() -> None:
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="")
    await server.start()
    try:
        client = await RawClient.connect(server.port, greet=False)
        banner = await client.reply()
        assert banner.code == 220
        assert banner.lines[0].split()[0]  # some host name
        await client.close()
    finally:
        await server.stop(1)


async def test_too_many_connections(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve(max_connections=2)
    base = sessions()
    first = await running.connect()
    second = await running.connect()
    assert sessions() == base + 2
    third = await running.connect(greet=False)
    assert (await third.reply()).text == "421 4.7.0 Too many connections"
    assert await third.at_eof()
    [rejected] = events(caplog, "rejected")
    assert rejected["stage"] == "CONNECT"
    assert rejected["code"] == 421
    assert (await first.cmd("QUIT")).code == 221
    assert await first.at_eof()
    for _ in range(100):
        if sessions() == base + 1:
            break
        await asyncio.sleep(0.001)
    assert sessions() == base + 1
    fourth = await running.connect()  # room again
    assert (await fourth.cmd("NOOP")).code == 250
    assert (await second.cmd("NOOP")).code == 250


async def test_stop_lets_a_transaction_in_data_finish(serve: Serve) -> None:
    running = await serve()
    busy = await start_transaction(running)
    idle = await running.connect()
    assert (await idle.cmd("EHLO idle.client")).code == 250

    stopping = asyncio.ensure_future(running.server.stop(WAIT))
    # the idle session is told at once; the listener is closed
    assert (await idle.reply()).text == "421 4.3.2 Service shutting down"
    assert await idle.at_eof()
    with pytest.raises(OSError):
        await RawClient.connect(running.port)
    assert not stopping.done()

    running.enqueue.release()
    reply = await busy.reply()
    [(envelope, _)] = running.enqueue.calls
    assert reply.text == f"250 2.0.0 Ok: queued as {envelope.queue_id}"
    assert (await busy.reply()).text == "421 4.3.2 Service shutting down"
    assert await busy.at_eof()
    await asyncio.wait_for(stopping, WAIT)


async def test_stop_gives_up_after_timeout(serve: Serve) -> None:
    running = await serve()
    busy = await start_transaction(running)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(running.server.stop(0.05), WAIT)
    assert loop.time() - started < 2.0
    assert (await busy.reply()).text == "421 4.3.2 Service shutting down"
    assert await busy.at_eof()
    # the enqueue was not cancelled: it completes once it can
    running.enqueue.release()
    await asyncio.wait_for(running.enqueue.finished.wait(), WAIT)
    assert len(running.enqueue.calls) == 1


async def test_stop_waits_for_enqueue_of_a_client_that_left(serve: Serve) -> None:
    running = await serve()
    busy = await start_transaction(running)
    await busy.close()
    await asyncio.sleep(0.01)  # the server notices the disconnect
    stopping = asyncio.ensure_future(running.server.stop(WAIT))
    await asyncio.sleep(0.01)
    assert not stopping.done()
    running.enqueue.release()
    await asyncio.wait_for(stopping, WAIT)
    assert len(running.enqueue.calls) == 1


async def test_stop_with_no_sessions_is_quick(serve: Serve) -> None:
    running = await serve()
    await asyncio.wait_for(running.server.stop(30), 1.0)


async def test_stop_is_not_held_by_a_client_that_reads_nothing(serve: Serve) -> None:
    """A client that sends and never reads keeps its closed connection's replies unsent:
    stop drops it after the close grace (on Python 3.12.1+ ``Server.wait_closed`` waits
    for every connection, and stop hung there for good)."""
    running = await serve()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", running.port))
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        (conn,) = running.server.connections._open
        transport = conn.transport
        assert isinstance(transport, asyncio.WriteTransport)
        for _ in range(3000):  # EHLO's replies fill the socket buffers, then the relay's
            writer.write(b"EHLO a\r\n" * 1000)
            await asyncio.wait_for(writer.drain(), WAIT)
            await asyncio.sleep(0.001)
            if transport.get_write_buffer_size() > 0:
                break
        assert transport.get_write_buffer_size() > 0
        await asyncio.wait_for(running.server.stop(0.1), WAIT)
        assert len(running.server.connections) == 0
    finally:
        writer.transport.abort()


async def test_stop_closes_tls_sessions(serve: Serve, tls: Tls) -> None:
    running = await serve(tls_cert=tls.cert, tls_key=tls.key)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    await client.starttls(tls.client)
    # the server's side of the handshake has completed too (the client's can end first:
    # a stop then aborts the handshake, with no 421)
    assert (await client.cmd("EHLO client.test")).code == 250
    await asyncio.wait_for(running.server.stop(1), WAIT)
    assert (await client.reply()).text == "421 4.3.2 Service shutting down"


def test_tls_context_is_server_side_tls12_or_later(tls: Tls) -> None:
    ctx = server_tls_context(tls.cert, tls.key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname



def _listen_backlog(port: int) -> int:
    """The accept queue's size of the listening socket on ``port`` (``ss``: a listening
    socket's Send-Q is its backlog)."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("needs ss (iproute2) to read a listening socket's backlog")
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])  # State Recv-Q Send-Q Local Peer


async def test_the_accept_queue_keeps_its_size_when_served(serve: Serve) -> None:
    """asyncio and uvloop call ``listen()`` again on the socket they serve, with their
    own default of 100 unless told: the relay's queue is LISTEN_BACKLOG, bound here or
    handed over by a supervisor (whose queue a worker must not shrink)."""
    running = await serve()
    assert _listen_backlog(running.port) == LISTEN_BACKLOG
    socks = bind_listeners("127.0.0.1", 0)
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="h", socks=socks)
    await server.start()
    try:
        assert _listen_backlog(server.port) == LISTEN_BACKLOG
    finally:
        await server.stop(0)
        for sock in socks:
            sock.close()


async def test_a_shared_socket_gives_one_connection_a_turn() -> None:
    """Workers share the supervisor's listening socket: each takes one connection each
    time the socket is ready, so a burst (a sender's or an MTA's connections opened
    together) spreads over the workers instead of going whole to the first one awake;
    what is left stays in the kernel's queue for the next turn (or the next worker)."""
    socks = bind_listeners("127.0.0.1", 0)
    sock = socks[0]
    waiting = [socket.create_connection(sock.getsockname()[:2]) for _ in range(5)]
    loop = asyncio.get_running_loop()
    made: list[asyncio.Protocol] = []

    def factory() -> asyncio.Protocol:
        made.append(asyncio.Protocol())
        return made[-1]

    listener = _SharedListener(loop, sock, factory, reading=False)  # turns taken by hand
    try:
        listener._accept()  # one turn: one connection
        await listener.wait_closed()  # (the connection it started is made)
        assert len(made) == 1
        for _ in range(4):  # the other four still wait in the kernel's queue
            sock.accept()[0].close()
        with pytest.raises(BlockingIOError):
            sock.accept()
        listener._accept()  # nothing waiting: a turn takes nothing
        assert not listener._connecting
    finally:
        listener.close()
        for client in waiting:
            client.close()


async def test_a_shared_socket_serves_smtp_and_stops_at_once() -> None:
    """A worker's server on the supervisor's socket answers as one that bound its own,
    and stops accepting at once when stopped."""
    socks = bind_listeners("127.0.0.1", 0)
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="h", socks=socks)
    await server.start()
    assert server.started
    with pytest.raises(RuntimeError):
        await server.start()
    client = await RawClient.connect(server.port, greet=False)
    try:
        assert (await client.reply()).text == "220 h ESMTP beacon-proxy"
    finally:
        await client.close()
        await server.stop(0)
    assert socks[0].fileno() == -1  # the worker's copy is closed


async def test_a_held_shared_socket_takes_nothing_until_told() -> None:
    """A worker started with ``hold`` leaves connections in the kernel's queue until
    ``accept()`` (its siblings have started); then it serves them, and a second
    ``accept()`` changes nothing."""
    socks = bind_listeners("127.0.0.1", 0)
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="h", socks=socks)
    await server.start(hold=True)
    loop = asyncio.get_running_loop()
    waiting = socket.create_connection(("127.0.0.1", server.port))
    try:
        waiting.setblocking(False)
        for _ in range(20):  # turns of the loop: nothing takes the connection
            await asyncio.sleep(0)
        assert len(server.connections) == 0
        assert not server._shared[0]._reading  # the loop does not watch the socket
        with pytest.raises(BlockingIOError):
            waiting.recv(100)  # no greeting
        server.accept()
        server.accept()
        greeting = await asyncio.wait_for(loop.sock_recv(waiting, 100), WAIT)
        assert greeting == b"220 h ESMTP beacon-proxy\r\n"
    finally:
        waiting.close()
        await server.stop(0)
    assert socks[0].fileno() == -1


async def test_a_held_shared_socket_stops_without_having_taken_any() -> None:
    socks = bind_listeners("127.0.0.1", 0)
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), FakeEnqueue(),
                        hostname="h", socks=socks)
    await server.start(hold=True)
    await server.stop(0)
    server.accept()  # after the stop: nothing (the socket is closed)
    assert socks[0].fileno() == -1
