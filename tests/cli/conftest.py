from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file with a fresh SQLite store, also set as BEACON_PROXY_CONFIG."""
    path = tmp_path / "c.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "store" / "bp.db"}"\n')
    monkeypatch.setenv("BEACON_PROXY_CONFIG", str(path))
    return path
