"""The admin API, endpoint by endpoint: tokens, JSON errors, pagination, CSV."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.consent.model import StoreUnavailable
from beacon_proxy.consent.store import Store
from beacon_proxy.web.api import IMPORTS, build_api, openapi_document
from beacon_proxy.web.auth import ApiTokens, hash_token
from beacon_proxy.web.server import build_app

TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[Any, Any]


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    api = build_api(store, ApiTokens({"ops": hash_token(TOKEN),
                                      "other": hash_token("another-token-0123456789")}))
    async with TestClient(TestServer(build_app(lambda: {"status": "ok"}, api=api))) as c:
        yield c


def _operations() -> list[tuple[str, str]]:
    doc = openapi_document()
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters" and op.get("security") != []:
                ops.append((method.upper(), "/api/v1" + path.replace("{address}",
                                                                     "a%40example.org")))
    return ops


@pytest.mark.parametrize(("method", "path"), _operations())
async def test_every_operation_needs_a_valid_token(client: Client, method: str,
                                                   path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"] == "unauthorized"
    resp = await client.request(method, path, headers={"Authorization": "Basic b3BzOng="})
    assert resp.status == 401
    resp = await client.request(method, path, headers={"Authorization": "Bearer wrong-token"})
    assert resp.status == 403
    assert await resp.json() == {"error": "forbidden", "message": "the bearer token is not valid"}


async def test_openapi_document_needs_no_token(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["openapi"].startswith("3.")


async def test_consent_put_get_list_delete(client: Client) -> None:
    resp = await client.put("/api/v1/consent/Ann%40Example.org", headers=AUTH,
                            json={"beacons": "granted", "source": "form"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["address"], body["beacons"], body["source"], body["actor"]) == (
        "Ann@example.org", "granted", "form", "api:ops")
    resp = await client.get("/api/v1/consent/ann@EXAMPLE.org", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["beacons"] == "granted"
    for i in range(3):
        await client.put(f"/api/v1/consent/u{i}@example.org", headers=AUTH,
                         json={"beacons": "refused"})
    resp = await client.get("/api/v1/consent?limit=2", headers=AUTH)
    page = await resp.json()
    assert [c["address"] for c in page["items"]] == ["Ann@example.org", "u0@example.org"]
    resp = await client.get("/api/v1/consent", params={"after": page["next"], "limit": "2"},
                            headers=AUTH)
    page = await resp.json()
    assert [c["address"] for c in page["items"]] == ["u1@example.org", "u2@example.org"]
    assert page["next"] is None
    resp = await client.get("/api/v1/consent?beacons=granted", headers=AUTH)
    assert [c["address"] for c in (await resp.json())["items"]] == ["Ann@example.org"]
    resp = await client.delete("/api/v1/consent/ann@example.org", headers=AUTH)
    assert resp.status == 204
    for method in ("GET", "DELETE"):
        resp = await client.request(method, "/api/v1/consent/ann@example.org", headers=AUTH)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_history_and_audit(client: Client) -> None:
    await client.put("/api/v1/consent/a@example.org", headers=AUTH, json={"beacons": "granted"})
    await client.put("/api/v1/consent/a@example.org", headers=AUTH, json={"beacons": "refused"})
    await client.put("/api/v1/consent/b@example.org", headers=AUTH, json={"beacons": "refused"})
    resp = await client.get("/api/v1/consent/a@example.org/history", headers=AUTH)
    items = (await resp.json())["items"]
    assert [(e["old"], e["new"], e["actor"]) for e in items] == [
        (None, "granted", "api:ops"), ("granted", "refused", "api:ops")]
    resp = await client.get("/api/v1/audit?limit=2", headers=AUTH)
    page = await resp.json()
    assert len(page["items"]) == 2 and page["next"] == str(page["items"][1]["id"])
    resp = await client.get(f"/api/v1/audit?after={page['next']}", headers=AUTH)
    assert [e["address"] for e in (await resp.json())["items"]] == ["b@example.org"]


async def test_suppressions(client: Client) -> None:
    resp = await client.post("/api/v1/suppressions", headers=AUTH,
                             json={"address": "Bob@example.org", "list": "News.Example.org",
                                   "reason": "clicked", "source": "one-click"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["address"], body["list_id"], body["actor"]) == (
        "Bob@example.org", "news.example.org", "api:ops")
    resp = await client.post("/api/v1/suppressions", headers=AUTH,
                             json={"address": "bob@example.org", "list": None})
    assert (await resp.json())["list_id"] is None
    resp = await client.get("/api/v1/suppressions/BOB@example.org", headers=AUTH)
    assert [s["list_id"] for s in (await resp.json())["items"]] == [None, "news.example.org"]
    resp = await client.get("/api/v1/suppressions?global=true", headers=AUTH)
    assert len((await resp.json())["items"]) == 1
    resp = await client.get("/api/v1/suppressions?list=news.example.org&limit=1", headers=AUTH)
    page = await resp.json()
    assert [s["list_id"] for s in page["items"]] == ["news.example.org"]
    resp = await client.delete("/api/v1/suppressions/bob@example.org?list=news.example.org",
                               headers=AUTH)
    assert resp.status == 204
    resp = await client.delete("/api/v1/suppressions/bob@example.org?list=news.example.org",
                               headers=AUTH)
    assert resp.status == 404
    resp = await client.delete("/api/v1/suppressions/bob@example.org", headers=AUTH)
    assert resp.status == 204


async def test_forget_and_opens(client: Client, store: Store) -> None:
    await client.put("/api/v1/consent/z@example.org", headers=AUTH, json={"beacons": "granted"})
    await store.record_open("z@example.org", list_id="n.example.org", ua_class="browser")
    await store.record_open("z@example.org", machine=True)
    resp = await client.get("/api/v1/events/opens", headers=AUTH,
                            params={"since": "2000-01-01T00:00:00Z", "list": "n.example.org"})
    items = (await resp.json())["items"]
    assert [(e["address"], e["ua_class"], e["machine"]) for e in items] == [
        ("z@example.org", "browser", False)]
    resp = await client.get("/api/v1/events/opens?address=Z@example.org&limit=1", headers=AUTH)
    assert (await resp.json())["next"] is not None
    for flag, expected in (("false", [False]), ("true", [True])):
        resp = await client.get(f"/api/v1/events/opens?machine={flag}", headers=AUTH)
        assert [e["machine"] for e in (await resp.json())["items"]] == expected
    await client.post("/api/v1/suppressions", headers=AUTH, json={"address": "z@example.org"})
    resp = await client.post("/api/v1/consent/z@example.org/forget", headers=AUTH)
    assert await resp.json() == {"consent": True, "opens": 2, "suppressions": 1, "audit": 2,
                                 "forwards": 0}
    resp = await client.get("/api/v1/events/opens", headers=AUTH)
    assert (await resp.json())["items"] == []
    resp = await client.get("/api/v1/suppressions/z@example.org", headers=AUTH)
    (kept,) = (await resp.json())["items"]
    assert kept["address"] is None and kept["forgotten"] is True


@pytest.mark.parametrize(
    ("method", "path", "data", "ctype", "code", "text"),
    [
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": "granted"', "application/json",
         "malformed_json", "malformed JSON: Expecting ',' delimiter at line 1 column 22"),
        ("PUT", "/api/v1/consent/a@example.org", b"\xff", "application/json", "malformed_json",
         "not UTF-8"),
        ("PUT", "/api/v1/consent/a@example.org", b"[1]", "application/json", "malformed_json",
         "must be a JSON object"),
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": "granted", "colour": "red"}',
         "application/json", "unknown_field", "unknown field(s): colour"),
        ("PUT", "/api/v1/consent/a@example.org", b"{}", "application/json", "missing_field",
         "missing field(s): beacons"),
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": "yes"}', "application/json",
         "invalid_value", "beacons: must be granted, refused or unknown"),
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": 1}', "application/json",
         "invalid_value", "beacons: expected a string"),
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": "granted", "source": "a\\nb"}',
         "application/json", "invalid_value", "source: must not contain control characters"),
        ("PUT", "/api/v1/consent/nobody", b'{"beacons": "granted"}', "application/json",
         "invalid_address", "bad address: the address has no @domain"),
        ("PUT", "/api/v1/consent/a%20b@example.org", b'{"beacons": "granted"}',
         "application/json", "invalid_address", "spaces"),
        ("PUT", "/api/v1/consent/a@example.org", b'{"beacons": "granted"}', "text/plain",
         "unsupported_media_type", "application/json"),
        ("POST", "/api/v1/suppressions", b'{"address": "a@"}', "application/json",
         "invalid_address", "the domain is missing"),
        ("POST", "/api/v1/suppressions", b'{"address": "a@x.org", "list": "a b"}',
         "application/json", "invalid_value", "list: not a list id"),
        ("POST", "/api/v1/suppressions", b'{"address": "a@x.org", "why": "x"}',
         "application/json", "unknown_field", "unknown field(s): why"),
        ("POST", "/api/v1/suppressions", b'{"address": null}', "application/json",
         "invalid_address", "expected a string"),
        ("POST", "/api/v1/suppressions", b'{"list": "x.org"}', "application/json",
         "missing_field", "missing field(s): address"),
        ("GET", "/api/v1/consent/@example.org", b"", "", "invalid_address",
         "the local part is missing"),
        ("GET", "/api/v1/suppressions/x", b"", "", "invalid_address", "no @domain"),
        ("DELETE", "/api/v1/consent/x", b"", "", "invalid_address", "no @domain"),
        ("GET", "/api/v1/consent?limit=0", b"", "", "invalid_value", "limit"),
        ("GET", "/api/v1/consent?limt=5", b"", "", "unknown_parameter",
         "unknown query parameter(s): limt"),
        ("GET", "/api/v1/consent?beacons=maybe", b"", "", "invalid_value", "beacons"),
        ("GET", "/api/v1/audit?after=abc", b"", "", "invalid_value", "after"),
        ("GET", "/api/v1/events/opens?since=yesterday", b"", "", "invalid_value",
         "since: not an ISO 8601 time"),
        ("GET", "/api/v1/events/opens?address=x", b"", "", "invalid_address", "no @domain"),
        ("GET", "/api/v1/events/opens?machine=yes", b"", "", "invalid_value", "true or false"),
        ("GET", "/api/v1/suppressions?global=yes", b"", "", "invalid_value", "true or false"),
        ("POST", "/api/v1/import/consent", b"a@x.org,granted,\n", "application/json",
         "unsupported_media_type", "text/csv"),
    ],
)
async def test_errors_say_what_is_wrong(client: Client, method: str, path: str, data: bytes,
                                        ctype: str, code: str, text: str) -> None:
    headers = {**AUTH, **({"Content-Type": ctype} if ctype else {})}
    resp = await client.request(method, path, data=data or None, headers=headers)
    assert resp.status == (415 if code == "unsupported_media_type" else 400)
    body = await resp.json()
    assert body["error"] == code
    assert text in body["message"]


async def test_unknown_routes_and_methods_answer_json(client: Client) -> None:
    resp = await client.get("/api/v1/nothing", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.patch("/api/v1/consent", headers=AUTH)
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


async def test_store_unavailable_is_503(client: Client, store: Store,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(store, "get_consent", down)
    resp = await client.get("/api/v1/consent/a@example.org", headers=AUTH)
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"


CSV = "address,beacons,source\r\na@example.org,granted,form\r\nb@example.org,refused,\r\n"


async def test_csv_import_dry_run_and_export(client: Client) -> None:
    headers = {**AUTH, "Content-Type": "text/csv"}
    resp = await client.post("/api/v1/import/consent?dry_run=true", data=CSV, headers=headers)
    assert await resp.json() == {"rows": 2, "changed": 0, "applied": False}
    resp = await client.get("/api/v1/consent", headers=AUTH)
    assert (await resp.json())["items"] == []
    resp = await client.post("/api/v1/import/consent?source=crm", data=CSV, headers=headers)
    assert await resp.json() == {"rows": 2, "changed": 2, "applied": True}
    resp = await client.get("/api/v1/consent/b@example.org", headers=AUTH)
    assert (await resp.json())["source"] == "crm"
    resp = await client.get("/api/v1/export/consent", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/csv"
    lines = (await resp.text()).splitlines()
    assert lines[0] == "address,beacons,source,actor,updated_at"
    assert lines[1].startswith("a@example.org,granted,form,api:ops,")
    sup = "address,list,reason\nc@example.org,news.example.org,clicked\n"
    resp = await client.post("/api/v1/import/suppressions", data=sup, headers=headers)
    assert await resp.json() == {"rows": 1, "changed": 1, "applied": True}
    resp = await client.get("/api/v1/export/suppressions", headers=AUTH)
    assert (await resp.text()).splitlines()[1].startswith("c@example.org,news.example.org,")


async def test_head_of_an_export_sends_no_body(client: Client) -> None:
    """A body after a HEAD answer would be read as the next answer on the connection."""
    headers = {**AUTH, "Content-Type": "text/csv"}
    await client.post("/api/v1/import/consent", data=CSV, headers=headers)
    resp = await client.head("/api/v1/export/consent", headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert await resp.read() == b""
    resp = await client.get("/api/v1/consent", headers=AUTH)  # the same connection
    assert resp.status == 200 and len((await resp.json())["items"]) == 2


@pytest.mark.parametrize(
    ("data", "line", "text"),
    [
        (b"address,beacons,source\na@x.org,granted,\nb@x.org,perhaps,\nc@x.org,granted,\n", 3,
         "beacons: must be granted, refused or unknown"),
        (b"address,beacons,source\na@x.org,granted,\nnope,granted,\n", 3, "bad address 'nope'"),
        (b"email,beacons\n", 1, "wrong header"),
        (b"address,beacons,source\n\xe9@x.org,granted,\n", 2, "not UTF-8"),
        (b"", 1, "the file is empty"),
    ],
)
async def test_csv_import_errors_apply_nothing(client: Client, data: bytes, line: int,
                                               text: str) -> None:
    resp = await client.post("/api/v1/import/consent", data=data,
                             headers={**AUTH, "Content-Type": "text/csv"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_csv" and body["line"] == line
    assert text in body["message"]
    resp = await client.get("/api/v1/consent", headers=AUTH)
    assert (await resp.json())["items"] == []


async def test_a_third_concurrent_import_is_refused_before_its_upload(store: Store) -> None:
    """Each import may spool 1 GiB and hold a transaction: two at once, a third is 503."""
    from beacon_proxy.web.api import IMPORTS_AT_ONCE

    api = build_api(store, ApiTokens({"ops": hash_token(TOKEN)}))
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"address,beacons,source\r\n"
        await release.wait()
        yield b"a@example.org,granted,form\r\n"

    headers = {**AUTH, "Content-Type": "text/csv"}
    async with TestClient(TestServer(build_app(lambda: {"status": "ok"}, api=api))) as c:
        slow = [asyncio.create_task(c.post("/api/v1/import/consent", data=slow_body(),
                                           headers=headers)) for _ in range(IMPORTS_AT_ONCE)]
        for _ in range(3000):  # until both handlers have started (bounded: 30 s)
            if api[IMPORTS].running == IMPORTS_AT_ONCE:
                break
            await asyncio.sleep(0.01)
        assert api[IMPORTS].running == IMPORTS_AT_ONCE
        resp = await c.post("/api/v1/import/suppressions", data=CSV, headers=headers)
        assert resp.status == 503 and resp.headers["Retry-After"] == "10"
        assert (await resp.json())["error"] == "too_busy"
        release.set()
        for task in slow:
            resp = await task
            assert resp.status == 200
            assert (await resp.json())["rows"] == 1
        assert api[IMPORTS].running == 0
        resp = await c.post("/api/v1/import/consent", data=CSV, headers=headers)
        assert resp.status == 200  # a slot is free again


async def test_a_failed_import_frees_its_slot(client: Client) -> None:
    headers = {**AUTH, "Content-Type": "text/csv"}
    for _ in range(3):  # more failures than slots: none leaks
        resp = await client.post("/api/v1/import/consent", data=b"email\n", headers=headers)
        assert resp.status == 400
    resp = await client.post("/api/v1/import/consent", data=CSV, headers=headers)
    assert resp.status == 200


@pytest.mark.parametrize("rows", [2, 12_000])  # one batch; several
async def test_an_import_whose_token_is_revoked_meanwhile_applies_nothing(
        store: Store, rows: int) -> None:
    """A leaked token removed (SIGHUP) while its import runs: the transaction is not
    committed; another token's imports go on."""
    tokens = ApiTokens({"ops": hash_token(TOKEN)})
    api = build_api(store, tokens)
    release = asyncio.Event()
    body = "address,beacons,source\r\n" + "".join(
        f"u{i}@example.org,granted,crm\r\n" for i in range(rows))

    async def slow_body() -> AsyncIterator[bytes]:
        yield body.encode()
        await release.wait()  # the upload ends only after the token is gone

    headers = {**AUTH, "Content-Type": "text/csv"}
    async with TestClient(TestServer(build_app(lambda: {"status": "ok"}, api=api))) as c:
        task = asyncio.create_task(c.post("/api/v1/import/consent", data=slow_body(),
                                          headers=headers))
        for _ in range(3000):  # until the handler runs (bounded: 30 s)
            if api[IMPORTS].running:
                break
            await asyncio.sleep(0.01)
        tokens.replace({"ops": hash_token("a-new-token-0123456789abcdef")})
        release.set()
        resp = await task
        assert resp.status == 403 and (await resp.json())["error"] == "revoked"
    assert (await store.list_consent()).items == []
