"""Fixtures shared by the end-to-end scenarios."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A capturing SMTP server for the proxy to deliver to."""
    up = Upstream().start()
    yield up
    up.stop()
