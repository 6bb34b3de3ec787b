"""The console's routes under ``/console`` (mounted on the admin listener).

Every page but the login form needs a session (:mod:`.sessions`): a ``GET``
without one is redirected to ``/console/login``, a ``POST`` is refused with
``403`` and changes nothing.  A ``POST`` must also come from a console page:
``Sec-Fetch-Site: same-origin`` when the browser sends it, otherwise an
``Origin`` (when sent) that is this host or ``public_url``'s, and the
session's CSRF token in the form (the login form: a one-time value that
must match its cookie).  Logins are rate-limited per client address
(:data:`LOGIN_RATE`, :data:`LOGIN_BURST`); the session cookie is
``HttpOnly; SameSite=Strict; Path=/console``, and ``Secure`` when the
request came over TLS or ``public_url`` is ``https`` and the console is on
that listener (``Console.secure_cookies``).

Changes are written to the audit trail with source ``console`` and actor
``console:<token name>``.  Pages are Jinja2 templates
(``beacon_proxy/data/console/``), autoescaped, in English or Japanese
(``?lang=``, then ``Accept-Language``), with one inline stylesheet allowed by
its hash (:data:`CONSOLE_CSP`) and no scripts.  Text from outside (a queued
message's header, an address, a CSV source) is shown with its control and
bidirectional formatting characters as ``<U+202E>``-style marks
(:mod:`beacon_proxy.display`): a right-to-left override in a ``Subject`` would
otherwise reorder what the operator reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

from aiohttp import BodyPartReader, web
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from beacon_proxy.clientkey import client_key
from beacon_proxy.consent.address import AddressError, ListIdError, normalize_list_id, parse_address
from beacon_proxy.consent.csvio import Kind, export_csv, prepend
from beacon_proxy.consent.model import Beacons, InvalidValue, StoreError
from beacon_proxy.consent.store import Store
from beacon_proxy.display import visible as shown
from beacon_proxy.headerfacts import header_block
from beacon_proxy.log import event
from beacon_proxy.spool.parts import all_roots, leave_request, owner_of
from beacon_proxy.spool.queue import QueueEntry, Spool, SpoolCorruptError
from beacon_proxy.threadio import temp_file
from beacon_proxy.web.auth import ApiTokens
from beacon_proxy.web.console.jobs import ImportJobs, TooBusy
from beacon_proxy.web.console.sessions import Session, Sessions
from beacon_proxy.web.console.stats import EventTally, bar_chart, dashboard, hbar_chart
from beacon_proxy.web.forms import FormError, read_form
from beacon_proxy.web.guard import TokenBuckets
from beacon_proxy.web.pages import LANGUAGES, choose_language, read_texts

__all__ = ["CONSOLE_CSP", "COOKIE", "LOGIN_BURST", "LOGIN_RATE", "MAX_UPLOAD", "Console",
           "add_console_routes"]

log = logging.getLogger(__name__)
T = TypeVar("T")

COOKIE = "bp_console"
LOGIN_COOKIE = "bp_console_login"  # the login form's one-time CSRF value
PREFIX = "/console"
SOURCE = "console"
LOGIN_RATE = 0.1  # login attempts a second per client address, after ...
LOGIN_BURST = 5  # ... this many at once
MAX_UPLOAD = 1 << 30  # bytes of CSV per import
MAX_FIELD = 1000  # bytes of a text field of the import form
MAX_FORM = 64 * 1024  # bytes of the import form around its file (fields, part headers)
UPLOAD_IDLE = 60.0  # seconds an upload may send nothing before it is given up
QUEUE_SHOWN = 500  # queue entries listed on one page
LOOKUP_SCANNED = 20_000  # newest queued messages an address lookup reads (1.4 s, busy 2 cores)
HEADERS_SHOWN = 65536  # bytes of a queued message's header shown
MAX_QUEUE_ID = 40  # characters of a queue id (the spool's are 16)
ACTIONS = ("consent", "suppress", "resume")


@cache
def _css() -> str:
    path = resources.files("beacon_proxy").joinpath("data/console/console.css")
    return path.read_text("utf-8")


def _css_hash() -> str:
    digest = hashlib.sha256(_css().encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


CONSOLE_CSP = (f"default-src 'none'; style-src {_css_hash()}; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
_PAGE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Vary": "Accept-Language, Cookie",
}


@cache
def texts(lang: str) -> dict[str, str]:
    """The console's strings in one language (``data/console/<lang>.toml``)."""
    return read_texts("console", lang, "console")


