"""The recipient-facing endpoints: the open pixel, the preference page, one-click.

``GET /o/<token>``
    Always the same 43-byte transparent GIF with the same headers, whatever
    the token, so the pixel tells nobody anything.  A genuine open token
    (:attr:`Purpose.OPEN`) that passes the per-token rate limit is handed to
    a background queue (:mod:`beacon_proxy.web.opens`) and recorded only if
    the recipient consents at that moment; image proxies and scanners are
    marked ``machine`` (:mod:`beacon_proxy.web.machines`, by the client's
    address: the TCP peer, or what a ``[web] trusted_proxies`` proxy forwarded
    for, :mod:`beacon_proxy.web.guard`).  ``HEAD`` records nothing.
``GET /u/<token>``
    The preference page (:mod:`beacon_proxy.web.pages`).  It never changes
    anything: link scanners and security gateways fetch every link.
``POST /u/<token>``
    An RFC 8058 one-click (``List-Unsubscribe=One-Click``, urlencoded or
    multipart): suspends delivery of the token's list (all mail for a token
    without a list) and answers ``200`` with a short text, never a redirect.
    Or a page action (``action=stop-tracking|allow-tracking|suspend-list|
    suspend-all|resume``): done, then the page shows the new state.  Both are
    idempotent: what is already so is not written again, so the audit trail
    gets one entry per real change, with source ``web``.

Cross-site forms.  A page action must come from the page itself: it carries
the page's form token (``form``, :meth:`Tokens.form_token` of the link's
token), and a browser that says where the form was (``Sec-Fetch-Site``) must
say ``same-origin``; without that header an ``Origin`` other than ``null``
must be this host or ``public_url``'s (the page is ``no-referrer``, so
browsers send ``Origin: null``).  Otherwise ``403`` and nothing changes.  A
one-click is exempt: RFC 8058 has mailbox providers post it from anywhere,
with no form token, and it can only stop mail, never turn tracking back on.

Bad tokens.  Forged, truncated, retired-key, expired or other-purpose tokens
all fail in :meth:`Tokens.verify` with one error and change nothing.  ``/u/``
answers them with one ``404`` page (the one-click POST with one short
``404`` text), the same whatever the reason.  A one-click POST does not
pretend success for a bad token: a ``GET`` of the same URL shows whether it
is valid anyway, so a fake ``200`` would hide nothing from a prober and would
hide a real failure from the mailbox provider and the operator.  What is
never revealed is *why* a token is bad, or any recipient data.  The body is
checked before the token, so a malformed body gets the same ``400``/``413``/
``415`` for any token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from beacon_proxy.consent.address import ListIdError, normalize_list_id
from beacon_proxy.consent.model import Beacons, StoreError, utcnow
from beacon_proxy.consent.store import Store
from beacon_proxy.log import event
from beacon_proxy.metrics import OPENS, RECIPIENT_ACTIONS
from beacon_proxy.tokens import Claims, Purpose, TokenError, Tokens
from beacon_proxy.web.forms import FormError, read_form
from beacon_proxy.web.machines import classify
from beacon_proxy.web.opens import Open, OpenQueue, RateLimit
from beacon_proxy.web.pages import (
    ACTIONS,
    FORM_FIELD,
    LANGUAGES,
    PAGE_HEADERS,
    View,
    choose_language,
    invalid_page,
    preferences_page,
)

__all__ = ["OPEN_QUEUE", "PIXEL", "PIXEL_HEADERS", "RecipientSide", "add_recipient_routes"]

log = logging.getLogger(__name__)

# A 1x1 GIF89a whose one pixel is transparent (colour 0 of a 2-colour table).
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00"  # header, 1x1 screen, global colour table
         b"\x00\x00\x00\xff\xff\xff"  # the two colours
         b"!\xf9\x04\x01\x00\x00\x00\x00"  # graphic control: colour 0 is transparent
         b",\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image descriptor, 1x1
         b"\x02\x02D\x01\x00"  # LZW: clear, 0, end of information
         b";")
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, private",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ONE_CLICK = ("List-Unsubscribe", "One-Click")
SOURCE = "web"
PAGE_ACTOR = "web:recipient"
ONE_CLICK_ACTOR = "web:one-click"
_TEXT_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "no-referrer"}
# The open queue of an app with the recipient routes (tests drain it).
OPEN_QUEUE: web.AppKey[OpenQueue] = web.AppKey("open_queue")


@dataclass(frozen=True)
class RecipientSide:
    """What the recipient endpoints need; :func:`add_recipient_routes` mounts them."""

    tokens: Tokens
    store: Store
    default_language: str = "en"  # "en" | "ja"
    # Called after a list (or all mail) was newly suspended through a token (one-click or
    # the page); the relay forwards the sender's one-click URL (claims.forward).
    on_suspended: Callable[[Claims], Awaitable[None]] | None = None
    # Called after an open was recorded for a consenting recipient (forward_opens).
    on_open: Callable[[Claims], None] | None = None
    rate_limit: RateLimit = field(default_factory=RateLimit)
    max_pending_opens: int = 10_000
    # Token lifetimes in seconds (None: no limit).  Unsubscribe links do not expire by
    # default: someone who finds an old message must still be able to leave the list.
    open_max_age: float | None = None
    unsubscribe_max_age: float | None = None
    # [web] public_url: an Origin the page's forms may come from besides the Host header.
    public_url: str = ""

    def __post_init__(self) -> None:
        if self.default_language not in LANGUAGES:
            raise ValueError(f"default_language must be one of {', '.join(LANGUAGES)}")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=_TEXT_HEADERS)


def _html(status: int, body: str, lang: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={**PAGE_HEADERS, "Content-Language": lang})


def _list_id(claims: Claims) -> str | None:
    """The token's list as the store keys it; a list id it refuses means all mail."""
    if not claims.list_id:
        return None
    try:
        return normalize_list_id(claims.list_id)
    except ListIdError:
        return None


