"""End-to-end: the web listener of the real relay under abuse (issue 11, item 6).

``[web]`` rate limits, the header deadline and the security headers are wired
by ``beacon-proxy serve``: a client over its page budget gets ``429`` while
another client (named by the loopback reverse proxy's ``X-Forwarded-For``) does
not; a request head trickled a byte at a time is cut; a page action without its
form token is refused while a one-click works.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from beacon_proxy.tokens import Claims, Purpose, Tokens
from tests.e2e.harness import Proxy

pytestmark = pytest.mark.e2e

SECRET = "e2e-web-abuse-secret-0123456789"


@pytest.fixture
def proxy(tmp_path: Path, proxies: list[Proxy]) -> Proxy:
    p = Proxy(tmp_path, f"""
[web]
header_timeout = 1
rate_limit_page = 1
rate_limit_burst = 3
[tokens]
secret = "{SECRET}"
""")
    proxies.append(p)  # killed at the end if still running
    return p.start()


def _request(proxy: Proxy, path: str, *, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{proxy.web_port}{path}", data=data,
                                 headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_the_page_budget_is_per_client_and_health_is_never_limited(proxy: Proxy) -> None:
    token = Tokens([SECRET]).mint(Claims(Purpose.UNSUBSCRIBE, "ann@example.org", None, "Q1"))
    ann = {"X-Forwarded-For": "203.0.113.1"}
    statuses: list[int] = []
    for _ in range(50):  # 1 a second after a burst of 3: a refill may let one more through
        status, headers = _request(proxy, f"/u/{token}", headers=ann)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[:3] == [200] * 3 and statuses[-1] == 429, statuses
    assert int(headers["Retry-After"]) >= 1
    status, headers = _request(proxy, f"/u/{token}", headers={"X-Forwarded-For": "203.0.113.2"})
    assert status == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'sha")
    bob = {"X-Forwarded-For": "203.0.113.3", "Content-Type": "application/x-www-form-urlencoded"}
    assert _request(proxy, f"/u/{token}", data=b"action=allow-tracking", headers=bob)[0] == 403
    assert _request(proxy, f"/u/{token}", data=b"List-Unsubscribe=One-Click",
                    headers=bob)[0] == 200
    for _ in range(10):
        status, headers = _request(proxy, "/healthz")
        assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_a_trickled_request_head_is_cut(proxy: Proxy) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 600  # never ends
    with socket.create_connection(("127.0.0.1", proxy.web_port), timeout=30) as sock:
        sock.settimeout(0.1)
        answer: bytes | None = None
        for sent in range(len(head)):  # bounded: a byte, then a short look for the close
            try:
                sock.sendall(head[sent:sent + 1])
                answer = sock.recv(100)
            except TimeoutError:
                continue
            except ConnectionResetError:
                answer = b""
            break
    assert answer == b"", f"still connected after {sent + 1} bytes"
    assert sent + 1 < len(head)
