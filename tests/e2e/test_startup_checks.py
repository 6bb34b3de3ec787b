"""End-to-end: what ``beacon-proxy serve`` refuses or warns about at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, Proxy, free_port, wait_for

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


def _get(port: int, path: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP_PROXY
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_admin_listener_apart_from_the_recipient_side(tmp_path: Path) -> None:
    admin = free_port()
    proxy = Proxy(tmp_path, f'[web]\nadmin_listen = "127.0.0.1:{admin}"\n').start()
    try:
        [started] = proxy.events("started")
        assert started["admin"] == f"127.0.0.1:{admin}"
        paths = ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/consent",
                 "/console/login")
        public = {p: _get(proxy.web_port, p) for p in paths}
        assert public == {"/healthz": 200, "/readyz": 404, "/metrics": 404,
                          "/api/v1/openapi.json": 404, "/api/v1/consent": 404,
                          "/console/login": 404}
        back = {p: _get(admin, p) for p in paths}
        assert back == {"/healthz": 200, "/readyz": 200, "/metrics": 200,
                        "/api/v1/openapi.json": 200, "/api/v1/consent": 401,
                        "/console/login": 200}
        result = proxy.cli("ready")
        assert (result.returncode, result.stdout) == (
            0, f"ready (http://127.0.0.1:{admin}/readyz)\n"), result.stderr
    finally:
        assert proxy.stop() == 0


def test_readyz_fails_while_the_spool_is_unusable(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, '[spool]\npath = "spool"\n').start()
    try:
        assert _get(proxy.web_port, "/readyz") == 200
        tmp = tmp_path / "spool" / "tmp"
        tmp.rename(tmp_path / "spool-tmp")
        tmp.write_text("")
        # /readyz reuses a result for a second: poll until the change shows.
        def failing() -> str:
            result = proxy.cli("ready")
            return result.stderr if result.returncode == 1 else ""

        stderr = wait_for(failing, what="ready to fail")
        assert "not ready" in stderr and f"spool: {tmp}/" in stderr
        assert _get(proxy.web_port, "/healthz") == 200  # alive all the same
        tmp.unlink()
        (tmp_path / "spool-tmp").rename(tmp)
        wait_for(lambda: proxy.cli("ready").returncode == 0, what="ready again")
    finally:
        assert proxy.stop() == 0


def test_commands_from_another_directory_use_the_relays_store(tmp_path: Path) -> None:
    """Relative paths in the relay's config file are relative to the file, so a command
    run from anywhere with that file finds the relay's store, and one without it says
    there is no store instead of creating an empty one."""
    relay_dir, elsewhere = tmp_path / "relay", tmp_path / "elsewhere"
    relay_dir.mkdir()
    elsewhere.mkdir()
    proxy = Proxy(relay_dir, '[store]\nurl = "sqlite:///state/bp.db"\n'
                  '[spool]\npath = "spool"\n').start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
    env["PYTHONPATH"] = str(ROOT)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "beacon_proxy", *args], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    try:
        config = str(proxy.config_path)
        shown = json.loads(cli("config", "show", "--json", "--config", config).stdout)
        assert shown["store"]["path"] == str(relay_dir / "state" / "bp.db")
        assert shown["store"]["exists"] is True
        assert shown["spool"] == str(relay_dir / "spool")
        ok = cli("consent", "set", "ann@example.org", "--beacons", "granted", "--config", config)
        assert ok.returncode == 0, ok.stderr
        assert "granted" in proxy.cli("consent", "get", "ann@example.org").stdout
        lost = cli("consent", "set", "ann@example.org", "--beacons", "refused")
        assert lost.returncode == 1
        assert lost.stderr.startswith(
            f"beacon-proxy: no consent store at {elsewhere / 'var' / 'beacon-proxy.db'}")
        assert not (elsewhere / "var").exists()
        assert "granted" in proxy.cli("consent", "get", "ann@example.org").stdout
    finally:
        assert proxy.stop() == 0
