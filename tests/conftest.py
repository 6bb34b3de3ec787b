from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from beacon_proxy.spool.queue import Spool
from tests.consent.pg import temporary_database

# No example is timed: hypothesis's default deadline (200 ms an example) races the wall
# clock, and on a busy 2-core machine (CI shares it) a slow example then fails the run
# as "flaky" (a schemathesis case of tests/web/test_openapi.py did so under load).
# Tests that need a bound on time say so in a benchmark, never here.
settings.register_profile("beacon-proxy", deadline=None)
settings.load_profile("beacon-proxy")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One fresh PostgreSQL database for the whole run (dropped at the end)."""
    with temporary_database() as url:
        yield url


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    """A fresh, open spool in the test's directory (closed after it)."""
    s = Spool(tmp_path / "spool")
    s.open()
    yield s
    s.close()


@pytest.fixture
def file_spool(tmp_path: Path) -> Iterator[Spool]:
    """A fresh, open spool that writes a queue file per new message (no log): the
    tests of that path, which the log's messages take after their first attempt."""
    s = Spool(tmp_path / "spool", log=False)
    s.open()
    yield s
    s.close()
