"""A scripted, fault-injecting SMTP upstream (aiosmtpd) on 127.0.0.1.

:class:`Upstream` records what it is sent and answers like a plain server
unless a fault is scripted for the stage a command reaches.  A script is a list
of steps per stage, one step used per command (per connection for
``greeting`` and ``STARTTLS``), then normal service again; a stage may also be
scripted for one recipient (``script("RCPT", "452 ...", rcpt="b@x.test")``),
which comes before the stage's own script.

===========  =================================================================
stage        steps
===========  =================================================================
greeting     ``hold``: no greeting at all (a slow greeting: the client times out)
MAIL, RCPT   an SMTP reply (a ``421`` one also hangs up, as RFC 5321 says);
             ``drop``: hang up without a reply
DATA         ``drop``: answer ``354``, then hang up before the final dot
             (nothing recorded); an SMTP reply instead of ``354``
dot          after the final dot: an SMTP reply (nothing recorded);
             ``drop``: record the message, hang up unanswered;
             ``hang``: record the message, never answer (until the client goes)
STARTTLS     ``garbage``: answer ``220``, then send bytes that are not TLS and
             hang up (the client's handshake fails)
===========  =================================================================

The recipient's local part scripts a fault too, on every attempt (the
courier tests use these):

=============  =================================================
``tempfail``   RCPT: ``451 4.3.0 try later``
``plain4``     RCPT: ``450 mailbox busy`` (no enhanced status)
``reject``     RCPT: ``550 5.1.1 no such user``
``multiline``  RCPT: a two-line ``550`` reply
``bye``        RCPT: ``421 4.3.2 shutting down``, then the server hangs up
``weird``      RCPT: ``252 2.1.5 cannot verify`` (a 2xx RCPT may not answer)
``datafail``   dot: ``554 5.7.1 message content rejected``
``datatemp``   dot: ``452 4.3.1 insufficient system storage``
``datadrop``   dot: ``drop``
``datahang``   dot: ``hang``
=============  =================================================

The server offers PIPELINING (``Upstream(pipelining=False)``: not) and, like
aiosmtpd, reads pipelined commands one by one; a scripted reply comes in its place
in the pipelined order.

The asyncio tests run the server in their own loop (:meth:`Upstream.start`);
the end-to-end tests, which are synchronous, run it in a thread of its own
(:func:`threaded`).  Scripts and records may be used from either thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from aiosmtpd.smtp import SMTP

__all__ = ["Received", "Upstream", "threaded"]

_BY_LOCAL_PART = {
    "tempfail": ("RCPT", "451 4.3.0 try later"),
    "plain4": ("RCPT", "450 mailbox busy"),
    "reject": ("RCPT", "550 5.1.1 no such user"),
    "multiline": ("RCPT", "550-5.1.1 The account does not exist.\r\n"
                          "550 5.1.1 Please check the address."),
    "bye": ("RCPT", "421 4.3.2 shutting down"),
    "weird": ("RCPT", "252 2.1.5 cannot verify"),
    "datafail": ("dot", "554 5.7.1 message content rejected"),
    "datatemp": ("dot", "452 4.3.1 insufficient system storage"),
    "datadrop": ("dot", "drop"),
    "datahang": ("dot", "hang"),
}
_STAGES = ("greeting", "MAIL", "RCPT", "DATA", "dot", "STARTTLS")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    tls: bool


@dataclass
class Upstream:
    """The server, its scripts, and everything it saw."""

    tls_context: ssl.SSLContext | None = None
    smtputf8: bool = True
    pipelining: bool = True  # offered in EHLO (RFC 2920)
    port: int = 0  # 0: any free port, chosen at start
    connections: int = 0
    quits: int = 0
    messages: list[Received] = field(default_factory=list)
    protocols: list[Any] = field(default_factory=list)
    scripts: dict[str, list[str]] = field(default_factory=dict)
    faults: list[tuple[str, str]] = field(default_factory=list)  # (stage, step) used
    server: asyncio.Server | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, stage: str, *steps: str, rcpt: str | None = None) -> None:
        """Faults for the next commands at ``stage`` (for one recipient, or any)."""
        if stage not in _STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        with self.lock:
            self.scripts.setdefault(f"{stage} {rcpt or ''}", []).extend(steps)

    def heal(self) -> None:
        """Forget every scripted fault not used yet."""
        with self.lock:
            self.scripts.clear()

    def to(self, address: str) -> list[Received]:
        """The messages recorded for ``address``."""
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def _take(self, stage: str, rcpt: str | None = None) -> str | None:
        """The step for this command: the recipient's script, the stage's, its local part."""
        with self.lock:
            for key in ([f"{stage} {rcpt}"] if rcpt else []) + [f"{stage} "]:
                steps = self.scripts.get(key)
                if steps:
                    step = steps.pop(0)
                    self.faults.append((stage, step))
                    return step
        if rcpt:
            fault = _BY_LOCAL_PART.get(rcpt.partition("@")[0])
            if fault is not None and fault[0] == stage:
                return fault[1]
        return None

    async def start(self) -> Upstream:
        loop = asyncio.get_running_loop()

        def factory() -> Any:
            self.connections += 1
            proto = _Faulty(self, hostname="upstream.test", enable_SMTPUTF8=self.smtputf8,
                            decode_data=False, tls_context=self.tls_context, loop=loop)
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", self.port)
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
        self.server = None

    # -- aiosmtpd handler hooks -------------------------------------------

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        step = self._take("MAIL")
        if step is not None:
            return await _fault(server, step)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        step = self._take("RCPT", address)
        if step is not None:
            return await _fault(server, step)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        step = self._take("dot", envelope.rcpt_tos[0])
        if step is None or step in ("drop", "hang"):
            with self.lock:
                self.messages.append(Received(
                    envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options),
                    envelope.original_content, session.ssl is not None))
        if step is None:
            return "250 2.0.0 Ok: queued as 4711"
        return await _fault(server, step)

    async def handle_exception(self, error: Exception) -> str:
        return "451 4.3.0 upstream error"  # e.g. a failed TLS handshake; keeps the log quiet

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"


class _Faulty(SMTP):
    """aiosmtpd's server, with the faults its handler hooks cannot make."""

    def __init__(self, upstream: Upstream, **kw: Any) -> None:
        super().__init__(upstream, **kw)
        self._upstream = upstream
        self._greeted = False

    async def push(self, status: Any) -> None:
        if not self._greeted:  # the first thing said is the greeting
            self._greeted = True
            if self._upstream._take("greeting") == "hold":
                await _hang_up(self, close=False)
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:
        rcpt_tos = self.envelope.rcpt_tos if self.envelope is not None else []
        step = self._upstream._take("DATA", rcpt_tos[0]) if rcpt_tos else None
        if step == "drop":
            await super().push("354 End data with <CR><LF>.<CR><LF>")
            await _hang_up(self)
        if step is not None:
            await super().push(step)
            return
        await super().smtp_DATA(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_context is not None and self._upstream._take("STARTTLS") == "garbage":
            await super().push("220 Ready to start TLS")
            transport = cast(asyncio.WriteTransport, self.transport)
            transport.write(b"this is not a TLS record\r\n" * 4)
            await _hang_up(self)
        await super().smtp_STARTTLS(arg)


async def _fault(server: Any, step: str) -> str:
    """Carry out a scripted step for a handler hook: a reply to give, or a hang-up."""
    if step == "drop":
        await _hang_up(server)
    if step == "hang":
        await _hang_up(server, close=False)
    if step.startswith("421"):
        asyncio.get_running_loop().call_soon(server.transport.close)
    return step


async def _hang_up(server: Any, *, close: bool = True) -> None:
    """Close (or just stop answering) and wait to be cancelled by connection_lost."""
    if close:
        server.transport.close()
    await asyncio.Event().wait()


@contextlib.contextmanager
def threaded(upstream: Upstream) -> Iterator[Upstream]:
    """Run ``upstream`` in an event loop of its own thread (for synchronous tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="smtp-upstream", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(upstream.start(), loop).result(10)
        try:
            yield upstream
        finally:
            asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
