"""End-to-end: what ``beacon-proxy serve`` refuses or warns about at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Proxy

pytestmark = pytest.mark.e2e


def test_shared_store_without_a_token_secret_does_not_start(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, '[store]\nurl = "postgresql://bp@127.0.0.1:1/beacon"\n')
    proxy.start(wait=False)
    assert proxy.proc is not None
    _, err = proxy.proc.communicate(timeout=30)
    assert proxy.proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "configuration error: tokens.secret:" in lines[0], lines


def test_loopback_public_url_with_a_public_smtp_listener_is_a_warning(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path)
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text.replace(f'"127.0.0.1:{proxy.smtp_port}"',
                                              f'"0.0.0.0:{proxy.smtp_port}"'))
    proxy.start()
    try:
        [warning] = [e for e in proxy.events("notice") if e.get("key") == "web.public_url"]
        assert warning["level"] == "warning" and "web.public_url" in warning["message"]
    finally:
        assert proxy.stop() == 0


def test_a_second_relay_on_the_same_spool_does_not_start(tmp_path: Path) -> None:
    spool = tmp_path / "shared-spool"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Proxy(tmp_path / "a", f'[spool]\npath = "{spool}"\n').start()
    try:
        second = Proxy(tmp_path / "b", f'[spool]\npath = "{spool}"\n')
        second.start(wait=False)
        assert second.proc is not None and first.proc is not None
        _, err = second.proc.communicate(timeout=60)
        assert second.proc.returncode == 1
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and f"in use by another beacon-proxy (pid {first.proc.pid})" \
            in lines[0], lines
        assert first.proc.poll() is None  # the first one goes on, its queue untouched
    finally:
        assert first.stop() == 0
