"""End-to-end: two relays behind one TCP balancer, sharing a PostgreSQL store and a secret.

The setup ``docs/operations.md`` describes for N nodes: every node reads
consent, suppressions and campaign memory from the same database at dispatch
time (no cache), and verifies every other node's links with the shared token
secret, so what a recipient or an operator does through one node applies at
once on all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import smtplib
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from beacon_proxy.web.auth import hash_token
from tests.consent.pg import fresh_schema
from tests.e2e.harness import PIXEL, Proxy, Upstream, newsletter, preference_link, wait_for

pytestmark = pytest.mark.e2e
PUBLIC = "https://prefs.sender.example"
TOKEN = "nodes-admin-token-0123456789"


class Balancer:
    """A round-robin TCP balancer on loopback (what HAProxy or a cloud LB does)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.turn = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            backend = socket.create_connection(
                ("127.0.0.1", self.backends[self.turn % len(self.backends)]), timeout=30)
            self.turn += 1
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with src:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def nodes(tmp_path: Path, upstream: Upstream, e2e_pg_database: str,
          proxies: list[Proxy]) -> list[Proxy]:
    store = asyncio.run(fresh_schema(e2e_pg_database))
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        proxies.append(Proxy(workdir, f"""
[store]
url = "{store}"
[tokens]
secret = "nodes-shared-secret-0123456789"
[web]
public_url = "{PUBLIC}"
[api.tokens]
ops = "{hash_token(TOKEN)}"
""", upstream=upstream.port).start())
    return proxies  # killed by the proxies fixture


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _on(node: Proxy, link: str) -> str:
    """A link minted for the public URL, sent to one node's own listener."""
    assert link.startswith(PUBLIC + "/")
    return f"http://127.0.0.1:{node.web_port}{link[len(PUBLIC):]}"


def test_a_one_click_on_node_a_stops_delivery_on_node_b_at_once(
        nodes: list[Proxy], upstream: Upstream) -> None:
    a, b = nodes
    balancer = Balancer([a.smtp_port, b.smtp_port])
    try:
        for n in range(4):  # through the balancer: both nodes take mail
            with smtplib.SMTP("127.0.0.1", balancer.port, timeout=30) as client:
                client.sendmail("news@sender.example", [f"ann{n}@example.org"], newsletter(n=n))
        wait_for(lambda: len(upstream.messages) == 4, 60, "four copies")
        assert a.events("delivered") and b.events("delivered")  # both nodes took mail
    finally:
        balancer.close()
    (copy,) = upstream.to("ann0@example.org")
    status = _post(_on(a, preference_link(copy.data)), b"List-Unsubscribe=One-Click",
                   {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    b.send("news@sender.example", ["ann0@example.org", "zoe@example.org"], newsletter(n=9))
    wait_for(lambda: upstream.to("zoe@example.org"), 60, "the other recipient's copy")
    (suppressed,) = wait_for(lambda: b.events("suppressed"), 30, "node B's suppression")
    assert suppressed["recipient"] == "ann0@example.org"
    assert len(upstream.to("ann0@example.org")) == 1  # nothing after the one-click


def test_a_consent_change_through_node_b_applies_on_node_a(
        nodes: list[Proxy], upstream: Upstream) -> None:
    a, b = nodes
    body = json.dumps({"beacons": "granted"}).encode()
    status = _post(f"http://127.0.0.1:{b.web_port}/api/v1/consent/bob%40example.org", body,
                   {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                   method="PUT")
    assert status in (200, 201), status
    a.send("news@sender.example", ["bob@example.org"], newsletter())
    (copy,) = wait_for(lambda: upstream.to("bob@example.org"), 60, "bob's copy")
    assert f"{PUBLIC}/o/".encode() in copy.data  # granted: the pixel points at our /o/
    assert PIXEL.encode() not in copy.data
    (delivered,) = a.wait_events("delivered", 1)
    assert delivered["policy"] == "granted"
