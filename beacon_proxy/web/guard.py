"""What every HTTP request passes before a handler, and what every answer carries.

The web listener faces the internet; this module bounds what one client can
make it do, before any route looks at a token or the store:

* **The client address** (:class:`ClientAddress`): the TCP peer, unless the
  peer is in ``[web] trusted_proxies``; then ``X-Forwarded-For`` is read from
  the right, and the first address not in a trusted network is the client.
  The header is whatever a client wants it to be, so it is never read from
  anyone else.  Handlers see that address as ``request.remote``.  From a
  trusted proxy, ``X-Forwarded-Proto: https`` (its last value: what the
  nearest proxy says of the connection it took) makes the request count as
  TLS (``request.secure``): the console's cookies are then ``Secure`` behind a
  TLS-terminating proxy, on an admin listener of its own too.
* **Rate limits** (:class:`TokenBuckets`), per client address and route class:
  ``pixel`` (``/o/``), ``page`` (``/u/``, GET and POST alike), ``api``
  (``/api/``) and ``console`` (``/console``, at the ``page`` rate).  A token
  bucket holds ``rate x burst`` requests and refills at ``rate`` a second;
  an empty bucket answers ``429`` with ``Retry-After``.
  IPv6 clients are counted per ``/64`` (one subscriber's prefix: its
  addresses are free to a client).  Each class remembers the most recent
  :data:`CLIENTS` addresses (least recently seen out), so memory stays
  bounded whatever the traffic; a forgotten address starts with a full
  bucket.  ``/healthz``, ``/readyz`` and ``/metrics`` are not limited.
* **Bodies**: outside ``/api/`` a request may declare at most
  :data:`~beacon_proxy.web.forms.MAX_BODY` bytes (a one-click body is 26);
  more is a ``413`` and the connection is closed, so the body is never read
  (except the console's CSV upload, ``/console/import``, which its handler
  streams to a file within its own bound).
  (The admin API keeps its own bounds: ``client_max_size`` for JSON, and the
  CSV import's ``MAX_UPLOAD``, streamed to a file.)
* **Security headers** on every answer (:func:`security_headers`):
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and,
  unless the handler set its own (the preference page does), a
  ``Content-Security-Policy`` that allows nothing.

Slow clients are cut by the HTTP server itself: see :data:`MAX_HEADERS` and
``WebServer(header_timeout=...)`` in :mod:`beacon_proxy.web.server`.

    >>> now = [0.0]
    >>> buckets = TokenBuckets(rate=1, burst=2, clock=lambda: now[0])
    >>> [buckets.take("a"), buckets.take("a"), buckets.take("a"), buckets.take("b")]
    [0.0, 0.0, 1.0, 0.0]
    >>> now[0] = 1.0
    >>> buckets.take("a")
    0.0
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from beacon_proxy.clientkey import client_key
from beacon_proxy.config import WebConfig
from beacon_proxy.metrics import WEB_REFUSED
from beacon_proxy.web.apibase import error_response
from beacon_proxy.web.forms import MAX_BODY
from beacon_proxy.web.machines import ip_address

__all__ = ["CLIENTS", "DEFAULT_CSP", "MAX_FIELD", "MAX_HEADERS", "MAX_LINE", "ClientAddress",
           "Guard", "Rate", "TokenBuckets", "security_headers"]

CLIENTS = 20_000  # addresses remembered per route class
# What aiohttp's request parser accepts (its defaults: 8190, 8190 and 128 headers); more
# is a 400.  A browser sends 10 to 20 headers; the longest link is under 2 700 bytes.
MAX_LINE = 8190  # bytes of the request line
MAX_FIELD = 8190  # bytes of one header field
MAX_HEADERS = 64
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_MAX_FORWARDED = 32  # X-Forwarded-For entries looked at, from the right
_PREFIXES = (("/o/", "pixel"), ("/u/", "page"), ("/api/", "api"), ("/console", "console"))
# Bodies bounded by their handler instead (the console's CSV upload, streamed to a file).
_OWN_BOUNDS = frozenset({"/console/import"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenBuckets:
    """One token bucket per key: ``burst`` requests at once, ``rate`` a second after that."""

    def __init__(self, rate: float, burst: float, *, capacity: int = CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or capacity < 1:
            raise ValueError("rate must be positive, burst and capacity at least 1")
        self.rate, self.burst, self.capacity = rate, burst, capacity
        self._clock = clock
        # key -> (tokens left, when counted); insertion order is recency (pop and re-insert)
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """0.0 when one request of ``key`` may go now, else the seconds until one may."""
        now = self._clock()
        seen = self._buckets.pop(key, None)
        tokens = self.burst if seen is None else min(
            self.burst, seen[0] + max(0.0, now - seen[1]) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.capacity:
            del self._buckets[next(iter(self._buckets))]  # the least recently seen
        return wait


@dataclass(frozen=True)
class ClientAddress:
    """Who a request comes from: the peer, or what trusted proxies say it forwarded."""

    trusted_proxies: tuple[Network, ...] = ()

    def _trusted(self, addr: Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self.trusted_proxies)

    def forwarded_tls(self, peer: str | None, forwarded_proto: Sequence[str] = ()) -> bool:
        """Whether a trusted proxy says it took the request over TLS (the last
        ``X-Forwarded-Proto`` value is ``https``)."""
        current = ip_address(peer)
        if current is None or not self._trusted(current) or not forwarded_proto:
            return False
        return forwarded_proto[-1].rsplit(",", 1)[-1].strip().lower() == "https"

    def of(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str | None:
        """The client's address; ``forwarded_for`` are the ``X-Forwarded-For`` headers."""
        current = ip_address(peer)
        if current is None or not self._trusted(current):
            return peer
        nearest: list[str] = []  # each hop appends the one before it: read from the right
        for header in reversed(forwarded_for):
            nearest += reversed(header.rsplit(",", _MAX_FORWARDED))
            if len(nearest) >= _MAX_FORWARDED:
                break
        for entry in nearest[:_MAX_FORWARDED]:
            found = ip_address(entry.strip())
            if found is None:  # garbage from beyond the last trusted hop: stop there
                break
            current = found
            if not self._trusted(current):
                break
        return str(current)


