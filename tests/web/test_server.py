from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.metrics import MESSAGES_RECEIVED
from beacon_proxy.web.server import build_app


async def test_healthz_and_metrics() -> None:
    state = {"status": "ok", "queue": 3}
    async with TestClient(TestServer(build_app(lambda: dict(state)))) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "queue": 3}
        MESSAGES_RECEIVED.inc()
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert "beacon_proxy_messages_received_total" in await resp.text()
        state["status"] = "stopping"
        assert (await client.get("/healthz")).status == 503
        assert (await client.get("/nope")).status == 404
