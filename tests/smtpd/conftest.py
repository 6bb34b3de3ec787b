"""Fixtures: a real SmtpServer on 127.0.0.1:0 with a fake enqueue, TLS material."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.smtpd.handler import Admit
from beacon_proxy.smtpd.limits import Clock, FakeClock
from beacon_proxy.smtpd.passwords import hash_password
from beacon_proxy.smtpd.server import SmtpServer
from beacon_proxy.spool.envelope import Envelope
from tests.smtpd.client import RawClient

WAIT = 5.0  # upper bound for any single wait in these tests
HOSTNAME = "mx.test.example"
PASSWORD = "correct horse"
USER_HASH = hash_password(PASSWORD, n=2**10)
OUTSIDE = (ipaddress.ip_network("192.0.2.0/24"),)  # 127.0.0.1 is not in here


class FakeEnqueue:
    """Records hand-offs; can be told to fail, or to wait for :attr:`gate`."""

    def __init__(self) -> None:
        self.calls: list[tuple[Envelope, bytes]] = []
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set: wait for it before queuing
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    async def __call__(self, envelope: Envelope, data: bytes) -> None:
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            self.calls.append((envelope, data))
        finally:
            self.finished.set()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()


@dataclass
class Running:
    server: SmtpServer
    enqueue: FakeEnqueue
    cfg: SmtpConfig
    clients: list[RawClient]

    @property
    def port(self) -> int:
        return self.server.port

    async def connect(self, *, greet: bool = True, source: str = "127.0.0.1") -> RawClient:
        """A raw client (from the loopback address ``source``), closed at the end of the test."""
        client = await RawClient.connect(self.port, greet=greet, source=source)
        self.clients.append(client)
        return client


Serve = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(**SmtpConfig overrides)`` starts a server; all are stopped after.

    The server's clock is a :class:`FakeClock` (AUTH waits cost no real time),
    or the ``clock=`` given.
    """
    started: list[Running] = []

    async def start(*, clock: Clock | None = None, admit: Admit | None = None,
                    **overrides: Any) -> Running:
        cfg = SmtpConfig(listen=Endpoint("127.0.0.1", 0), **overrides)
        enqueue = FakeEnqueue()
        server = SmtpServer(cfg, enqueue, hostname=HOSTNAME, clock=clock or FakeClock(),
                            admit=admit)
        await server.start()
        running = Running(server, enqueue, cfg, [])
        started.append(running)
        return running

    yield start
    for running in started:
        for client in running.clients:
            await client.close()
        running.enqueue.release()
        await asyncio.wait_for(running.server.stop(1.0), WAIT)


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A trustme CA, a server certificate for 127.0.0.1 in files, a trusting client context."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(cert, key, client)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The fields of every relay event called ``name`` captured so far."""
    out: list[dict[str, Any]] = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if fields is not None and record.getMessage() == name:
            out.append(fields)
    return out


@pytest.fixture(autouse=True)
def _relay_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="beacon_proxy")
