"""Plumbing of the admin API: authentication, request parsing, JSON errors.

Every handler is wrapped by :func:`endpoint`, which

* answers ``401`` without a bearer token and ``403`` with a wrong one;
* turns every failure into a JSON error saying what is wrong::

      {"error": "unknown_field", "message": "unknown field(s): colour", "field": "colour"}

  (``400`` malformed JSON, unknown or missing fields, bad addresses and
  values, a bad CSV row with its ``line``; ``404``; ``415``; ``503`` when the
  database cannot be reached; ``500`` with the details only in the log);
* refuses, before any handler runs, text no store can keep -- a NUL
  character (``?after=%00``) or a lone surrogate (JSON ``"\\ud800"``) in a
  query parameter, a path segment or any string of a JSON body (``400
  invalid_value`` naming the field), so SQLite and PostgreSQL answer alike;
* hands the handler the store and the caller's name for the audit trail
  (``api:<token name>``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from beacon_proxy.consent.address import MAX_LIST_ID, AddressError, ListIdError
from beacon_proxy.consent.csvio import CsvError
from beacon_proxy.consent.model import (
    InvalidValue,
    StoreError,
    StoreUnavailable,
    parse_time,
    storable_problem,
)
from beacon_proxy.consent.store import Store
from beacon_proxy.web.auth import ApiTokens, bearer_token

__all__ = [
    "STORE",
    "TOKENS",
    "ApiError",
    "Ctx",
    "endpoint",
    "error_middleware",
    "error_response",
    "json_body",
    "list_id",
    "q_bool",
    "q_cursor",
    "q_int",
    "q_list",
    "q_time",
    "text_field",
]

log = logging.getLogger(__name__)
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")

STORE: web.AppKey[Store] = web.AppKey("consent_store", Store)
TOKENS: web.AppKey[ApiTokens] = web.AppKey("api_tokens", ApiTokens)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Ctx:
    store: Store
    actor: str


Handler = Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, *,
                   headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    headers = {**(headers or {}), "Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="beacon-proxy"'
    return web.json_response({"error": code, "message": message, **extra}, status=status,
                             headers=headers)


def _failure(exc: Exception) -> web.Response:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers,
                              **exc.extra)
    if isinstance(exc, AddressError):
        return error_response(400, "invalid_address", f"bad address: {exc}", field="address")
    if isinstance(exc, ListIdError):
        return error_response(400, "invalid_value", f"list: {exc}", field="list")
    if isinstance(exc, InvalidValue):
        return error_response(400, "invalid_value", str(exc), field=exc.field)
    if isinstance(exc, CsvError):
        return error_response(400, "invalid_csv", str(exc), line=exc.line)
    if isinstance(exc, StoreUnavailable):
        log.warning("consent store unavailable: %s", exc)
        return error_response(503, "store_unavailable", "the consent store cannot be reached")
    log.error("consent store error: %s", exc)
    return error_response(500, "store_error", "the consent store failed (see the log)")


def endpoint(handler: Handler, *, query: Iterable[str] = ()
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authenticate, refuse unknown query parameters, run, and answer errors as JSON."""
    allowed = frozenset(query)

    async def run(request: web.Request) -> web.StreamResponse:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            return error_response(401, "unauthorized",
                                  "send an admin API token as Authorization: Bearer <token>")
        name = request.app[TOKENS].check(token)
        if name is None:
            return error_response(403, "forbidden", "the bearer token is not valid")
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            return error_response(
                400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}"
                f" (allowed: {', '.join(sorted(allowed)) or 'none'})", field=unknown[0])
        try:
            _check_storable([*request.match_info.items(), *request.query.items()])
            return await handler(request, Ctx(request.app[STORE], f"api:{name}"))
        except (ApiError, AddressError, ListIdError, InvalidValue, CsvError, StoreError) as exc:
            return _failure(exc)

    run.__name__ = handler.__name__
    setattr(run, "query_parameters", allowed)  # noqa: B010  (read by the contract test)
    return run


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no such route, method not allowed, too large) as JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        resp = error_response(exc.status, code, exc.reason or "error")
        if "Allow" in exc.headers:  # 405 names the methods that are allowed
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("admin API error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error (see the log)")


async def json_body(request: web.Request, *, required: Iterable[str] = (),
                    optional: Iterable[str] = ()) -> dict[str, Any]:
    """The request's JSON object, with only the given fields (400 otherwise)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"malformed JSON: {exc.msg} at line {exc.lineno} "
                                              f"column {exc.colno}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    req, allowed = set(required), set(required) | set(optional)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(unknown)} "
                       f"(allowed: {', '.join(sorted(allowed))})", field=unknown[0])
    _check_storable(body.items())
    missing = sorted(req - set(body))
    if missing:
        raise ApiError(400, "missing_field", f"missing field(s): {', '.join(missing)}",
                       field=missing[0])
    return body


def _check_storable(fields: Iterable[tuple[str, Any]]) -> None:
    """``400`` for the first string (in a JSON value: at any depth) no store can keep."""
    for name, value in fields:
        for text in _strings(value):
            problem = storable_problem(text)
            if problem is not None:
                raise ApiError(400, "invalid_address" if name == "address" else "invalid_value",
                               f"{name}: {problem}", field=name)


def _strings(value: Any) -> Iterator[str]:
    """The strings in a JSON value, keys included, depth first without recursion."""
    stack = [value]
    while stack:  # bounded: every item of the (size-limited) body is visited once
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())


def text_field(body: dict[str, Any], name: str) -> str | None:
    """A string-or-null field (absent -> None)."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, "invalid_value", f"{name}: expected a string or null", field=name)
    return value


def q_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ApiError(400, "invalid_value", f"{name}: expected an integer from {lo} to {hi}",
                       field=name)
    return int(raw)


def q_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise ApiError(400, "invalid_value", f"{name}: expected true or false", field=name)
    return raw == "true"


def q_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except InvalidValue:
        raise ApiError(400, "invalid_value", f"{name}: not an ISO 8601 time: {raw!r}",
                       field=name) from None


def list_id(value: str, name: str = "list") -> str:
    """A bare list id (``news.example.org``), exactly; lower-cased."""
    if not _LIST_ID.match(value) or len(value) > MAX_LIST_ID:
        raise ApiError(400, "invalid_value", f"{name}: not a list id such as news.example.org: "
                       f"{value!r}", field=name)
    return value.lower()


def q_list(request: web.Request, name: str = "list") -> str | None:
    raw = request.query.get(name)
    return None if raw is None else list_id(raw, name)


def q_cursor(request: web.Request, *, numeric: bool) -> str | None:
    """``after``: the ``next`` of a previous page (numeric for lists ordered by id)."""
    raw = request.query.get("after")
    if raw is not None and numeric and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(400, "invalid_value", "after: not a cursor from a previous page",
                       field="after")
    return raw
