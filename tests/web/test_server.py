from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.consent.model import StoreUnavailable
from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.metrics import MESSAGES_RECEIVED
from beacon_proxy.spool.queue import Spool
from beacon_proxy.tokens import Claims, Purpose, Tokens
from beacon_proxy.web.api import build_api
from beacon_proxy.web.auth import ApiTokens
from beacon_proxy.web.console import Console
from beacon_proxy.web.recipient import RecipientSide
from beacon_proxy.web.server import (
    Readiness,
    build_admin_app,
    build_app,
    build_public_app,
    spool_problem,
)

Client = TestClient[Any, Any]


def _ok() -> dict[str, object]:
    return {"status": "ok", "queue": 0}


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


# --------------------------------------------------------------------------
# /readyz


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    s = Spool(tmp_path / "spool")
    s.open()
    s.close()
    return s.root


class _BrokenStore:
    def __init__(self, error: Exception | None = None, hang: bool = False) -> None:
        self.error = error
        self.hang = hang

    async def list_consent(self, *, after: str | None = None, limit: int = 100,
                           beacons: Any = None) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        assert self.error is not None
        raise self.error


async def _readyz(ready: Readiness) -> tuple[int, dict[str, Any]]:
    app = build_app(_ok, ready=ready)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.headers["Cache-Control"] == "no-store"
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_ready_when_the_store_answers_and_the_spool_is_writable(
        store: Store, spool: Path) -> None:
    status, body = await _readyz(Readiness(store, spool))
    assert (status, body) == (200, {"status": "ready",
                                    "checks": {"store": "ok", "spool": "ok"}})
    assert sorted(p.name for p in (spool / "tmp").iterdir()) == []  # the probe is gone


async def test_not_ready_while_the_store_fails(spool: Path) -> None:
    status, body = await _readyz(Readiness(_BrokenStore(StoreUnavailable("db is down")), spool))
    assert status == 503
    assert body["status"] == "unready" and body["reason"] == "store: db is down"
    assert body["checks"] == {"store": "db is down", "spool": "ok"}
    status, body = await _readyz(Readiness(_BrokenStore(hang=True), spool, timeout=0.05))
    assert (status, body["reason"]) == (503, "store: no answer within 0.05 s")


async def test_not_ready_on_a_closed_store(tmp_path: Path, spool: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'closed.db'}")
    await s.open()
    await s.close()
    status, body = await _readyz(Readiness(s, spool))
    assert status == 503 and body["reason"].startswith("store: ")


async def test_not_ready_when_the_spool_is_unusable(store: Store, spool: Path) -> None:
    (spool / "tmp").rmdir()
    (spool / "tmp").write_text("not a directory")
    status, body = await _readyz(Readiness(store, spool))
    assert status == 503
    probe = spool / "tmp" / f".readyz.{os.getpid()}"
    assert body["reason"] == f"spool: {probe}: Not a directory"
    assert body["checks"]["store"] == "ok"
    missing = spool.parent / "missing"
    status, body = await _readyz(Readiness(store, missing))
    assert (status, body["reason"]) == (503, f"spool: {missing}: No such file or directory")


def test_spool_problem_names_a_file_where_the_log_folder_should_be(spool: Path) -> None:
    """New messages go to the spool's log (``log/``): a file there fails every put."""
    (spool / "log").mkdir(exist_ok=True)
    assert spool_problem(spool) is None
    (spool / "log").rmdir()
    assert spool_problem(spool) is None  # none: the relay makes it
    (spool / "log").write_text("not a directory")
    probe = spool / "log" / f".readyz.{os.getpid()}"
    assert spool_problem(spool) == f"{probe}: Not a directory"


def test_spool_problem_names_an_unwritable_directory(spool: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.access
    deferred = spool / "deferred"
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != deferred and real(p, mode))
    assert spool_problem(spool) == f"{deferred}: not writable"


class _CountingStore:
    def __init__(self) -> None:
        self.queries = 0

    async def list_consent(self, *, after: str | None = None, limit: int = 100,
                           beacons: Any = None) -> Any:
        self.queries += 1
        await asyncio.sleep(0)


async def test_probes_share_one_check_a_second(spool: Path) -> None:
    now = [100.0]
    store = _CountingStore()
    ready = Readiness(store, spool, clock=lambda: now[0])
    answers = await asyncio.gather(*(ready() for _ in range(20)))
    assert all(a["status"] == "ready" for a in answers)
    assert store.queries == 1
    now[0] += 0.5
    await ready()
    assert store.queries == 1
    (spool / "tmp").rmdir()  # broken meanwhile: seen once the result is a second old
    now[0] += 0.6
    assert (await ready())["status"] == "unready"
    assert store.queries == 2


async def test_not_ready_while_stopping(store: Store, spool: Path) -> None:
    status, body = await _readyz(Readiness(store, spool, stopping=lambda: True))
    assert (status, body["reason"]) == (503, "stopping")


