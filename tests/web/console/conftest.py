"""Fixtures shared by the console's route tests: a fresh spool (the store: ../conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_proxy.spool.queue import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    s.open()
    yield s
    s.close()
