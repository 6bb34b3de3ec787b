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
