"""The SMTP server: listens in the caller's event loop, stops gracefully.

    server = SmtpServer(cfg.smtp, spool.enqueue, hostname="mx.example.org")
    await server.start()
    ...
    await server.stop(cfg.smtp.shutdown_timeout)

Stopping closes the listening socket at once and answers ``421 4.3.2`` to
every session not inside DATA.  A session inside DATA keeps going until its
message is queued and acknowledged (then it gets the ``421``), for up to
``timeout`` seconds; whatever is left after that is closed.  A client that
was cut off without a ``250`` will send its message again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from beacon_proxy.config import SmtpConfig
from beacon_proxy.smtpd.handler import Admit, Enqueue, SmtpHandler
from beacon_proxy.smtpd.limits import Clock
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol

__all__ = ["LISTEN_BACKLOG", "SmtpServer", "server_tls_context"]

_log = logging.getLogger(__name__)
_IDENT = "ESMTP beacon-proxy"  # the greeting: "220 <hostname> ESMTP beacon-proxy"
_CLOSE_GRACE = 1.0  # seconds for closed connections to finish their TLS shutdown
#: The kernel's queue of connections not yet accepted, per listening socket.  Passed to
#: every ``create_server``: asyncio and uvloop call ``listen()`` again on a socket they
#: are handed, with their default of 100, which shrank the supervisor's queue for its
#: workers (``workers.bind_listeners``) to 100 as soon as a worker started.
LISTEN_BACKLOG = 1024
_ACCEPT_RETRY = 1.0  # seconds without accepting after running out of descriptors


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) for STARTTLS; reads the files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SmtpServer:
    """The receiving stage: SMTP in, :class:`~beacon_proxy.smtpd.handler.Enqueue` out."""

    def __init__(self, cfg: SmtpConfig, enqueue: Enqueue, *, hostname: str,
                 clock: Clock | None = None, socks: Sequence[socket.socket] = (),
                 admit: Admit | None = None) -> None:
        self._cfg = cfg
        # Listening sockets handed over by a supervisor (several worker processes
        # accepting on the same sockets); none: bind cfg.listen here.
        self._socks = tuple(socks)
        self._shared: list[_SharedListener] = []
        self._hostname = hostname
        # admit: the delivery side's inflow gate ([smtp] in_flow_delay), None: none.
        self._handler = SmtpHandler(cfg, enqueue, clock, admit)
        self._connections = Connections(cfg.max_connections, cfg.max_connections_per_client,
                                        cfg.allow_networks)
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._port: int | None = None

    @property
    def started(self) -> bool:
        return self._server is not None or bool(self._shared)

    async def start(self, *, hold: bool = False) -> None:
        """Bind ``cfg.listen`` (port 0: any free port, see :attr:`port`) and serve.

        ``hold``: on listening sockets handed over (``socks``), take no connection
        until :meth:`accept` (they wait in the kernel's queue): a worker waits for its
        siblings (:mod:`beacon_proxy.workers`)."""
        if self.started:
            raise RuntimeError("SmtpServer already started")
        cfg = self._cfg
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            self._tls = await asyncio.to_thread(server_tls_context, cfg.tls_cert, cfg.tls_key)
        if not self._hostname:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        loop = asyncio.get_running_loop()
        if self._socks:  # shared with the other workers: one connection a turn each
            self._shared = [_SharedListener(loop, s, self._new_connection, reading=not hold)
                            for s in self._socks]
            self._port = int(self._socks[0].getsockname()[1])
        else:
            self._server = await loop.create_server(
                self._new_connection, cfg.listen.host, cfg.listen.port, backlog=LISTEN_BACKLOG
            )
            self._port = int(self._server.sockets[0].getsockname()[1])
        _log.info("SMTP listening on %s:%d as %s", cfg.listen.host, self._port, self._hostname)

    def accept(self) -> None:
        """Start taking connections after ``start(hold=True)`` (again: nothing)."""
        for shared in self._shared:
            shared.read()

    @property
    def connections(self) -> Connections:
        """The open connections (their count, per-client counts, change notices)."""
        return self._connections

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0); still known after :meth:`stop`."""
        if self._port is None:
            raise RuntimeError("SmtpServer has not been started")
        return self._port

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let DATA in progress finish for ``timeout`` s, close the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        conns = self._connections
        conns.stopping = True
        if self._server is not None:
            self._server.close()
        for shared in self._shared:
            shared.close()
        conns.shutdown(idle_only=True)
        if not await conns.wait_until(lambda: conns.in_data() == 0, deadline):
            _log.warning("closing %d SMTP sessions still in DATA at shutdown", conns.in_data())
        conns.shutdown(idle_only=False)
        pending = set(self._handler.in_flight)
        if pending:  # enqueues of clients that left: give them what time is left
            _, pending = await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0.0))
            if pending:
                _log.warning("%d enqueues still running after SMTP shutdown", len(pending))
        if not await conns.wait_until(lambda: len(conns) == 0, loop.time() + _CLOSE_GRACE):
            # closed, but a peer that reads nothing keeps the replies left to send (and
            # the connection) for good
            conns.abort()
            await conns.wait_until(lambda: len(conns) == 0, loop.time() + _CLOSE_GRACE)
        if self._server is not None:
            # From Python 3.12.1 this waits for every connection the server accepted to be
            # lost (3.11 returned at once), refused ones too, which are not tracked: a stop
            # must not hang on one that never goes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE):
                    await self._server.wait_closed()
        for shared in self._shared:
            await shared.wait_closed()

    def _new_connection(self) -> SmtpProtocol:
        cfg = self._cfg
        return SmtpProtocol(
            self._handler,
            self._connections,
            hostname=self._hostname,
            ident=_IDENT,
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=cfg.command_timeout,
            idle_timeout_untrusted=cfg.idle_timeout_untrusted,
            tls_context=self._tls,
            require_starttls=False,
            auth_required=False,  # relay policy decides per recipient (networks or AUTH)
            auth_require_tls=True,
            # Without users no AUTH at all (aiosmtpd would offer PLAIN and LOGIN).
            auth_exclude_mechanism=() if cfg.auth_users else ("PLAIN", "LOGIN"),
            loop=asyncio.get_running_loop(),
        )


