"""The web listener's guard: rate limits, bounded bodies and heads, slow clients, headers."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.config import Endpoint, WebConfig
from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.tokens import Claims, Purpose, Tokens
from beacon_proxy.web import api as api_module
from beacon_proxy.web.api import build_api
from beacon_proxy.web.auth import ApiTokens, hash_token
from beacon_proxy.web.guard import (
    DEFAULT_CSP,
    ClientAddress,
    Guard,
    Rate,
    TokenBuckets,
)
from beacon_proxy.web.recipient import RecipientSide
from beacon_proxy.web.server import WebServer, build_app

Client = TestClient[Any, Any]
SECRET = "guard-test-secret-0123456789"
API_TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TOKENS = Tokens([SECRET])
UNSUB = TOKENS.mint(Claims(Purpose.UNSUBSCRIBE, "ann@example.org", "news.example.org", "Q1"))
OPEN = TOKENS.mint(Claims(Purpose.OPEN, "ann@example.org", "news.example.org", "Q1"))
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the pieces -------------------------------------------------------------------------


def test_token_buckets_refill_at_the_rate_and_forget_the_oldest() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2, burst=4, capacity=3, clock=clock)
    assert [buckets.take("a") for _ in range(5)] == [0, 0, 0, 0, 0.5]
    clock.now += 0.5  # one token back
    assert buckets.take("a") == 0 and buckets.take("a") == 0.5
    clock.now += 100  # never more than the burst
    assert [buckets.take("a") for _ in range(5)][-1] == 0.5
    for key in ("b", "c", "d"):  # "a" is the least recently seen: forgotten
        buckets.take(key)
    assert len(buckets) == 3
    assert buckets.take("a") == 0  # a forgotten address starts with a full bucket
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(rate=0, burst=1)


def test_client_address_reads_forwarded_for_only_from_trusted_proxies() -> None:
    nobody = ClientAddress()
    assert nobody.of("192.0.2.1", ["203.0.113.9"]) == "192.0.2.1"
    proxy = ClientAddress((ipaddress.ip_network("10.0.0.0/8"),))
    assert proxy.of("10.1.1.1", ["203.0.113.9"]) == "203.0.113.9"
    assert proxy.of("192.0.2.1", ["203.0.113.9"]) == "192.0.2.1"  # not from the proxy
    # A client's own X-Forwarded-For comes first: only what trusted hops added counts.
    assert proxy.of("10.1.1.1", ["198.51.100.1, 203.0.113.9, 10.2.2.2"]) == "203.0.113.9"
    assert proxy.of("10.1.1.1", ["198.51.100.1", "203.0.113.9"]) == "203.0.113.9"
    assert proxy.of("10.1.1.1", ["not-an-address"]) == "10.1.1.1"
    assert proxy.of("10.1.1.1", []) == "10.1.1.1"
    assert proxy.of("::ffff:10.1.1.1", ["203.0.113.9"]) == "203.0.113.9"
    assert proxy.of("10.1.1.1", ["10.3.3.3, 10.2.2.2"]) == "10.3.3.3"  # proxies all the way
    huge = ", ".join(["10.9.9.9"] * 2000)  # a bounded look from the right
    assert proxy.of("10.1.1.1", ["203.0.113.9, " + huge]) == "10.9.9.9"


def test_guard_from_config_follows_the_keys() -> None:
    guard = Guard.from_config(WebConfig(rate_limit_pixel=0, rate_limit_page=3,
                                        rate_limit_burst=2))
    assert guard.limits == {"page": Rate(3, 6), "api": Rate(100, 200),
                            "console": Rate(3, 6)}  # the console at the page rate


# -- over HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    async with s:
        await s.set_consent("ann@example.org", "granted", source="test")
        yield s


def _app(store: Store, guard: Guard | None = None) -> web.Application:
    api = build_api(store, ApiTokens({"ops": hash_token(API_TOKEN)}))
    side = RecipientSide(TOKENS, store)
    return build_app(lambda: {"status": "ok"}, api=api, recipient=side, guard=guard)


async def test_over_the_limit_is_a_429_with_retry_after(store: Store) -> None:
    clock = Clock()
    guard = Guard(pixel=Rate(1, 3), page=Rate(0.5, 2), api=Rate(1, 2),
                  client=ClientAddress((ipaddress.ip_network("127.0.0.0/8"),)), clock=clock)
    one_click = b"List-Unsubscribe=One-Click"
    async with TestClient(TestServer(_app(store, guard))) as client:
        assert [(await client.get(f"/o/{OPEN}")).status for _ in range(4)] == [200] * 3 + [429]
        resp = await client.get("/o/forged")
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        # /u/: GET and POST share one bucket
        assert (await client.get(f"/u/{UNSUB}")).status == 200
        assert (await client.post(f"/u/{UNSUB}", data=one_click, headers=URLENCODED)).status == 200
        resp = await client.post(f"/u/{UNSUB}", data=one_click, headers=URLENCODED)
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"
        assert (await client.get(f"/u/{UNSUB}")).status == 429
        # the admin API answers in JSON
        assert [(await client.get("/api/v1/consent", headers=AUTH)).status
                for _ in range(2)] == [200, 200]
        resp = await client.get("/api/v1/consent", headers=AUTH)
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "rate_limited"
        # health probes are never limited; another client has buckets of its own
        assert [(await client.get("/healthz")).status for _ in range(10)] == [200] * 10
        other = {"X-Forwarded-For": "203.0.113.7"}
        assert (await client.get(f"/o/{OPEN}", headers=other)).status == 200
        assert (await client.get(f"/u/{UNSUB}", headers=other)).status == 200
        clock.now += 2  # the buckets refill
        assert (await client.get(f"/o/{OPEN}")).status == 200
        assert (await client.get(f"/u/{UNSUB}")).status == 200
        assert (await client.get("/api/v1/consent", headers=AUTH)).status == 200


async def test_the_default_limits_never_stop_a_person(store: Store) -> None:
    """A recipient who opens mail, looks at the page, changes everything and leaves."""
    guard = Guard.from_config(WebConfig())
    async with TestClient(TestServer(_app(store, guard))) as client:
        statuses = [(await client.get(f"/o/{OPEN}")).status for _ in range(50)]
        page = await client.get(f"/u/{UNSUB}")
        statuses.append(page.status)
        form = TOKENS.form_token(UNSUB)
        for action in ("stop-tracking", "allow-tracking", "suspend-list", "suspend-all",
                       "resume") * 4:
            resp = await client.post(f"/u/{UNSUB}", data={"form": form, "action": action})
            statuses.append(resp.status)
            statuses.append((await client.get(f"/u/{UNSUB}?lang=ja")).status)
        resp = await client.post(f"/u/{UNSUB}", data=b"List-Unsubscribe=One-Click",
                                 headers=URLENCODED)
        statuses.append(resp.status)
    assert set(statuses) == {200}


async def _raw(port: int, head: bytes) -> bytes:
    """Send a request head, read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


