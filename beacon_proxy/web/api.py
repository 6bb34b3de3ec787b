"""The admin HTTP API under ``/api/v1``: consent, suppressions, audit, events, CSV.

Mounted on the web listener by :func:`beacon_proxy.web.server.build_app`.
``openapi.json`` next to this module describes every operation (served at
``/api/v1/openapi.json`` without a token); the tests check the two agree.
Addresses go into paths percent-encoded (``/api/v1/consent/ann%40example.org``
or plain ``ann@example.org``).

Lists are paginated by cursor: each page has ``items`` and ``next``; pass
``next`` as ``?after=`` for the following page (``null`` on the last one).

CSV imports: at most :data:`IMPORTS_AT_ONCE` run at once per process, their
uploads included (each may write up to :data:`MAX_UPLOAD` bytes to a temporary
file and hold a store transaction); one more is answered ``503 too_busy`` with
``Retry-After`` before any of its body is read, as the console refuses a third
job.  An import stops, applying nothing, when the token that sent it is removed
or replaced while it runs (``403 revoked``; asked after every batch, before
the transaction commits).
"""

from __future__ import annotations

import asyncio
import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web import AppKey

from beacon_proxy.consent.csvio import Kind, export_csv, import_file, prepend
from beacon_proxy.consent.model import StoreError, to_json
from beacon_proxy.consent.store import Store
from beacon_proxy.threadio import temp_file
from beacon_proxy.web.apibase import (
    STORE,
    TOKENS,
    ApiError,
    Ctx,
    endpoint,
    error_middleware,
    json_body,
    list_id,
    q_bool,
    q_cursor,
    q_int,
    q_list,
    q_time,
    text_field,
)
from beacon_proxy.web.auth import ApiTokens, bearer_token

__all__ = ["IMPORTS_AT_ONCE", "MAX_UPLOAD", "build_api", "openapi_document"]

MAX_UPLOAD = 1 << 30  # bytes of CSV per import request
IMPORTS_AT_ONCE = 2  # CSV imports running (or uploading) at once; one more: 503 too_busy
IMPORT_RETRY_AFTER = 10  # seconds, the Retry-After of a too_busy answer


class _Imports:
    """How many CSV imports this API runs now (uploads included)."""

    def __init__(self) -> None:
        self.running = 0


