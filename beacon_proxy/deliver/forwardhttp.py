"""The HTTP client of server-side forwards: which URLs it contacts, where it connects, what it says.

A forward URL comes from a sender's mail (its ``List-Unsubscribe`` header, a
tracking pixel), so a hostile sender chooses it.  The proxy contacts it from
inside its own network, on a recipient's click, so the client is narrow on
purpose:

* :func:`check_url` accepts only absolute ``http``/``https`` URLs (as the
  caller allows) with a host, no user name or password, no control
  characters or spaces, and at most :data:`MAX_URL` characters;
* it connects only to public addresses: an IP literal is checked by
  :func:`check_url`, a host name by :class:`PublicResolver` at connection time
  (so a name that resolves, or re-resolves, to ``127.0.0.1``, ``10.x``,
  ``169.254.169.254`` or another non-global address is refused; no request
  to the proxy's own network, the cloud metadata service or the loopback).
  ``allow_private`` lifts this, for tests and for closed networks;
* :func:`new_session` sends nothing about the recipient: a fixed
  ``User-Agent``, no cookies (none are kept), no ``Referer``, no forwarded-for
  headers, no proxy from the environment, no compression (a response body is
  never inflated), and one total timeout per request.  Redirects are never
  followed: the callers pass ``allow_redirects=False``.

    >>> str(check_url("https://lists.example.com/u/1?x=y", schemes={"https"}))
    'https://lists.example.com/u/1?x=y'
    >>> check_url("https://user:pw@lists.example.com/u/1", schemes={"https"})
    Traceback (most recent call last):
    ...
    beacon_proxy.deliver.forwardhttp.RefusedURL: the URL carries a user name or password
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import ssl as _ssl
from collections.abc import Collection
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from beacon_proxy import __version__

__all__ = [
    "MAX_URL",
    "PublicResolver",
    "RefusedAddress",
    "RefusedURL",
    "check_url",
    "host_of",
    "is_public",
    "new_session",
    "user_agent",
]

MAX_URL = 2048
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(ValueError):
    """A forward URL the proxy will not contact (the reason says why)."""


class RefusedAddress(OSError):
    """A host name resolved only to addresses the proxy will not connect to."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)  # aiohttp shows the strerror


def user_agent(role: str) -> str:
    """The fixed ``User-Agent`` of one kind of forward: ``beacon-proxy/0.1.0 (role)``."""
    return f"beacon-proxy/{__version__} ({role})"


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address (IPv4 inside IPv6 is judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, schemes: Collection[str], allow_private: bool = False) -> URL:
    """The URL to request, or :class:`RefusedURL` with the reason."""
    if not isinstance(url, str) or not url:
        raise RefusedURL("no URL")
    if len(url) > MAX_URL:
        raise RefusedURL(f"the URL is longer than {MAX_URL} characters")
    if _BAD_CHARS.search(url):
        raise RefusedURL("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        allowed = " or ".join(sorted(schemes))
        raise RefusedURL(f"the scheme {scheme or '(none)'!r} is not allowed (only {allowed})")
    if "@" in parts.netloc:
        raise RefusedURL("the URL carries a user name or password")
    host = parts.hostname
    if not host:
        raise RefusedURL("the URL has no host")
    if port == 0:
        raise RefusedURL("the URL has port 0")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not allow_private and not is_public(literal):
        raise RefusedURL(f"the address {host} is not public")
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:
        raise RefusedURL(f"not a URL: {exc}") from None


def host_of(url: str) -> str:
    """The host of a URL, for logs (the path may carry the sender's subscriber id)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class PublicResolver(AbstractResolver):
    """Resolves through the system resolver and keeps only public addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if is_public(ipaddress.ip_address(r["host"].split("%")[0]))]
        if not kept:
            raise RefusedAddress(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def new_session(*, role: str, timeout: float, ssl: _ssl.SSLContext | None = None,
                allow_private: bool = False, limit: int = 10) -> aiohttp.ClientSession:
    """A session for one kind of forward (call inside the event loop; close it when done)."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    connector = aiohttp.TCPConnector(
        ssl=ssl if ssl is not None else True,
        resolver=None if allow_private else PublicResolver(),
        limit=limit,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": user_agent(role)},
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
        trust_env=False,
    )
