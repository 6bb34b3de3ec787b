from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.consent.pg import temporary_database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One fresh PostgreSQL database for the whole run (dropped at the end)."""
    with temporary_database() as url:
        yield url
