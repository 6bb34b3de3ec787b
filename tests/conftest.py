from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_proxy.spool.queue import Spool
from tests.consent.pg import temporary_database


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
