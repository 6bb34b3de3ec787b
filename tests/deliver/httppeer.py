"""A scripted HTTP server on 127.0.0.1 (aiohttp), standing for a sender's or tracker's site.

Each path answers from its script, one entry per request, then ``200``:

============  ====================================================
an int        that status, empty body
(int, dict)   that status with these headers
``redirect``  ``302`` to ``/landed`` (which records a hit if followed)
``hang``      no answer until the peer closes
``huge``      ``200`` and an endless body (chunks until the client goes)
``slow``      ``200``, then one byte of body per second
============  ====================================================

Every request is recorded in ``seen`` and announced on ``arrivals``, so a
test waits for the event it caused (:meth:`HttpPeer.next`), never for time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["HttpPeer", "Seen", "http_peer"]

Step = int | str | tuple[int, dict[str, str]]
_CHUNK = b"x" * 65536
_MAX_CHUNKS = 16384  # 1 GiB: far more than any client here reads


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class HttpPeer:
    host: str = "127.0.0.1"
    port: int = 0
    scheme: str = "http"
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    arrivals: asyncio.Queue[Seen] = field(default_factory=asyncio.Queue)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_sent: int = 0

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def script(self, path: str, *steps: Step) -> None:
        self.scripts.setdefault(path, []).extend(steps)

    async def next(self, timeout: float = 20.0) -> Seen:
        """The next request to arrive (an error if none comes within ``timeout``)."""
        return await asyncio.wait_for(self.arrivals.get(), timeout)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path, request.query_string,
                    CIMultiDict(request.headers), await request.read())
        self.seen.append(seen)
        self.arrivals.put_nowait(seen)
        steps = self.scripts.get(request.path)
        step: Step = steps.pop(0) if steps else 200
        if isinstance(step, int):
            return web.Response(status=step)
        if isinstance(step, tuple):
            return web.Response(status=step[0], headers=step[1])
        if step == "redirect":
            return web.Response(status=302, headers={"Location": "/landed"})
        if step == "hang":
            await self.closing.wait()
            return web.Response(status=200)
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client hung up: expected
            await self._stream(resp, step)
        return resp

    async def _stream(self, resp: web.StreamResponse, step: Step) -> None:
        if step == "huge":
            for _ in range(_MAX_CHUNKS):
                await resp.write(_CHUNK)
                self.bytes_sent += len(_CHUNK)
        elif step == "slow":
            for _ in range(600):
                await resp.write(b"x")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), 1.0)
                if self.closing.is_set():
                    break


@contextlib.asynccontextmanager
async def http_peer(tls: ssl.SSLContext | None = None,
                    host: str = "127.0.0.1") -> AsyncIterator[HttpPeer]:
    peer = HttpPeer(host=host, scheme="https" if tls else "http")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=tls)
    await site.start()
    peer.port = runner.addresses[0][1]
    try:
        yield peer
    finally:
        peer.closing.set()
        await runner.cleanup()
