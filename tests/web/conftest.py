"""Fixtures of the web tests: a fresh SQLite consent store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beacon_proxy.consent.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await s.open()
    yield s
    await s.close()
