"""Fixtures: a scripted SMTP upstream (:mod:`tests.deliver.smtppeer`) in the test's loop."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from tests.deliver.smtppeer import Upstream


@pytest.fixture(params=["pipelining", "stepwise"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[Upstream]:
    """An upstream that offers PIPELINING, or one that does not: every test on it runs
    against the courier's pipelined path and its command-by-command one."""
    up = await Upstream(pipelining=request.param == "pipelining").start()
    yield up
    await up.stop()


@pytest.fixture
async def ascii_upstream() -> AsyncIterator[Upstream]:
    """An upstream that does not offer SMTPUTF8."""
    up = await Upstream(smtputf8=False).start()
    yield up
    await up.stop()


@pytest.fixture(scope="session")
def server_tls() -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 from a CA no client trusts."""
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(params=["pipelining", "stepwise"])
async def tls_upstream(server_tls: ssl.SSLContext,
                       request: pytest.FixtureRequest) -> AsyncIterator[Upstream]:
    """An upstream that offers STARTTLS (and PIPELINING, or not)."""
    up = await Upstream(tls_context=server_tls,
                        pipelining=request.param == "pipelining").start()
    yield up
    await up.stop()