IMPORTS: AppKey[_Imports] = AppKey("imports", _Imports)
_NO_STORE = {"Cache-Control": "no-store"}


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("beacon_proxy.web").joinpath("openapi.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=_NO_STORE)


def _page(page: Any) -> web.Response:
    return _ok({"items": [to_json(i) for i in page.items], "next": page.next})


def _address(request: web.Request) -> str:
    return request.match_info["address"]


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# -- consent -------------------------------------------------------------------

async def list_consent(request: web.Request, ctx: Ctx) -> web.Response:
    return _page(await ctx.store.list_consent(
        after=q_cursor(request, numeric=False), limit=q_int(request, "limit", 100, 1, 1000),
        beacons=request.query.get("beacons")))


async def get_consent(request: web.Request, ctx: Ctx) -> web.Response:
    found = await ctx.store.get_consent(_address(request))
    if found is None:
        raise ApiError(404, "not_found", "no consent record for this address")
    return _ok(to_json(found))


async def put_consent(request: web.Request, ctx: Ctx) -> web.Response:
    body = await json_body(request, required=["beacons"], optional=["source"])
    beacons = text_field(body, "beacons")
    if beacons is None:
        raise ApiError(400, "invalid_value", "beacons: expected granted, refused or unknown",
                       field="beacons")
    return _ok(to_json(await ctx.store.set_consent(
        _address(request), beacons, source=text_field(body, "source"), actor=ctx.actor)))


async def delete_consent(request: web.Request, ctx: Ctx) -> web.Response:
    if not await ctx.store.delete_consent(_address(request), actor=ctx.actor):
        raise ApiError(404, "not_found", "no consent record for this address")
    return web.Response(status=204)


async def consent_history(request: web.Request, ctx: Ctx) -> web.Response:
    return _page(await ctx.store.history(
        _address(request), after=q_cursor(request, numeric=True),
        limit=q_int(request, "limit", 100, 1, 1000)))


async def forget(request: web.Request, ctx: Ctx) -> web.Response:
    return _ok(to_json(await ctx.store.forget(_address(request), actor=ctx.actor)))


# -- suppressions ----------------------------------------------------------------

async def list_suppressions(request: web.Request, ctx: Ctx) -> web.Response:
    return _page(await ctx.store.list_suppressions(
        after=q_cursor(request, numeric=True), limit=q_int(request, "limit", 100, 1, 1000),
        list_id=q_list(request), global_only=q_bool(request, "global")))


async def add_suppression(request: web.Request, ctx: Ctx) -> web.Response:
    body = await json_body(request, required=["address"], optional=["list", "reason", "source"])
    address = text_field(body, "address")
    if address is None:
        raise ApiError(400, "invalid_address", "bad address: expected a string",
                       field="address")
    list_value = text_field(body, "list")
    return _ok(to_json(await ctx.store.suppress(
        address, None if list_value is None else list_id(list_value),
        reason=text_field(body, "reason"),
        source=text_field(body, "source"), actor=ctx.actor)))


async def suppressions_of(request: web.Request, ctx: Ctx) -> web.Response:
    found = await ctx.store.suppressions_of(_address(request))
    return _ok({"items": [to_json(s) for s in found]})


async def delete_suppression(request: web.Request, ctx: Ctx) -> web.Response:
    if not await ctx.store.unsuppress(_address(request), q_list(request), actor=ctx.actor):
        raise ApiError(404, "not_found", "no such suppression for this address")
    return web.Response(status=204)


# -- audit and events ------------------------------------------------------------

async def audit(request: web.Request, ctx: Ctx) -> web.Response:
    return _page(await ctx.store.history(
        None, after=q_cursor(request, numeric=True), limit=q_int(request, "limit", 100, 1, 1000)))


async def opens(request: web.Request, ctx: Ctx) -> web.Response:
    return _page(await ctx.store.opens(
        since=q_time(request, "since"), address=request.query.get("address"),
        list_id=q_list(request), after=q_cursor(request, numeric=True),
        limit=q_int(request, "limit", 100, 1, 1000),
        machine=q_bool(request, "machine") if "machine" in request.query else None))


# -- CSV ---------------------------------------------------------------------------

async def _spool_upload(request: web.Request) -> Path:
    """The request body in a temporary file (streamed; never all in memory)."""
    if request.content_type not in ("text/csv", "application/csv"):
        raise ApiError(415, "unsupported_media_type", "send the CSV file as text/csv")
    fd, path = await temp_file("beacon-proxy-import-", ".csv")
    try:
        with os.fdopen(fd, "wb") as fh:
            size = 0
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise ApiError(413, "too_large", f"the CSV file exceeds {MAX_UPLOAD} bytes")
                await asyncio.to_thread(fh.write, chunk)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path


def _importer(kind: Kind) -> Any:
    async def run(request: web.Request, ctx: Ctx) -> web.Response:
        dry_run = q_bool(request, "dry_run")
        source = request.query.get("source") or None
        imports = request.app[IMPORTS]
        if imports.running >= IMPORTS_AT_ONCE:  # refused before the upload is read
            raise ApiError(503, "too_busy", f"{IMPORTS_AT_ONCE} CSV imports are running; "
                           "try again when one has finished",
                           headers={"Retry-After": str(IMPORT_RETRY_AFTER)})
        tokens = request.app[TOKENS]
        holder = tokens.identify(bearer_token(request.headers.get("Authorization")) or "")

        def still_accepted(rows: int) -> None:  # after every batch, before the commit
            if holder is None or holder not in tokens.credentials():
                raise ApiError(403, "revoked", "the bearer token was removed or replaced "
                               "while the import ran: nothing was imported")

        imports.running += 1
        try:
            path = await _spool_upload(request)
            try:
                done = await import_file(None if dry_run else ctx.store, path, kind,
                                         dry_run=dry_run, actor=ctx.actor, source=source,
                                         progress=still_accepted)
            finally:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        finally:
            imports.running -= 1
        return _ok({"rows": done.rows, "changed": done.changed, "applied": not dry_run})

    run.__name__ = f"import_{kind}"
    return run


def _exporter(kind: Kind) -> Any:
    async def run(request: web.Request, ctx: Ctx) -> web.StreamResponse:
        headers = {**_NO_STORE, "Content-Type": "text/csv; charset=utf-8",
                   "Content-Disposition": f'attachment; filename="{kind}.csv"'}
        if request.method == "HEAD":  # a streamed body after it would be the next answer
            return web.Response(headers=headers)
        items = ctx.store.iter_consent() if kind == "consent" else ctx.store.iter_suppressions()
        first = await anext(items, None)  # a store failure still gets a JSON error
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)

        async def write(text: str) -> None:
            await resp.write(text.encode("utf-8"))

        try:
            await export_csv(kind, prepend(first, items), write)
        except StoreError as exc:  # the status line is gone: cut the response short
            raise ConnectionAbortedError(f"export failed: {exc}") from exc
        await resp.write_eof()
        return resp

    run.__name__ = f"export_{kind}"
    return run


def build_api(store: Store, tokens: ApiTokens) -> web.Application:
    """The ``/api/v1`` sub-application."""
    api = web.Application(middlewares=[error_middleware])
    api[STORE] = store
    api[TOKENS] = tokens
    api[IMPORTS] = _Imports()
    r = api.router
    r.add_get("/openapi.json", _openapi)
    page = ("after", "limit")
    r.add_get("/consent", endpoint(list_consent, query=(*page, "beacons")))
    r.add_get("/consent/{address}", endpoint(get_consent))
    r.add_put("/consent/{address}", endpoint(put_consent))
    r.add_delete("/consent/{address}", endpoint(delete_consent))
    r.add_get("/consent/{address}/history", endpoint(consent_history, query=page))
    r.add_post("/consent/{address}/forget", endpoint(forget))
    r.add_get("/suppressions", endpoint(list_suppressions, query=(*page, "list", "global")))
    r.add_post("/suppressions", endpoint(add_suppression))
    r.add_get("/suppressions/{address}", endpoint(suppressions_of))
    r.add_delete("/suppressions/{address}", endpoint(delete_suppression, query=("list",)))
    r.add_get("/audit", endpoint(audit, query=page))
    r.add_get("/events/opens",
              endpoint(opens, query=(*page, "since", "address", "list", "machine")))
    for kind in ("consent", "suppressions"):
        k: Kind = "consent" if kind == "consent" else "suppressions"
        r.add_post(f"/import/{kind}", endpoint(_importer(k), query=("dry_run", "source")))
        r.add_get(f"/export/{kind}", endpoint(_exporter(k)))
    return api
