from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from beacon_proxy.consent.store import open_store


def create_store(url: str) -> None:
    """Create (and migrate) a store, as the relay's first start does."""
    async def go() -> None:
        async with open_store(url):
            pass

    asyncio.run(go())


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file with a fresh SQLite store (created, as the relay would have), also
    set as BEACON_PROXY_CONFIG."""
    path = tmp_path / "c.toml"
    url = f"sqlite:///{tmp_path / 'store' / 'bp.db'}"
    path.write_text(f'[store]\nurl = "{url}"\n')
    create_store(url)
    monkeypatch.setenv("BEACON_PROXY_CONFIG", str(path))
    return path


@pytest.fixture(autouse=True)
def _no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's /etc/beacon-proxy/beacon-proxy.toml plays no part in these tests."""
    import beacon_proxy.config

    monkeypatch.setattr(beacon_proxy.config, "SYSTEM_CONFIG", tmp_path / "no-system.toml")
