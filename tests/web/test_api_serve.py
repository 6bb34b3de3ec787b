"""The real ``beacon-proxy serve``: the admin API on its web listener, the command line in
another process on the same SQLite store, and the relay reading consent from it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.web.auth import hash_token
from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "serve-test-token-0123456789"


def _call(proxy: Proxy, method: str, path: str, body: Any = None,
          token: str | None = TOKEN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.web_port}/api/v1{path}", data=data,
                                 method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_cli_and_relay_share_the_store(tmp_path: Path) -> None:
    upstream = Upstream().start()
    proxy = Proxy(tmp_path, f'[api.tokens]\nops = "{hash_token(TOKEN)}"\n',
                  upstream=upstream.port).start()
    try:
        assert (tmp_path / "var" / "beacon-proxy.db").is_file()  # the default store
        assert _call(proxy, "GET", "/consent", token=None)[0] == 401
        assert _call(proxy, "GET", "/consent", token="wrong")[0] == 403
        status, body = _call(proxy, "PUT", "/consent/yes%40example.org", {"beacons": "granted"})
        assert (status, body["actor"]) == (200, "api:ops")
        done = proxy.cli("consent", "get", "YES@example.org", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["beacons"] == "granted"
        done = proxy.cli("suppress", "add", "gone@example.org", "--reason", "unsubscribed")
        assert done.returncode == 0, done.stderr
        status, body = _call(proxy, "GET", "/suppressions/gone@example.org")
        assert status == 200 and body["items"][0]["reason"] == "unsubscribed"

        proxy.send("news@sender.example", ["yes@example.org", "no@example.org"], newsletter())
        wait_for(lambda: len(proxy.events("delivered")) == 2, what="two deliveries")
        policies = {e["recipient"]: e["policy"] for e in proxy.events("delivered")}
        assert policies == {"yes@example.org": "granted", "no@example.org": "refused"}
    finally:
        assert proxy.stop() == 0
        upstream.stop()
