"""Fixtures shared by the console's route tests: a fresh SQLite store and spool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.spool.queue import Spool


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    s.open()
    yield s
    s.close()