class _Handlers:
    def __init__(self, side: RecipientSide, opens: OpenQueue) -> None:
        self.side = side
        self.opens = opens
        # Changes are rare; one at a time in this process, so that two simultaneous
        # one-clicks (a mailbox provider's retry) make one audit entry and one forward.
        self._changing = asyncio.Lock()

    # -- the open pixel ------------------------------------------------------------

    async def pixel(self, request: web.Request) -> web.Response:
        if request.method == "HEAD":
            OPENS.labels("head").inc()
        else:
            self._open(request, request.match_info["token"])
        return web.Response(body=PIXEL, headers=PIXEL_HEADERS)

    def _open(self, request: web.Request, token: str) -> None:
        try:
            claims = self.side.tokens.verify(token, Purpose.OPEN,
                                             max_age=self.side.open_max_age)
        except TokenError:
            OPENS.labels("invalid_token").inc()
            return
        key = hashlib.blake2b(token.encode("ascii"), digest_size=16).digest()
        if not self.side.rate_limit.allow(key):
            OPENS.labels("rate_limited").inc()
            return
        ua_class, machine = classify(request.headers.get("User-Agent"), request.remote)
        self.opens.offer(Open(claims, ua_class, machine, utcnow()))

    # -- the preference page ---------------------------------------------------------

    def _lang(self, request: web.Request) -> str:
        return choose_language(request.query.get("lang"),
                               request.headers.get("Accept-Language"),
                               self.side.default_language)

    def _claims(self, request: web.Request) -> Claims | None:
        try:
            return self.side.tokens.verify(request.match_info["token"], Purpose.UNSUBSCRIBE,
                                           max_age=self.side.unsubscribe_max_age)
        except TokenError:
            return None

    async def _view(self, request: web.Request, claims: Claims) -> View:
        store = self.side.store
        consent = await store.get_consent(claims.recipient)
        beacons = consent.beacons if consent is not None else Beacons.UNKNOWN
        if beacons is Beacons.UNKNOWN:
            beacons = Beacons(store.unknown.value)
        lid = _list_id(claims)
        lists = {s.list_id for s in await store.suppressions_of(claims.recipient)}
        return View(claims.recipient, lid, beacons is Beacons.GRANTED,
                    lid is not None and lid in lists, None in lists,
                    self.side.tokens.form_token(request.match_info["token"]))

    async def page(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        claims = self._claims(request)
        if claims is None:
            return _html(404, invalid_page(lang), lang)
        try:
            view = await self._view(request, claims)
        except StoreError:
            return _unavailable()
        except ValueError:  # an address the store refuses: nothing to show or change
            return _html(404, invalid_page(lang), lang)
        return _html(200, preferences_page(lang, view), lang)

    # -- changes ------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        try:
            fields = await read_form(request)
            action = _action(fields)
        except FormError as exc:
            RECIPIENT_ACTIONS.labels("unknown", "bad_request").inc()
            return _text(exc.status, exc.message)
        claims = self._claims(request)
        if claims is None:
            RECIPIENT_ACTIONS.labels(action, "invalid_token").inc()
            if action == "one-click":
                return _text(404, "This link is not valid or has expired.")
            return _html(404, invalid_page(lang), lang)
        if action != "one-click" and not self._from_the_page(request, fields):
            RECIPIENT_ACTIONS.labels(action, "cross_site").inc()
            return _text(403, "This form can only be sent from its own page: please open "
                              "the link in the message again.")
        try:
            async with self._changing:
                changed = await self._apply(action, claims)
            view = None if action == "one-click" else await self._view(request, claims)
        except StoreError:
            return _unavailable()
        except ValueError:
            RECIPIENT_ACTIONS.labels(action, "invalid_token").inc()
            return _html(404, invalid_page(lang), lang)
        RECIPIENT_ACTIONS.labels(action, "changed" if changed else "unchanged").inc()
        event("recipient_action", action=action, changed=changed, list_id=claims.list_id,
              queue_id=claims.queue_id)
        if view is None:
            what = "this list" if _list_id(claims) else "all mail from this sender"
            return _text(200, f"Unsubscribed: delivery of {what} is suspended.")
        return _html(200, preferences_page(lang, view, (action, changed)), lang)

    def _from_the_page(self, request: web.Request, fields: list[tuple[str, str]]) -> bool:
        """A page action's form token and the browser's word on where it was sent from."""
        forms = [v for k, v in fields if k == FORM_FIELD]
        if len(forms) != 1 or not self.side.tokens.check_form_token(
                request.match_info["token"], forms[0]):
            return False
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site in ("same-origin", "none")  # none: the user's own navigation
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            return True
        hosts = {request.host.lower(), urlsplit(self.side.public_url).netloc.lower()}
        return urlsplit(origin).netloc.lower() in hosts - {""}

    async def _apply(self, action: str, claims: Claims) -> bool:
        if action == "one-click":
            return await self._suspend(claims, _list_id(claims), "one-click", ONE_CLICK_ACTOR)
        if action in ("stop-tracking", "allow-tracking"):
            want = Beacons.REFUSED if action == "stop-tracking" else Beacons.GRANTED
            current = await self.side.store.get_consent(claims.recipient)
            if current is not None and current.beacons is want:
                return False
            await self.side.store.set_consent(claims.recipient, want, source=SOURCE,
                                              actor=PAGE_ACTOR)
            return True
        if action in ("suspend-list", "suspend-all"):
            lid = _list_id(claims) if action == "suspend-list" else None
            return await self._suspend(claims, lid, "preference page", PAGE_ACTOR)
        # resume: this list's suspension and the global one
        lids = {None, _list_id(claims)}
        removed = [await self.side.store.unsuppress(claims.recipient, lid, actor=PAGE_ACTOR)
                   for lid in lids]
        return any(removed)

    async def _suspend(self, claims: Claims, list_id: str | None, reason: str,
                       actor: str) -> bool:
        store = self.side.store
        if any(s.list_id == list_id for s in await store.suppressions_of(claims.recipient)):
            return False  # already so: no second audit entry, no second forward
        await store.suppress(claims.recipient, list_id, reason=reason, source=SOURCE,
                             actor=actor)
        if self.side.on_suspended is not None:
            try:
                await self.side.on_suspended(claims)
            except Exception:  # the suspension holds; forwarding is the callback's concern
                log.exception("on_suspended callback failed")
        return True


def _action(fields: list[tuple[str, str]]) -> str:
    """``one-click`` or a page action from a form's fields; :class:`FormError` if neither."""
    actions = [v for k, v in fields if k == "action"]
    one_click = [v for k, v in fields if k == ONE_CLICK[0]]
    if actions and one_click:
        raise FormError(400, "send either List-Unsubscribe=One-Click or an action, not both")
    if one_click:
        if one_click != [ONE_CLICK[1]]:
            raise FormError(400, "expected exactly one List-Unsubscribe=One-Click")
        return "one-click"
    if len(actions) != 1 or actions[0] not in ACTIONS:
        raise FormError(400, "expected List-Unsubscribe=One-Click or one action of: "
                        + ", ".join(ACTIONS))
    return actions[0]


def _unavailable() -> web.Response:
    resp = _text(503, "Temporarily unavailable, please try again later.")
    resp.headers["Retry-After"] = "60"
    return resp


def add_recipient_routes(app: web.Application, side: RecipientSide) -> None:
    """Mount ``/o/`` and ``/u/`` on ``app``; the open queue runs while the app does.

    The queue starts with the application and, when it stops (``WebServer.stop``,
    after the listener closed), records what is still queued before it ends.
    """
    opens = OpenQueue(side.store, on_open=side.on_open, max_pending=side.max_pending_opens)
    handlers = _Handlers(side, opens)
    app[OPEN_QUEUE] = opens

    async def run_queue(app: web.Application) -> AsyncIterator[None]:
        await opens.start()
        yield
        await opens.stop()

    app.cleanup_ctx.append(run_queue)
    app.router.add_get("/o/{token}", handlers.pixel)
    app.router.add_get("/u/{token}", handlers.page)
    app.router.add_post("/u/{token}", handlers.post)
