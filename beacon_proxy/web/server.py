"""The HTTP listeners: the recipient side, and health, readiness and metrics for operations.

``GET /healthz`` (liveness) answers ``200 {"status": "ok", "queue": N}`` while
the relay runs (and ``503`` while it is shutting down).  ``GET /readyz``
(readiness) answers ``200 {"status": "ready", ...}`` when the consent store
answers a trivial query and the spool directories are writable, and ``503``
with a ``reason`` otherwise (:class:`Readiness`).  ``GET /metrics`` serves the
Prometheus text format; the admin API is mounted under ``/api/v1``
(:mod:`beacon_proxy.web.api`, its ``openapi.json`` included), and the
console under ``/console`` with ``console=`` (:mod:`beacon_proxy.web.console`); the
recipient-facing routes (``/o/`` open pixel, ``/u/`` preference page and
one-click) are added with ``recipient=`` (:mod:`beacon_proxy.web.recipient`).

Two layouts (``[web] admin_listen``):

* one listener, :func:`build_app`: everything above on ``[web] listen``
  (the admin API behind its bearer tokens, ``/metrics`` and ``/readyz`` open);
* two listeners: :func:`build_public_app` on ``[web] listen`` serves only
  ``/o/``, ``/u/`` and ``/healthz`` (what faces the internet), and
  :func:`build_admin_app` on ``[web] admin_listen`` the rest (the console too).

Every app runs its requests through a :class:`~beacon_proxy.web.guard.Guard`
(client address, per-address rate limits, bounded bodies) and gives every
answer the security headers (:func:`~beacon_proxy.web.guard.security_headers`).
:class:`WebServer` bounds the request head (:data:`~beacon_proxy.web.guard.MAX_HEADERS`)
and the time a client has to send it (``header_timeout``, which is also how long
an idle keep-alive connection stays open): a client that trickles its headers a
byte at a time is disconnected when that time is up, whatever it still sends.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from beacon_proxy.config import Endpoint
from beacon_proxy.metrics import REGISTRY
from beacon_proxy.web.console import Console, add_console_routes
from beacon_proxy.web.guard import MAX_FIELD, MAX_HEADERS, MAX_LINE, Guard, security_headers
from beacon_proxy.web.recipient import RecipientSide, add_recipient_routes

__all__ = ["METRICS", "Readiness", "WebServer", "build_admin_app", "build_app", "build_public_app"]

Health = Callable[[], dict[str, object]]
Ready = Callable[[], Awaitable[dict[str, object]]]
HEALTH: web.AppKey[Health] = web.AppKey("health")
READY: web.AppKey[Ready] = web.AppKey("ready")
Metrics = Callable[[], Awaitable[bytes]]
#: Where ``/metrics`` takes its page from (default: this process's registry); a
#: supervisor of worker processes sets the sum over its workers.
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")

_NO_STORE = {"Cache-Control": "no-store"}


async def _healthz(request: web.Request) -> web.Response:
    status = request.app[HEALTH]()
    code = 200 if status.get("status") == "ok" else 503
    return web.json_response(status, status=code, headers=_NO_STORE)


async def _readyz(request: web.Request) -> web.Response:
    status = await request.app[READY]()
    code = 200 if status.get("status") == "ready" else 503
    return web.json_response(status, status=code, headers=_NO_STORE)


async def _metrics(request: web.Request) -> web.Response:
    source = request.app.get(METRICS)
    body = await source() if source is not None else generate_latest(REGISTRY)
    resp = web.Response(body=body, headers=_NO_STORE)
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp


async def _always_ready() -> dict[str, object]:
    return {"status": "ready"}


def _new_app(health: Health, guard: Guard | None) -> web.Application:
    # client_max_size bounds what request.read() takes: the admin API's JSON bodies.
    app = web.Application(client_max_size=1 << 20, middlewares=[(guard or Guard()).middleware])
    app.on_response_prepare.append(security_headers)
    app[HEALTH] = health
    app.router.add_get("/healthz", _healthz)
    return app


def _add_admin(app: web.Application, ready: Ready | None, api: web.Application | None,
               console: Console | None, metrics: Metrics | None = None) -> None:
    app[READY] = ready or _always_ready
    if metrics is not None:
        app[METRICS] = metrics
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if api is not None:  # the admin API (beacon_proxy.web.api.build_api)
        app.add_subapp("/api/v1", api)
    if console is not None:  # /console (beacon_proxy.web.console)
        add_console_routes(app, console)


def build_app(health: Health, *, ready: Ready | None = None,
              api: web.Application | None = None,
              recipient: RecipientSide | None = None,
              guard: Guard | None = None,
              console: Console | None = None,
              metrics: Metrics | None = None) -> web.Application:
    """Everything on one listener (no ``[web] admin_listen``)."""
    app = _new_app(health, guard)
    _add_admin(app, ready, api, console, metrics)
    if recipient is not None:  # /o/ and /u/; their open queue runs with the app
        add_recipient_routes(app, recipient)
    return app


def build_public_app(health: Health, *, recipient: RecipientSide | None,
                     guard: Guard | None = None) -> web.Application:
    """The recipient side alone: ``/o/``, ``/u/`` and ``/healthz``."""
    app = _new_app(health, guard)
    if recipient is not None:
        add_recipient_routes(app, recipient)
    return app


def build_admin_app(health: Health, *, ready: Ready | None = None,
                    api: web.Application | None = None,
                    guard: Guard | None = None,
                    console: Console | None = None,
                    metrics: Metrics | None = None) -> web.Application:
    """The operations side: ``/readyz``, ``/metrics``, ``/api/v1``, ``/console`` (and
    ``/healthz``)."""
    app = _new_app(health, guard)
    _add_admin(app, ready, api, console, metrics)
    return app


# --------------------------------------------------------------------------
# Readiness


class _Queryable(Protocol):
    async def list_consent(self, *, after: str | None = None, limit: int = 100,
                           beacons: Any = None) -> Any: ...


class Readiness:
    """The ``/readyz`` check: the store answers a trivial query (within ``timeout``
    seconds) and every spool directory is writable (a file is created in ``tmp``).

    ``stopping`` (a callable) makes it answer not ready while the relay shuts down,
    so a balancer stops sending before the listener closes.  Probes that arrive
    together share one check, and a result is reused for ``reuse`` seconds: however
    often ``/readyz`` is asked, the store and the spool see one check a second."""

    def __init__(self, store: _Queryable, spool_root: Path, *, timeout: float = 5.0,
                 stopping: Callable[[], bool] = lambda: False, reuse: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.spool_root = spool_root
        self.timeout = timeout
        self.stopping = stopping
        self.reuse = reuse
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, dict[str, str]] | None = None

    async def __call__(self) -> dict[str, object]:
        checks = await self._checks()
        problems = [f"{name}: {text}" for name, text in checks.items() if text != "ok"]
        if self.stopping():
            problems.insert(0, "stopping")
        if problems:
            return {"status": "unready", "reason": "; ".join(problems), "checks": checks}
        return {"status": "ready", "checks": checks}

    async def _checks(self) -> dict[str, str]:
        async with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self.reuse:
                return dict(self._last[1])
            store, spool = await asyncio.gather(self._store(), asyncio.to_thread(self._spool))
            checks = {"store": store or "ok", "spool": spool or "ok"}
            self._last = (self._clock(), checks)
            return dict(checks)

    async def _store(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.list_consent(limit=1)
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:  # any failure is "not ready"; the text says which
            return _short(exc)
        return None

    def _spool(self) -> str | None:
        return spool_problem(self.spool_root)


def spool_problem(root: Path) -> str | None:
    """Why the spool at ``root`` is not usable, or None: every directory in it must be
    writable, and a file must be creatable in ``tmp`` (where a queue file starts) and in
    ``log`` (where new messages go; a file in its place fails every put)."""
    dirs: Iterable[Path]
    try:
        dirs = [root, *(p for p in root.iterdir() if p.is_dir())]
    except OSError as exc:
        return _short(exc)
    for d in dirs:
        if not os.access(d, os.W_OK | os.X_OK):
            return f"{d}: not writable"
    folders = [root / "tmp"]
    if os.path.lexists(root / "log"):  # a file there fails every put (a segment's name
        folders.append(root / "log")  # is digits and ".seg": the probe is no segment)
    for folder in folders:
        probe = folder / f".readyz.{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"r")
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            return _short(exc)
    return None


def _short(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


class WebServer:
    """One listener.  ``header_timeout``: seconds a connection has, from its start or
    from the previous answer, to send a complete request head (request line and
    headers); an idle keep-alive connection is closed after as long."""

    def __init__(self, listen: Endpoint, app: web.Application, *,
                 header_timeout: float = 20.0) -> None:
        self.listen = listen
        # aiohttp's keep-alive timer runs from the connection's start (since 3.14.5, hence
        # the floor in pyproject.toml) and from each answer, and is not pushed back by bytes
        # that arrive: a request head that is not complete when it fires is cut (aiohttp
        # has no separate header timeout; tests/web/test_guard.py trickles one).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=5.0, keepalive_timeout=header_timeout,
                                     max_line_size=MAX_LINE, max_field_size=MAX_FIELD,
                                     max_headers=MAX_HEADERS)
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The port listened on (``listen.port``, or the one chosen for port 0)."""
        address = self._runner.addresses[0]
        return int(address[1])

    async def start(self) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.listen.host, self.listen.port)
        await self._site.start()

    async def stop(self) -> None:
        if self._runner.server is not None:  # set up
            await self._runner.cleanup()
