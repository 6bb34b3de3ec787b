"""Fixtures shared by the end-to-end scenarios."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.consent.pg import fresh_schema, temporary_database
from tests.e2e import harness
from tests.e2e.harness import Proxy, Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A capturing SMTP server for the proxy to deliver to."""
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    """Proxies a test starts; any still running at its end is killed."""
    started: list[Proxy] = []
    yield started
    for p in started:
        if p.proc is not None and p.proc.poll() is None:
            p.kill9()


@pytest.fixture(scope="session")
def e2e_pg_database() -> Iterator[str]:
    """One fresh PostgreSQL database for the run's end-to-end scenarios (dropped after)."""
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a scenario on each consent store: on PostgreSQL, every :class:`Proxy` the test
    makes uses a fresh schema of the run's database (and a shared token secret)."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    database: str = request.getfixturevalue("e2e_pg_database")
    harness.DEFAULT_STORE = asyncio.run(fresh_schema(database))
    try:
        yield "postgresql"
    finally:
        harness.DEFAULT_STORE = None
