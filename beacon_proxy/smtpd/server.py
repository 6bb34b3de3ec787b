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
import logging
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from beacon_proxy.config import SmtpConfig
from beacon_proxy.smtpd.handler import Enqueue, SmtpHandler
from beacon_proxy.smtpd.limits import Clock
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol

__all__ = ["SmtpServer", "server_tls_context"]

_log = logging.getLogger(__name__)
_IDENT = "ESMTP beacon-proxy"  # the greeting: "220 <hostname> ESMTP beacon-proxy"
_CLOSE_GRACE = 1.0  # seconds for closed connections to finish their TLS shutdown


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) for STARTTLS; reads the files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SmtpServer:
    """The receiving stage: SMTP in, :class:`~beacon_proxy.smtpd.handler.Enqueue` out."""

    def __init__(self, cfg: SmtpConfig, enqueue: Enqueue, *, hostname: str,
                 clock: Clock | None = None, socks: Sequence[socket.socket] = ()) -> None:
        self._cfg = cfg
        # Listening sockets handed over by a supervisor (several worker processes
        # accepting on the same sockets); none: bind cfg.listen here.
        self._socks = tuple(socks)
        self._extra: list[asyncio.Server] = []
        self._hostname = hostname
        self._handler = SmtpHandler(cfg, enqueue, clock)
        self._connections = Connections(cfg.max_connections, cfg.max_connections_per_client,
                                        cfg.allow_networks)
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._port: int | None = None

    async def start(self) -> None:
        """Bind ``cfg.listen`` (port 0: any free port, see :attr:`port`) and serve."""
        if self._server is not None:
            raise RuntimeError("SmtpServer already started")
        cfg = self._cfg
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            self._tls = await asyncio.to_thread(server_tls_context, cfg.tls_cert, cfg.tls_key)
        if not self._hostname:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        loop = asyncio.get_running_loop()
        if self._socks:
            servers = [await loop.create_server(self._new_connection, sock=s)
                       for s in self._socks]
            self._server, self._extra = servers[0], servers[1:]
        else:
            self._server = await loop.create_server(
                self._new_connection, cfg.listen.host, cfg.listen.port
            )
        self._port = int(self._server.sockets[0].getsockname()[1])
        _log.info("SMTP listening on %s:%d as %s", cfg.listen.host, self._port, self._hostname)

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
        for extra in self._extra:
            extra.close()
        conns.shutdown(idle_only=True)
        if not await conns.wait_until(lambda: conns.in_data() == 0, deadline):
            _log.warning("closing %d SMTP sessions still in DATA at shutdown", conns.in_data())
        conns.shutdown(idle_only=False)
        pending = set(self._handler.in_flight)
        if pending:  # enqueues of clients that left: give them what time is left
            _, pending = await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0.0))
            if pending:
                _log.warning("%d enqueues still running after SMTP shutdown", len(pending))
        await conns.wait_until(lambda: len(conns) == 0, loop.time() + _CLOSE_GRACE)
        if self._server is not None:
            await self._server.wait_closed()
        for extra in self._extra:
            await extra.wait_closed()

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
