from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beacon_proxy.consent.store import Store, open_store
from tests.consent.pg import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a SQLite file URL, or the run's PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'db' / 'consent.db'}"
    database: str = request.getfixturevalue("pg_database")
    return "postgresql", database


@pytest.fixture
async def url(backend: tuple[str, str]) -> str:
    """The URL of an empty store (PostgreSQL: a new schema), not yet opened."""
    kind, where = backend
    return await fresh_schema(where) if kind == "postgresql" else where


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = open_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
