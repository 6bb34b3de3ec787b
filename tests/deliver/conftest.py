"""A scripted SMTP upstream (aiosmtpd, in-process on 127.0.0.1) for courier tests.

Replies depend on the recipient's local part:

=============  =================================================
``tempfail``   RCPT: ``451 4.3.0 try later``
``plain4``     RCPT: ``450 mailbox busy`` (no enhanced status)
``reject``     RCPT: ``550 5.1.1 no such user``
``multiline``  RCPT: a two-line ``550`` reply
``bye``        RCPT: ``421 4.3.2 shutting down``, then the server hangs up
``weird``      RCPT: ``252 2.1.5 cannot verify`` (a 2xx RCPT may not answer)
``datafail``   after DATA: ``554 5.7.1 message content rejected``
``datatemp``   after DATA: ``452 4.3.1 insufficient system storage``
``datadrop``   after DATA: the server records the message and hangs up unanswered
``datahang``   after DATA: no answer until the connection goes
=============  =================================================

``drop_at_mail = n`` makes the next ``n`` MAIL commands hang up without a reply.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

__all__ = ["Received", "Upstream"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    tls: bool


@dataclass
class Upstream:
    """The server and everything it saw."""

    tls_context: ssl.SSLContext | None = None
    smtputf8: bool = True
    connections: int = 0
    quits: int = 0
    drop_at_mail: int = 0
    messages: list[Received] = field(default_factory=list)
    protocols: list[Any] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Upstream:
        loop = asyncio.get_running_loop()

        def factory() -> Any:
            self.connections += 1
            proto = SMTP(self, hostname="upstream.test", enable_SMTPUTF8=self.smtputf8,
                         decode_data=False, tls_context=self.tls_context, loop=loop)
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def hang_up_all(self) -> None:
        """Close every connection from the server side (an idle timeout, a restart)."""
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        self.hang_up_all()
        await asyncio.wait_for(self.server.wait_closed(), 5)
        for _ in range(20):  # let connection_lost callbacks run
            if all(p.transport is None for p in self.protocols):
                break
            await asyncio.sleep(0.01)

    # -- aiosmtpd handler hooks -------------------------------------------

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.drop_at_mail > 0:
            self.drop_at_mail -= 1
            await _hang_up(server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        local = address.partition("@")[0]
        if local == "tempfail":
            return "451 4.3.0 try later"
        if local == "plain4":
            return "450 mailbox busy"
        if local == "reject":
            return "550 5.1.1 no such user"
        if local == "multiline":
            return "550-5.1.1 The account does not exist.\r\n550 5.1.1 Please check the address."
        if local == "weird":
            return "252 2.1.5 cannot verify"
        if local == "bye":
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 shutting down"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        local = envelope.rcpt_tos[0].partition("@")[0]
        if local == "datafail":
            return "554 5.7.1 message content rejected"
        if local == "datatemp":
            return "452 4.3.1 insufficient system storage"
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      list(envelope.mail_options), envelope.original_content,
                                      session.ssl is not None))
        if local in ("datadrop", "datahang"):
            await _hang_up(server, close=local == "datadrop")
        return "250 2.0.0 Ok: queued as 4711"

    async def handle_exception(self, error: Exception) -> str:
        return "451 4.3.0 upstream error"  # e.g. a failed TLS handshake; keeps the log quiet

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"


async def _hang_up(server: Any, *, close: bool = True) -> None:
    """Close (or just stop answering) and wait to be cancelled by connection_lost."""
    if close:
        server.transport.close()
    await asyncio.Event().wait()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await Upstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def ascii_upstream() -> AsyncIterator[Upstream]:
    """An upstream that does not offer SMTPUTF8."""
    up = await Upstream(smtputf8=False).start()
    yield up
    await up.stop()