# --------------------------------------------------------------------------
# One listener or two


SECRET = "a-token-secret-0123456789"
UNSUB = Tokens([SECRET]).mint(Claims(Purpose.UNSUBSCRIBE, "ann@example.org", None, "Q1"))


@pytest.fixture
async def parts(store: Store, spool: Path) -> dict[str, Any]:
    return {
        "api": build_api(store, ApiTokens({})),
        "recipient": RecipientSide(Tokens([SECRET]), store),
        "ready": Readiness(store, spool),
    }


ADMIN = ("/metrics", "/readyz", "/api/v1/openapi.json")
PUBLIC = ("/o/x", f"/u/{UNSUB}", "/healthz")


async def _statuses(app: web.Application, paths: tuple[str, ...]) -> dict[str, int]:
    async with TestClient(TestServer(app)) as client:
        out = {}
        for path in paths:
            async with client.get(path) as resp:
                out[path] = resp.status
        # The API's own routes answer (401 without a token), not 404.
        async with client.get("/api/v1/consent") as resp:
            out["/api/v1/consent"] = resp.status
        return out


async def test_one_listener_serves_everything(parts: dict[str, Any]) -> None:
    got = await _statuses(build_app(_ok, **parts), ADMIN + PUBLIC)
    assert all(code != 404 for path, code in got.items() if path in ADMIN), got
    assert got["/healthz"] == 200 and got["/api/v1/consent"] != 404
    assert got["/o/x"] == 200  # a bad token still gets the pixel
    assert got[f"/u/{UNSUB}"] == 200


async def test_two_listeners_split_the_routes(parts: dict[str, Any]) -> None:
    public = await _statuses(build_public_app(_ok, recipient=parts["recipient"]), ADMIN + PUBLIC)
    assert {p: public[p] for p in (*ADMIN, "/api/v1/consent")} == dict.fromkeys(
        (*ADMIN, "/api/v1/consent"), 404)
    assert public["/healthz"] == 200 and public["/o/x"] == 200 and public[f"/u/{UNSUB}"] == 200
    admin = await _statuses(build_admin_app(_ok, ready=parts["ready"], api=parts["api"]),
                            ADMIN + PUBLIC)
    assert admin["/metrics"] == 200 and admin["/readyz"] == 200
    assert admin["/api/v1/openapi.json"] == 200 and admin["/api/v1/consent"] == 401
    assert admin["/o/x"] == 404 and admin[f"/u/{UNSUB}"] == 404
    assert admin["/healthz"] == 200


# --------------------------------------------------------------------------
# The documentation names every route


ROOT = Path(__file__).resolve().parents[2]


def _operator_docs() -> str:
    """README.md and docs/*.md but the performance notebook."""
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "performance.md"]
    return "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *docs])


def _written_paths(docs: str, prefix: str = "") -> set[str]:
    """The paths a text names, each ``{param}`` or ``<param>`` in it made a sample value;
    with ``prefix``, each also as a path under it (the admin API's table leaves out its
    ``/api/v1``)."""
    paths: set[str] = set()
    for m in re.finditer(r"/[A-Za-z0-9_.{}<>/-]+", docs):
        path = re.sub(r"\{[^}/]*\}|<[^>/]*>", "x1", m[0]).rstrip(".")
        paths.update((path, prefix + path) if prefix else (path,))
    return paths


def _undocumented(app: web.Application, docs: str, prefix: str = "") -> list[str]:
    """The routes of ``app`` that no path ``docs`` writes matches (without ``prefix``: not
    those of the admin API, mounted under ``/api/v1``)."""
    written = _written_paths(docs, prefix)
    missing = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD" or (
                not prefix and resource.canonical.startswith("/api/v1")):
            continue
        info = resource.get_info()
        if "pattern" in info:
            pattern = info["pattern"]
            found = any(pattern.fullmatch(path) for path in written)
        else:
            found = info.get("path", resource.canonical) in written
        if not found:
            missing.append(f"{route.method} {resource.canonical}")
    return missing


async def test_every_route_is_documented(store: Store, spool: Path) -> None:
    """Each route the web listeners serve is named in README.md or docs/ (the admin API's
    in docs/consent.md's table), so a new route cannot come without its description."""
    api = build_api(store, ApiTokens({}))
    console = Console(store, ApiTokens({}), spool_root=spool, record_stats=False)
    app = build_app(_ok, ready=Readiness(store, spool), api=api,
                    recipient=RecipientSide(Tokens([SECRET]), store), console=console)
    docs = _operator_docs()
    assert len(list(app.router.routes())) > 15 and len(list(api.router.routes())) > 15
    assert _undocumented(app, docs) == []
    consent = (ROOT / "docs" / "consent.md").read_text(encoding="utf-8")
    assert _undocumented(api, consent, prefix="/api/v1") == []
