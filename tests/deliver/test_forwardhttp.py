"""Which URLs and addresses the forwarders' HTTP client accepts, and what it sends."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from beacon_proxy.deliver.forwardhttp import (
    PublicResolver,
    RefusedAddress,
    RefusedURL,
    check_url,
    host_of,
    is_public,
    new_session,
    user_agent,
)

HTTPS = {"https"}
WEB = {"http", "https"}


@pytest.mark.parametrize("url", [
    "https://lists.example.com/u/abc?x=1&y=%2F",
    "https://LISTS.example.com:8443/u",
    "https://bücher.example/u/1",
    "https://[2001:db8::1]/u",  # documentation range: not global, see below
])
def test_ordinary_https_urls_pass(url: str) -> None:
    if "2001:db8" in url:
        with pytest.raises(RefusedURL, match="not public"):
            check_url(url, schemes=HTTPS)
        assert str(check_url(url, schemes=HTTPS, allow_private=True)).startswith("https://[")
    else:
        assert check_url(url, schemes=HTTPS).scheme == "https"


def test_the_url_is_sent_as_given() -> None:
    url = "https://lists.example.com/u/a%2Fb?id=Zm9v%3D&l=1"
    assert str(check_url(url, schemes=HTTPS)) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("", "no URL"),
    ("https://u:p@lists.example.com/u", "user name or password"),
    ("https://u@lists.example.com/u", "user name or password"),
    ("https://lists.example.com@evil.example/u", "user name or password"),
    ("http://lists.example.com/u", "scheme 'http' is not allowed"),
    ("ftp://lists.example.com/u", "scheme 'ftp'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://lists.example.com:25/", "scheme 'gopher'"),
    ("lists.example.com/u", "scheme"),
    ("https:///u", "no host"),
    ("https://lists.example.com:99999/u", "not a URL"),
    ("https://lists.example.com:0/u", "port 0"),
    ("https://lists.example.com/u\r\nX: y", "control characters"),
    ("https://lists.example.com/a b", "spaces"),
    ("https://lists.example.com\\@evil.example/", "backslashes"),
    ("https://lists.example.com/" + "a" * 3000, "longer than"),
    ("https://127.0.0.1/u", "not public"),
    ("https://10.0.0.8/u", "not public"),
    ("https://192.168.1.1/u", "not public"),
    ("https://169.254.169.254/latest/meta-data/", "not public"),
    ("https://100.64.0.1/u", "not public"),
    ("https://0.0.0.0/u", "not public"),
    ("https://[::1]/u", "not public"),
    ("https://[fe80::1]/u", "not public"),
    ("https://[fd00::1]/u", "not public"),
    ("https://[::ffff:127.0.0.1]/u", "not public"),
    ("https://[64:ff9b::a00:1]/u", "not public"),
    ("https://224.0.0.1/u", "not public"),
])
def test_hostile_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(RefusedURL, match=reason):
        check_url(url, schemes=HTTPS)


def test_private_addresses_only_when_allowed() -> None:
    assert check_url("http://127.0.0.1:8080/u", schemes=WEB, allow_private=True).port == 8080
    with pytest.raises(RefusedURL, match="user name"):  # credentials never
        check_url("http://u:p@127.0.0.1/u", schemes=WEB, allow_private=True)


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.215.14", True), ("2606:4700::1111", True), ("::ffff:93.184.215.14", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("::1", False),
    ("::ffff:10.0.0.1", False), ("64:ff9b::7f00:1", False), ("ff02::1", False),
])
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_host_of_shows_no_path() -> None:
    assert host_of("https://lists.example.com/u/subscriber-42?x=1") == "lists.example.com"
    assert host_of("not a url") == "?"


class _Fixed(AbstractResolver):
    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts
        self.closed = False

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": h, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0} for h in self.hosts]

    async def close(self) -> None:
        self.closed = True


async def test_the_resolver_keeps_only_public_addresses() -> None:
    mixed = PublicResolver(_Fixed("10.0.0.1", "93.184.215.14", "fe80::1%eth0", "127.0.0.1"))
    assert [r["host"] for r in await mixed.resolve("t.example", 443)] == ["93.184.215.14"]
    inner = _Fixed("127.0.0.1", "169.254.169.254")
    with pytest.raises(RefusedAddress, match=r"t\.example resolves to no public address"):
        await PublicResolver(inner).resolve("t.example", 443)
    await PublicResolver(inner).close()
    assert inner.closed


async def test_the_session_sends_a_fixed_agent_and_keeps_no_cookies() -> None:
    session = new_session(role="one-click forwarder", timeout=3.0)
    try:
        assert session.headers["User-Agent"] == user_agent("one-click forwarder")
        assert user_agent("x").startswith("beacon-proxy/")
        assert session.timeout.total == 3.0
        assert not session.auto_decompress and not session.trust_env
        session.cookie_jar.update_cookies({"a": "b"})
        assert len(session.cookie_jar) == 0
    finally:
        await session.close()
    with pytest.raises(ValueError, match="timeout"):
        new_session(role="x", timeout=0)