class _SharedListener:
    """Accepts on a listening socket that other worker processes accept on too, one
    connection each time the socket is ready.

    asyncio's and uvloop's servers accept every connection waiting (up to the backlog)
    when the socket is ready, so the first worker to wake took a whole burst: the 8
    connections a sender opens together, or an MTA's cached connections, all went to
    one worker, which then used one core while the others idled (the soak of
    ``bench/relay.py``: 8 connections held ~275 msg/s on 1.0 core of 2).  Taking one a
    turn, every worker woken by the ready socket (epoll is level-triggered) takes the
    next one its loop gets to, so a busy worker takes fewer.  The accepted socket
    becomes a connection as ``create_server``'s would (``connect_accepted_socket``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.BaseProtocol], *, reading: bool = True) -> None:
        self._loop, self._sock, self._factory = loop, sock, factory
        self._connecting: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._reading = False  # the loop watches the socket (_accept)
        sock.setblocking(False)
        if reading:
            self.read()

    def read(self) -> None:
        """Take connections (from construction unless ``reading=False``): nothing when
        already reading, waiting to retry (:data:`_ACCEPT_RETRY`) or closed."""
        if not (self._reading or self._closed or self._retry is not None):
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._reading = True

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Out of descriptors or memory: stop accepting for a moment, as asyncio does
            # (the connections wait in the kernel's queue, or go to another worker).
            _log.warning("SMTP accept failed (%s); retrying in %.0f s", exc, _ACCEPT_RETRY)
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
            self._retry = self._loop.call_later(_ACCEPT_RETRY, self._resume)
            return
        task = self._loop.create_task(self._connect(conn))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _resume(self) -> None:
        self._retry = None
        self.read()

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as exc:  # the client left before the connection was made
            _log.info("SMTP connection not made: %r", exc)
            conn.close()

    def close(self) -> None:
        """Stop accepting at once (the other workers' copies of the socket stay open)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()

    async def wait_closed(self) -> None:
        """The connections being made when it closed are made (or failed)."""
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)
