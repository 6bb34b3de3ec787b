"""End-to-end: operating the real ``beacon-proxy serve`` - SIGHUP, log files, secrets."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_proxy.log import pseudonym, pseudonym_key
from beacon_proxy.web.auth import hash_token
from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e
SECRET = "ops-secret-0123456789abcdef"
OLD, NEW = "old-admin-token-0123456789", "new-admin-token-0123456789"


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, f"""
[tokens]
secret = "{SECRET}"
[api.tokens]
ops = "{hash_token(OLD)}"
""", upstream=upstream.port)
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _status(proxy: Proxy, token: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.web_port}/api/v1/consent",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sighup_reloads_tokens_and_log_settings_and_reopens_the_log(
        proxy: Proxy, upstream: Upstream) -> None:
    proxy.start()
    assert proxy.proc is not None
    assert _status(proxy, OLD) == 200 and _status(proxy, NEW) == 403
    rotated = proxy.log_path.with_suffix(".1")
    proxy.log_path.rename(rotated)  # logrotate moves the file, then signals
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(
        text.replace(hash_token(OLD), hash_token(NEW))
        .replace('[log]\n', '[log]\npseudonymize = true\n')
        .replace("[smtp]\n", "[smtp]\nmax_recipients = 7\n"))
    proxy.proc.send_signal(signal.SIGHUP)
    (reloaded,) = wait_for(lambda: proxy.events("reloaded"), 30, "the reload")
    assert reloaded["applied"] == ["log", "tokens", "api"]
    assert reloaded["restart_needed"] == ["smtp"]  # named, not applied
    assert _status(proxy, NEW) == 200 and _status(proxy, OLD) == 403
    proxy.send("news@sender.example", ["ann@example.org"], newsletter())
    (delivered,) = wait_for(lambda: proxy.events("delivered"), 30, "the delivery")
    key = pseudonym_key(SECRET)
    assert delivered["recipient"] == pseudonym("ann@example.org", key)
    assert "ann@example.org" not in proxy.log_path.read_text()
    assert "reloaded" not in rotated.read_text() and "started" in rotated.read_text()
    assert proxy.proc.poll() is None  # SIGHUP no longer kills it
    assert proxy.stop() == 0


def test_a_broken_config_on_sighup_changes_nothing(proxy: Proxy) -> None:
    proxy.start()
    assert proxy.proc is not None
    proxy.config_path.write_text(proxy.config_path.read_text() + "\n[nonsense]\n")
    proxy.proc.send_signal(signal.SIGHUP)
    (failed,) = wait_for(lambda: proxy.events("reload_failed"), 30, "the failed reload")
    assert "nonsense" in failed["error"]
    assert _status(proxy, OLD) == 200
    assert proxy.stop() == 0


def test_no_secret_reaches_a_debug_log(proxy: Proxy, upstream: Upstream) -> None:
    # On asyncio's loop, whose own debug line ("Using selector") shows that debug
    # output is on; uvloop logs none.
    proxy.config_path.write_text(re.sub(r'event_loop = "\w+"', 'event_loop = "asyncio"',
                                        proxy.config_path.read_text()))
    proxy.start()
    assert proxy.cli("consent", "set", "bob@example.org", "--beacons", "granted").returncode == 0
    assert proxy.cli("suppress", "add", "carl@example.org").returncode == 0
    proxy.send("news@sender.example", ["ann@example.org", "bob@example.org", "carl@example.org"],
               newsletter())
    wait_for(lambda: len(upstream.messages) == 2, 30, "two copies")
    assert _status(proxy, OLD) == 200
    assert proxy.stop() == 0
    # closing(): a connection's own ``with`` only commits (3.13 warns of it left open)
    with contextlib.closing(sqlite3.connect(proxy.workdir / "var" / "beacon-proxy.db")) as db:
        (hash_key,) = db.execute("SELECT value FROM store_meta WHERE name = 'hash_key'").fetchone()
    log = proxy.log_path.read_text()
    assert '"level":"debug"' in log  # debug output was on
    for secret in (hash_key, SECRET, OLD, hash_token(OLD)[7:]):
        assert secret not in log