@pytest.fixture
async def server(store: Store) -> AsyncIterator[WebServer]:
    s = WebServer(Endpoint("127.0.0.1", 0), _app(store), header_timeout=0.5)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.mark.parametrize("path", [f"/o/{OPEN}", f"/u/{UNSUB}", "/healthz"])
async def test_a_declared_oversized_body_is_refused_unread(server: WebServer,
                                                           path: str) -> None:
    for method in ("GET", "POST"):  # the answer comes before any byte of the body
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 100000000\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"\r\nConnection: close\r\n" in head


async def test_the_admin_api_keeps_its_own_body_limits(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async with TestClient(TestServer(_app(store))) as client:
        big = json.dumps({"beacons": "granted", "source": "x" * (2 << 20)}).encode()
        resp = await client.put("/api/v1/consent/bob%40example.org", data=io.BytesIO(big),
                                headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 413
        csv = b"address,beacons,source\n" + b"".join(
            b"u%d@example.org,granted,form\n" % i for i in range(100))
        monkeypatch.setattr(api_module, "MAX_UPLOAD", 1000)
        resp = await client.post("/api/v1/import/consent",
                                 headers={**AUTH, "Content-Type": "text/csv"}, data=csv)
        assert resp.status == 413 and (await resp.json())["error"] == "too_large"
        monkeypatch.setattr(api_module, "MAX_UPLOAD", 1 << 30)
        resp = await client.post("/api/v1/import/consent?dry_run=true",
                                 headers={**AUTH, "Content-Type": "text/csv"}, data=csv)
        assert resp.status == 200, await resp.text()


async def test_too_many_header_fields_are_refused(server: WebServer) -> None:
    url = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession() as session:
        many = {f"X-Field-{i}": "v" for i in range(100)}
        async with session.get(url, headers=many) as resp:
            assert resp.status == 400
        some = {f"X-Field-{i}": "v" for i in range(40)}
        async with session.get(url, headers=some) as resp:
            assert resp.status == 200


async def test_a_request_head_trickled_a_byte_at_a_time_is_cut(server: WebServer) -> None:
    """Slowloris: the head never completes; the server closes when header_timeout is up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000  # never ends
    answer: bytes | None = None
    try:
        for sent in range(len(head)):  # bounded: one byte, then a short look for the close
            try:
                writer.write(head[sent:sent + 1])
                answer = await asyncio.wait_for(reader.read(100), 0.05)
            except TimeoutError:
                continue
            except ConnectionResetError:
                answer = b""
            break
    finally:
        writer.close()
    assert answer == b"", f"still connected after {sent + 1} bytes"  # closed, nothing said
    assert sent + 1 < len(head)
    # A connection that says nothing is closed too; one that asks promptly is answered.
    assert await _raw(server.port, b"") == b""
    answer = await _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_every_answer_carries_the_security_headers(store: Store) -> None:
    paths = ["/healthz", "/metrics", "/readyz", f"/o/{OPEN}", "/o/forged", f"/u/{UNSUB}",
             "/u/forged", "/no/such/route", "/api/v1/openapi.json", "/api/v1/consent"]
    async with TestClient(TestServer(_app(store))) as client:
        for path in paths:
            resp = await client.get(path)
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert resp.headers["Referrer-Policy"] == "no-referrer", path
            csp = resp.headers["Content-Security-Policy"]
            assert csp.startswith("default-src 'none';"), path
            assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp, path
            assert "unsafe" not in csp and "http" not in csp and "*" not in csp, path
            if resp.content_type != "text/html":
                assert csp == DEFAULT_CSP, path
        resp = await client.post(f"/u/{UNSUB}", data=b"List-Unsubscribe=One-Click",
                                 headers=URLENCODED)
        assert resp.status == 200 and resp.headers["Content-Security-Policy"] == DEFAULT_CSP
