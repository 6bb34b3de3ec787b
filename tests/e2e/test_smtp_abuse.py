"""End-to-end: a connection flood from one address against the real ``beacon-proxy serve``.

(AUTH guessing over STARTTLS is in ``test_tls_auth.py``.)
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, wait_for

pytestmark = pytest.mark.e2e

def _greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(1024).startswith(b"220 ")
    return sock


def test_one_untrusted_address_cannot_take_every_slot(tmp_path: Path, upstream: Upstream
                                                      ) -> None:
    proxy = Proxy(tmp_path, """
[smtp]
allow_networks = ["10.0.0.0/8"]
max_connections_per_client = 5
idle_timeout_untrusted = 1
auth_delay_max = 0.5
""", upstream=upstream.port).start()
    try:
        held = [_greeted(proxy.smtp_port) for _ in range(5)]
        with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=30) as sixth:
            assert sixth.recv(1024) == b"421 4.7.0 Too many connections from your address\r\n"
            assert sixth.recv(1024) == b""
        for sock in held:  # idle strangers: closed by the relay after idle_timeout_untrusted
            assert sock.recv(1024) == b""
            sock.close()
        # Their slots are free again once the relay has seen them go.
        wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0,
                 what="the sessions to close")
        with _greeted(proxy.smtp_port) as again:
            again.sendall(b"NOOP\r\n")
            assert again.recv(1024).startswith(b"250")
        rejected = proxy.events("rejected")
        assert [(e["stage"], e["code"]) for e in rejected] == [("CONNECT", 421)]
    finally:
        proxy.stop()
