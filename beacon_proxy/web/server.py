"""The HTTP listener: health and metrics for operations.

``GET /healthz`` answers ``200 {"status": "ok", "queue": N}`` while the relay
runs (and ``503`` while it is shutting down); ``GET /metrics`` serves the
Prometheus text format; the admin API is mounted under ``/api/v1``
(:mod:`beacon_proxy.web.api`); the recipient-facing routes (``/o/`` open
pixel, ``/u/`` preference page and one-click) are added with ``recipient=``
(:mod:`beacon_proxy.web.recipient`).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from beacon_proxy.config import Endpoint
from beacon_proxy.metrics import REGISTRY
from beacon_proxy.web.recipient import RecipientSide, add_recipient_routes

__all__ = ["WebServer", "build_app"]

HEALTH: web.AppKey[Callable[[], dict[str, object]]] = web.AppKey("health")


async def _healthz(request: web.Request) -> web.Response:
    status = request.app[HEALTH]()
    code = 200 if status.get("status") == "ok" else 503
    return web.json_response(status, status=code, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    resp = web.Response(body=body, headers={"Cache-Control": "no-store"})
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp


def build_app(health: Callable[[], dict[str, object]], *,
              api: web.Application | None = None,
              recipient: RecipientSide | None = None) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[HEALTH] = health
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    if api is not None:  # the admin API (beacon_proxy.web.api.build_api)
        app.add_subapp("/api/v1", api)
    if recipient is not None:  # /o/ and /u/; their open queue runs with the app
        add_recipient_routes(app, recipient)
    return app


class WebServer:
    def __init__(self, listen: Endpoint, app: web.Application) -> None:
        self.listen = listen
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=5.0)
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.listen.host, self.listen.port)
        await self._site.start()

    async def stop(self) -> None:
        if self._runner.server is not None:  # set up
            await self._runner.cleanup()