@dataclass(frozen=True)
class Rate:
    """A rate limit: ``per_second`` requests, ``burst`` at once after a quiet spell."""

    per_second: float
    burst: float


class Guard:
    """The middleware of the web listener (see the module docstring)."""

    def __init__(self, *, pixel: Rate | None = None, page: Rate | None = None,
                 api: Rate | None = None, console: Rate | None = None,
                 client: ClientAddress | None = None,
                 capacity: int = CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client or ClientAddress()
        self.limits = {name: rate for name, rate in (("pixel", pixel), ("page", page),
                                                     ("api", api), ("console", console))
                       if rate is not None}
        self._buckets = {name: TokenBuckets(rate.per_second, rate.burst, capacity=capacity,
                                            clock=clock) for name, rate in self.limits.items()}

    @classmethod
    def from_config(cls, cfg: WebConfig) -> Guard:
        """The guard ``[web]`` describes (a rate of 0 is no limit)."""
        def rate(per_second: int) -> Rate | None:
            return Rate(per_second, per_second * cfg.rate_limit_burst) if per_second else None

        return cls(pixel=rate(cfg.rate_limit_pixel), page=rate(cfg.rate_limit_page),
                   api=rate(cfg.rate_limit_api), console=rate(cfg.rate_limit_page),
                   client=ClientAddress(cfg.trusted_proxies))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        client = self.client.of(peer, request.headers.getall("X-Forwarded-For", ()))
        if client != peer and client is not None:
            request = request.clone(remote=client)
        if not request.secure and self.client.forwarded_tls(
                peer, request.headers.getall("X-Forwarded-Proto", ())):
            request = request.clone(scheme="https")
        route = next((name for prefix, name in _PREFIXES if request.path.startswith(prefix)),
                     None)
        if route is None:
            return await self._bounded(request, handler, route)
        buckets = self._buckets.get(route)
        wait = buckets.take(client_key(client)) if buckets is not None else 0.0
        if wait > 0:
            WEB_REFUSED.labels(route, "rate_limited").inc()
            return _too_many(route, wait)
        return await self._bounded(request, handler, route)

    @staticmethod
    async def _bounded(request: web.Request, handler: Handler,
                       route: str | None) -> web.StreamResponse:
        if (route != "api" and request.path not in _OWN_BOUNDS
                and (request.content_length or 0) > MAX_BODY):
            WEB_REFUSED.labels(route or "other", "too_large").inc()
            resp = _text(413, f"The request body is larger than {MAX_BODY} bytes.")
            resp.force_close()  # the body is not read: this connection cannot go on
            return resp
        return await handler(request)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n",
                        headers={"Cache-Control": "no-store"})


def _too_many(route: str, wait: float) -> web.Response:
    after = str(max(1, math.ceil(wait)))
    if route == "api":
        resp = error_response(429, "rate_limited",
                              f"too many requests from this address: retry in {after} s")
    else:
        resp = _text(429, "Too many requests from your address, please try again later.")
    resp.headers["Retry-After"] = after
    return resp


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers every answer of the web listener carries."""
    for name, value in _COMMON_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