def visible(value: Any) -> Any:
    """The console's Jinja ``finalize``: every ``{{ }}`` output passes here before it is
    escaped.  Text gets its hidden and reordering characters as marks
    (:func:`beacon_proxy.display.visible`); markup the console built itself
    (``Markup``), numbers and ``None`` pass as they are."""
    return shown(value) if type(value) is str else value


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("beacon_proxy", "data/console"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      finalize=visible)
    # a value the page must send back as it is (a hidden field's address): escaped, not marked
    env.filters["exact"] = escape
    env.filters["when"] = _when
    return env


def _when(value: datetime | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Console:
    """What the console needs; :func:`add_console_routes` mounts it."""

    store: Store
    tokens: ApiTokens
    spool_root: Path | None = None  # the queue pages need it
    public_url: str = ""
    default_language: str = "en"
    sessions: Sessions | None = None  # a fresh store when not given
    login_limit: TokenBuckets | None = None
    # Count the relay's events for the dashboard while the app runs (stats.EventTally).
    record_stats: bool = True
    # Secure cookies: None = when public_url is https (the console on that listener);
    # a request that came over TLS always gets them.
    secure_cookies: bool | None = None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SessionHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


class _Handlers:
    def __init__(self, cfg: Console) -> None:
        self.cfg = cfg
        self.store = cfg.store
        self.sessions = cfg.sessions or Sessions()
        self.login_limit = cfg.login_limit or TokenBuckets(LOGIN_RATE, LOGIN_BURST)
        self.jobs = ImportJobs(cfg.store)
        self.secure = (urlsplit(cfg.public_url).scheme == "https"
                       if cfg.secure_cookies is None else cfg.secure_cookies)
        self.spool = Spool(cfg.spool_root) if cfg.spool_root is not None else None
        self.tally = EventTally(cfg.store) if cfg.record_stats else None

    # -- plumbing ----------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE), self.cfg.tokens.credentials())

    def _lang(self, request: web.Request, session: Session | None) -> str:
        query = request.query.get("lang")
        if session is not None and query in LANGUAGES:
            session.lang = query
        chosen = query if query in LANGUAGES else session.lang if session else None
        return choose_language(chosen, request.headers.get("Accept-Language"),
                               self.cfg.default_language)

    def render(self, request: web.Request, session: Session | None, template: str,
               status: int = 200, **values: Any) -> web.Response:
        lang = self._lang(request, session)
        switch = [(code, texts(code)["name"],
                   str(request.rel_url.update_query(lang=code))) for code in LANGUAGES]
        nav = [(PREFIX, "nav_lookup"), (PREFIX + "/dashboard", "nav_dashboard"),
               (PREFIX + "/import", "nav_import")]
        if self.spool is not None:
            nav.append((PREFIX + "/queue", "nav_queue"))
        css = Markup(_css())  # noqa: S704  (our own stylesheet, allowed by its CSP hash)
        body = _env().get_template(template).render(
            t=texts(lang), lang=lang, session=session, css=css, switch=switch,
            path=request.path, nav=nav, **values)
        return web.Response(status=status, text=body, content_type="text/html",
                            charset="utf-8", headers={**_PAGE_HEADERS, "Content-Language": lang})

    def refused(self, request: web.Request, session: Session | None, status: int,
                key: str) -> web.Response:
        return self.render(request, session, "refused.html", status=status, message_key=key)

    def _same_origin(self, request: web.Request) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # an old browser or a script: the CSRF token still has to match
        hosts = {request.host.lower(), urlsplit(self.cfg.public_url).netloc.lower()} - {""}
        return urlsplit(origin).netloc.lower() in hosts

    def page(self, handler: SessionHandler) -> Handler:
        """A GET page: without a session, a redirect to the login form."""
        async def run(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs, safe='')}")
            try:
                return await handler(request, session)
            except StoreError as exc:
                log.warning("console: consent store error: %s", exc)
                return self.refused(request, session, 503, "store_unavailable")
        run.__name__ = handler.__name__
        return run

    def action(self, handler: Callable[[web.Request, Session, dict[str, str]],
                                       Awaitable[web.StreamResponse]]) -> Handler:
        """A POSTed form: a session, same origin and the CSRF token, or 403."""
        async def run(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                return self.refused(request, None, 403, "no_session")
            if not self._same_origin(request):
                return self.refused(request, session, 403, "cross_site")
            try:
                fields = _single(await read_form(request))
            except FormError as exc:
                return web.Response(status=exc.status, text=exc.message + "\n",
                                    headers={"Cache-Control": "no-store"})
            if not session.check_csrf(fields.get("csrf", "")):
                return self.refused(request, session, 403, "cross_site")
            try:
                return await handler(request, session, fields)
            except StoreError as exc:
                log.warning("console: consent store error: %s", exc)
                return self.refused(request, session, 503, "store_unavailable")
        run.__name__ = handler.__name__
        return run

    # -- login and logout ---------------------------------------------------------

    def _login_page(self, request: web.Request, status: int = 200,
                    error: str | None = None) -> web.Response:
        nonce = secrets.token_urlsafe(24)
        resp = self.render(request, None, "login.html", status=status, nonce=nonce,
                           error=error, next=_next(request.query.get("next")))
        resp.set_cookie(LOGIN_COOKIE, nonce, path=PREFIX, httponly=True, samesite="Strict",
                        secure=self.secure or request.secure, max_age=3600)
        return resp

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is not None:
            raise web.HTTPSeeOther(_next(request.query.get("next")))
        return self._login_page(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return self.refused(request, None, 403, "cross_site")
        wait = self.login_limit.take(client_key(request.remote))
        if wait > 0:
            resp = self._login_page(request, 429, "too_many")
            resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            return resp
        try:
            fields = _single(await read_form(request))
        except FormError as exc:
            return web.Response(status=exc.status, text=exc.message + "\n",
                                headers={"Cache-Control": "no-store"})
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(
                nonce.encode("utf-8", "surrogatepass"),
                fields.get("login", "").encode("utf-8", "surrogatepass")):
            return self._login_page(request, 403, "expired_form")
        found = self.cfg.tokens.identify(fields.get("token", "").strip())
        if found is None:
            event("console_login", logging.WARNING, result="refused", client=request.remote)
            return self._login_page(request, 403, "bad_token")
        name, credential = found
        lang = request.query.get("lang")
        cookie, _ = self.sessions.create(name, lang if lang in LANGUAGES else None, credential)
        event("console_login", result="ok", user=name, client=request.remote)
        resp = web.HTTPSeeOther(_next(fields.get("next")))
        resp.set_cookie(COOKIE, cookie, path=PREFIX, httponly=True, samesite="Strict",
                        secure=self.secure or request.secure)
        resp.del_cookie(LOGIN_COOKIE, path=PREFIX)
        raise resp

    async def logout(self, request: web.Request, session: Session,
                     fields: dict[str, str]) -> web.StreamResponse:
        self.sessions.drop(request.cookies.get(COOKIE))
        event("console_logout", user=session.name)
        resp = web.HTTPSeeOther(f"{PREFIX}/login")
        resp.del_cookie(COOKIE, path=PREFIX)
        raise resp

    # -- address lookup and changes ---------------------------------------------------

    async def home(self, request: web.Request, session: Session) -> web.StreamResponse:
        return self.render(request, session, "address.html", address="", view=None,
                           error=None, done=None)

    async def address(self, request: web.Request, session: Session) -> web.StreamResponse:
        raw = request.query.get("address", "").strip()
        done = request.query.get("done")
        done = done if done in ACTIONS else None
        if not raw:
            return self.render(request, session, "address.html", address="", view=None,
                               error=None, done=None)
        try:
            view = await self._view(raw)
        except (AddressError, InvalidValue) as exc:
            return self.render(request, session, "address.html", status=400, address=raw,
                               view=None, error=str(exc), done=None)
        return self.render(request, session, "address.html", address=raw, view=view,
                           error=None, done=done)

    async def _view(self, raw: str) -> dict[str, Any]:
        a = parse_address(raw)
        consent = await self.store.get_consent(a)
        beacons = consent.beacons if consent is not None else Beacons.UNKNOWN
        effective = beacons if beacons is not Beacons.UNKNOWN else Beacons(self.store.unknown.value)
        suppressions = await self.store.suppressions_of(a)
        audit = await self.store.recent_history(a, limit=50)
        opens = await self.store.recent_opens(a, limit=50) \
            if effective is Beacons.GRANTED else None
        deliveries, scanned, queued = (await self._deliveries(a.text) if self.spool is not None
                                       else (None, 0, 0))
        return {"address": a.text, "consent": consent, "beacons": beacons.value,
                "effective": effective.value, "suppressions": suppressions, "audit": audit,
                "opens": opens, "deliveries": deliveries, "scanned": scanned, "queued": queued}

    async def _deliveries(self, address: str) -> tuple[list[dict[str, Any]], int, int]:
        """This address's copies in the newest :data:`LOOKUP_SCANNED` queued messages, how
        many were looked at, and how many are queued."""
        entries, total = await self._entries(newest=LOOKUP_SCANNED)
        want = address.lower()
        out = []
        for e in entries:
            for r in e.recipients:
                if r.address.lower() == want:
                    out.append({"queue_id": e.queue_id, "sender": e.envelope.sender,
                                "received": e.envelope.received_at, "state": r.state,
                                "reply": r.reply, "attempts": e.attempts})
        return out, len(entries), total

    async def change(self, request: web.Request, session: Session,
                     fields: dict[str, str]) -> web.StreamResponse:
        raw = fields.get("address", "").strip()
        action = fields.get("action", "")
        reason = fields.get("reason", "").strip()
        actor = f"{SOURCE}:{session.name}"
        error: str | None = None
        try:
            a = parse_address(raw)
            if action not in ACTIONS:
                raise _Refused(400, "bad_action")
            if not reason:
                raise _Refused(400, "reason_required")
            list_raw = fields.get("list", "").strip()
            lid = normalize_list_id(list_raw) if list_raw else None
            if action == "consent":
                beacons = fields.get("beacons", "")
                if beacons not in {b.value for b in Beacons}:
                    raise _Refused(400, "bad_action")
                await self.store.set_consent(a, beacons, source=SOURCE, actor=actor,
                                             reason=reason)
            elif action == "suppress":
                await self.store.suppress(a, lid, reason=reason, source=SOURCE, actor=actor)
            else:
                await self.store.unsuppress(a, lid, actor=actor, reason=reason, source=SOURCE)
        except _Refused as exc:
            error = texts(self._lang(request, session))["refused_" + exc.key]
        except (AddressError, ListIdError, InvalidValue) as exc:
            error = str(exc)
        if error is not None:
            view = None
            with contextlib.suppress(AddressError, InvalidValue):
                view = await self._view(raw)
            return self.render(request, session, "address.html", status=400, address=raw,
                               view=view, error=error, done=None)
        event("console_action", user=session.name, action=action, list_id=lid)
        raise web.HTTPSeeOther(f"{PREFIX}/address?address={quote(a.text, safe='@')}"
                               f"&done={action}")

    # -- CSV import and export ----------------------------------------------------------

    async def import_form(self, request: web.Request, session: Session) -> web.StreamResponse:
        return self.render(request, session, "import.html", job=None, error=None)

    async def import_post(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session is None:
            return self.refused(request, None, 403, "no_session")
        if not self._same_origin(request):
            return self.refused(request, session, 403, "cross_site")
        if (request.content_length or 0) > MAX_UPLOAD + MAX_FORM:  # before a byte is read
            resp = self.refused(request, session, 413, "too_large")
            resp.force_close()  # the body is not read: this connection cannot go on
            return resp
        if self.jobs.busy():  # refused before its file is written
            return self.refused(request, session, 503, "too_busy")
        try:
            with self.jobs.uploading():
                fields, path = await _read_upload(request, session)
        except _Refused as exc:
            return self.refused(request, session, exc.status, exc.key)
        kind = fields.get("kind")
        if kind not in ("consent", "suppressions"):
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return self.refused(request, session, 400, "bad_action")
        k: Kind = "consent" if kind == "consent" else "suppressions"
        try:
            tokens, holder = self.cfg.tokens, (session.name, session.credential)
            job = self.jobs.start(path, k, dry_run=fields.get("dry_run") == "1",
                                  user=session.name, actor=f"{SOURCE}:{session.name}",
                                  source=SOURCE,
                                  allowed=lambda: holder in tokens.credentials())
        except TooBusy:
            return self.refused(request, session, 503, "too_busy")
        raise web.HTTPSeeOther(f"{PREFIX}/import/{job.id}")

    async def import_job(self, request: web.Request, session: Session) -> web.StreamResponse:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            return self.refused(request, session, 404, "not_found")
        return self.render(request, session, "import.html", job=job, error=None)

    async def export(self, request: web.Request, session: Session) -> web.StreamResponse:
        kind = request.match_info["kind"]
        headers = {"Cache-Control": "no-store", "Content-Type": "text/csv; charset=utf-8",
                   "Content-Disposition": f'attachment; filename="{kind}.csv"'}
        if request.method == "HEAD":  # a streamed body after it would be the next answer
            return web.Response(headers=headers)
        items = self.store.iter_consent() if kind == "consent" else self.store.iter_suppressions()
        first = await anext(items, None)
        k: Kind = "consent" if kind == "consent" else "suppressions"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)

        async def write(text: str) -> None:
            await resp.write(text.encode("utf-8"))

        try:
            rows = await export_csv(k, prepend(first, items), write)
        except StoreError as exc:
            raise ConnectionAbortedError(f"export failed: {exc}") from exc
        await resp.write_eof()
        event("console_export", user=session.name, kind=kind, rows=rows)
        return resp

    # -- the dashboard ------------------------------------------------------------------

    async def dashboard(self, request: web.Request, session: Session) -> web.StreamResponse:
        span = request.query.get("span", "24h")
        span = span if span in ("24h", "30d") else "24h"
        t = texts(self._lang(request, session))
        labels, charts, vendors = await dashboard(self.store, span)
        every = 6 if span == "24h" else 7
        drawn = [(c.key, c.total, bar_chart(t["chart_" + c.key], labels,
                                            [(t["series_" + k], v) for k, v in c.series],
                                            label_every=every),
                  [(t["series_" + k], sum(v)) for k, v in c.series]) for c in charts]
        return self.render(request, session, "dashboard.html", span=span, charts=drawn,
                           vendors=vendors, vendor_chart=hbar_chart(t["chart_vendors"], vendors)
                           if vendors else None)

    # -- the queue -------------------------------------------------------------------

    async def _entries(self, *, first: int | None = None,
                       newest: int | None = None) -> tuple[list[QueueEntry], int]:
        """Queued entries of every worker's part of the spool, and how many are queued.

        Only the names of a big queue are all read: ``first`` loads the first that
        many in listing order (state, then oldest first), ``newest`` the newest that
        many (ids are time-ordered), so a page costs the same with a backlog of a
        million messages as with a hundred."""
        if self.spool is None:
            return [], 0
        root = self.spool.root

        def load() -> tuple[list[QueueEntry], int]:
            parts = [Spool(r) for r in all_roots(root)]
            ids = [(spool, i) for spool in parts for i in spool.ids_sync()]
            total = len(ids)
            if newest is not None:
                ids.sort(key=lambda item: item[1][0], reverse=True)
                ids = ids[:newest]
            elif first is not None:
                ids = ids[:first]
            return [e for spool, i in ids for e in spool.load_some_sync([i])], total
        return await asyncio.to_thread(load)

    async def queue(self, request: web.Request, session: Session) -> web.StreamResponse:
        entries, total = await self._entries(first=QUEUE_SHOWN)
        done = request.query.get("done")
        return self.render(request, session, "queue.html", entries=entries,
                           total=total, now=time.time(),
                           done=done if done in ("retry", "delete") and _queue_id(
                               request.query.get("id", "")) else None,
                           done_id=request.query.get("id", ""))

    async def queue_show(self, request: web.Request, session: Session) -> web.StreamResponse:
        queue_id = request.match_info["queue_id"]
        entry, headers = await asyncio.to_thread(self._show, queue_id)
        if entry is None:
            return self.refused(request, session, 404, "not_found")
        return self.render(request, session, "message.html", entry=entry, headers=headers,
                           done=None)

    def _show(self, queue_id: str) -> tuple[QueueEntry | None, str]:
        if self.spool is None or not _queue_id(queue_id):
            return None, ""
        try:
            found = owner_of(self.spool.root, queue_id)
            if found is None:
                return None, ""
            spool, entry = found
            data = spool.read_data_sync(entry)
        except (SpoolCorruptError, ValueError, OSError):
            return None, ""
        return entry, header_block(data, HEADERS_SHOWN).decode("utf-8", "replace")

    async def queue_action(self, request: web.Request, session: Session,
                           fields: dict[str, str]) -> web.StreamResponse:
        queue_id = request.match_info["queue_id"]
        action = _QUEUE_ACTIONS.get(fields.get("action", ""))
        if self.spool is None or not _queue_id(queue_id) or action is None:
            return self.refused(request, session, 400, "bad_action")
        # to the part (worker) that holds it
        if not await asyncio.to_thread(leave_request, self.spool.root, action, queue_id):
            return self.refused(request, session, 404, "not_found")
        event("console_queue", user=session.name, action=action, queue_id=queue_id)
        raise web.HTTPSeeOther(f"{PREFIX}/queue?done={action}&id={queue_id}")


_QUEUE_ACTIONS: dict[str, Literal["retry", "delete"]] = {"retry": "retry", "delete": "delete"}


def _queue_id(value: str) -> bool:
    """Whether ``value`` can be a queue id: ASCII letters and digits, as the spool names
    its files (16 today), nothing a file name could do more with."""
    return 0 < len(value) <= MAX_QUEUE_ID and value.isascii() and value.isalnum()


def _single(fields: list[tuple[str, str]]) -> dict[str, str]:
    """The fields of a console form: each name once (a repeated one is refused)."""
    out: dict[str, str] = {}
    for name, value in fields:
        if name in out:
            raise FormError(400, f"the field {name} is repeated")
        out[name] = value
    return out


def _next(value: str | None) -> str:
    """Where to go after the login: a console path, nothing else (no open redirect)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") \
            and "\\" not in value and ".." not in value and "%2e" not in value.lower() \
            and all(c.isprintable() for c in value):
        path = urlsplit(value)
        if not path.scheme and not path.netloc and (path.path == PREFIX
                                                    or path.path.startswith(PREFIX + "/")):
            return value
    return PREFIX


async def _read_upload(request: web.Request, session: Session) -> tuple[dict[str, str], Path]:
    """The import form: small fields first (the CSRF token before anything else is
    taken), then the file, streamed to a temporary file."""
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise _Refused(400, "bad_upload") from None
    fields: dict[str, str] = {}
    path: Path | None = None
    try:
        while True:
            part = await _idle(reader.next())
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name is None:
                raise _Refused(400, "bad_upload")
            if part.name == "file":
                if not session.check_csrf(fields.get("csrf", "")) or path is not None:
                    raise _Refused(403, "cross_site")
                path = await _spool_part(part)
                continue
            if part.name in fields or len(fields) >= 8:
                raise _Refused(400, "bad_upload")
            raw = await _idle(part.read_chunk(MAX_FIELD + 1))
            more = b"" if len(raw) > MAX_FIELD else await _idle(part.read_chunk(1))
            if len(raw) > MAX_FIELD or more:
                raise _Refused(400, "bad_upload")
            try:
                fields[part.name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(400, "bad_upload") from None
        if not session.check_csrf(fields.get("csrf", "")):
            raise _Refused(403, "cross_site")
        if path is None:
            raise _Refused(400, "no_file")
    except BaseException:
        if path is not None:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return fields, path


async def _idle(step: Awaitable[T]) -> T:
    """One read of an upload, given up after :data:`UPLOAD_IDLE` seconds without data (a
    stalled upload would hold one of the import slots for as long as its client likes)."""
    try:
        async with asyncio.timeout(UPLOAD_IDLE):
            return await step
    except TimeoutError:
        raise _Refused(408, "upload_stalled") from None


async def _spool_part(part: BodyPartReader) -> Path:
    fd, path = await temp_file("beacon-proxy-console-", ".csv")
    try:
        with os.fdopen(fd, "wb") as fh:
            size = 0
            while chunk := await _idle(part.read_chunk(1 << 16)):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise _Refused(413, "too_large")
                await asyncio.to_thread(fh.write, chunk)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path


CONSOLE: web.AppKey[_Handlers] = web.AppKey("console", _Handlers)


def add_console_routes(app: web.Application, console: Console) -> None:
    """Mount ``/console`` on ``app``.  While the app runs, the relay's events are counted
    for the dashboard (``record_stats``); running imports are cancelled when it stops."""
    h = _Handlers(console)
    app[CONSOLE] = h

    async def run(app: web.Application) -> AsyncIterator[None]:
        if h.tally is not None:
            await h.tally.start()
        yield
        if h.tally is not None:
            await h.tally.stop()
        await h.jobs.stop()
        if h.spool is not None:
            h.spool.close()

    app.cleanup_ctx.append(run)
    r = app.router
    r.add_get(PREFIX, h.page(h.home))
    r.add_get(PREFIX + "/login", h.login_form)
    r.add_post(PREFIX + "/login", h.login)
    r.add_post(PREFIX + "/logout", h.action(h.logout))
    r.add_get(PREFIX + "/address", h.page(h.address))
    r.add_post(PREFIX + "/address", h.action(h.change))
    r.add_get(PREFIX + "/dashboard", h.page(h.dashboard))
    r.add_get(PREFIX + "/import", h.page(h.import_form))
    r.add_post(PREFIX + "/import", h.import_post)
    r.add_get(PREFIX + "/import/{job}", h.page(h.import_job))
    r.add_get(PREFIX + "/export/{kind:consent|suppressions}", h.page(h.export))
    if console.spool_root is not None:
        r.add_get(PREFIX + "/queue", h.page(h.queue))
        r.add_get(PREFIX + "/queue/{queue_id}", h.page(h.queue_show))
        r.add_post(PREFIX + "/queue/{queue_id}", h.action(h.queue_action))
