"""The recipient endpoints over HTTP, on a real SQLite store: pixel, page, one-click."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.consent.model import AuditEntry, OpenEvent
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity
from beacon_proxy.web.guard import ClientAddress, Guard
from beacon_proxy.web.opens import RateLimit
from beacon_proxy.web.recipient import OPEN_QUEUE, PIXEL, RecipientSide
from beacon_proxy.web.server import build_app

Client = TestClient[Any, Any]
SECRET, PREVIOUS, RETIRED = ("current-secret-0123456789", "previous-secret-0123456789",
                             "retired-secret-0123456789")
ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.org"
LIST = "news.example.org"
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
INVALID = "This link is not valid or has expired"


def _open(recipient: str = ANN, tokens: Tokens | None = None, **kw: Any) -> str:
    claims = Claims(Purpose.OPEN, recipient, LIST, "Q1",
                    url_identity("https://tracker.example/p.gif"), **kw)
    return (tokens or Tokens([SECRET])).mint(claims)


def _unsub(recipient: str = ANN, list_id: str | None = LIST, tokens: Tokens | None = None,
           **kw: Any) -> str:
    return (tokens or Tokens([SECRET])).mint(
        Claims(Purpose.UNSUBSCRIBE, recipient, list_id, "Q1", **kw))


def _bad_variants(valid: str, other_purpose: str, make: Callable[..., str]) -> dict[str, str]:
    flipped = valid[:-3] + ("A" if valid[-3] != "A" else "B") + valid[-2:]
    return {
        "forged": flipped,
        "truncated": valid[:-5],
        "cross-purpose": other_purpose,
        "retired": make(tokens=Tokens([RETIRED])),
        "expired": make(issued_at=1_000_000),
        "garbage": "not-a-token",
        "empty-ish": "A",
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    async with s:
        await s.set_consent(ANN, "granted", source="test")
        await s.set_consent(BOB, "refused", source="test")
        yield s


class Env:
    def __init__(self, client: Client, app: web.Application, side: RecipientSide) -> None:
        self.client = client
        self.app = app
        self.side = side
        self.suspended: list[Claims] = []
        self.opened: list[Claims] = []

    async def drain(self) -> None:
        await asyncio.wait_for(self.app[OPEN_QUEUE].drain(), 30)


@asynccontextmanager
async def _env(store: Store, guard: Guard | None = None, **kw: Any) -> AsyncIterator[Env]:
    calls: dict[str, list[Claims]] = {"suspended": [], "opened": []}

    async def on_suspended(claims: Claims) -> None:
        calls["suspended"].append(claims)

    side = RecipientSide(Tokens([SECRET, PREVIOUS]), store, on_suspended=on_suspended,
                         on_open=calls["opened"].append, open_max_age=86400 * 365,
                         unsubscribe_max_age=86400 * 365, **kw)
    app = build_app(lambda: {"status": "ok"}, recipient=side, guard=guard)
    async with TestClient(TestServer(app)) as client:
        env = Env(client, app, side)
        env.suspended, env.opened = calls["suspended"], calls["opened"]
        yield env


@pytest.fixture
async def env(store: Store) -> AsyncIterator[Env]:
    async with _env(store) as e:
        yield e


async def _opens(store: Store) -> list[OpenEvent]:
    return list((await store.opens(limit=1000)).items)


async def _history(store: Store) -> list[AuditEntry]:
    return list((await store.history(limit=1000)).items)


async def _snapshot(store: Store) -> tuple[object, ...]:
    return (await _history(store), [await store.get_consent(a) for a in (ANN, BOB, CAT)],
            [await store.suppressions_of(a) for a in (ANN, BOB, CAT)])


def _pixel_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k not in ("Date", "Server")}


# -- the open pixel ------------------------------------------------------------------------


async def test_pixel_is_the_same_gif_for_every_token(env: Env, store: Store) -> None:
    valid = _open()
    tokens = {"valid": valid, **_bad_variants(valid, _unsub(), _open)}
    seen = []
    for name, token in tokens.items():
        resp = await env.client.get(f"/o/{token}")
        assert resp.status == 200, name
        assert await resp.read() == PIXEL, name
        seen.append(_pixel_headers(resp))
    assert len(PIXEL) == 43 and PIXEL.startswith(b"GIF89a")
    assert all(h == seen[0] for h in seen)
    assert seen[0]["Content-Type"] == "image/gif"
    assert seen[0]["Cache-Control"] == "no-store, private"
    assert seen[0]["Content-Length"] == "43"
    assert "Set-Cookie" not in seen[0]
    await env.drain()
    opens = await _opens(store)
    assert [(o.address, o.list_id, o.message_id) for o in opens] == [(ANN, LIST, "Q1")]
    assert [c.recipient for c in env.opened] == [ANN]


async def test_a_previous_key_still_records(env: Env, store: Store) -> None:
    await env.client.get(f"/o/{_open(tokens=Tokens([PREVIOUS]))}")
    await env.drain()
    assert len(await _opens(store)) == 1


async def test_open_recorded_only_when_the_recipient_consents_now(env: Env,
                                                                  store: Store) -> None:
    for who in (ANN, BOB, CAT):  # granted, refused, unknown (default refused)
        assert (await env.client.get(f"/o/{_open(who)}")).status == 200
    await env.drain()
    assert [o.address for o in await _opens(store)] == [ANN]
    await store.set_consent(ANN, "refused", source="test")
    await env.client.get(f"/o/{_open(ANN, issued_at=2_000_000_000)}")
    await env.drain()
    assert len(await _opens(store)) == 1
    assert len(env.opened) == 1


async def test_unknown_recipient_counts_when_the_default_is_granted(tmp_path: Path) -> None:
    granted = open_store(f"sqlite:///{tmp_path / 'g.db'}", unknown=Policy.GRANTED)
    async with granted, _env(granted) as e:
        await granted.set_consent(BOB, "refused")
        await e.client.get(f"/o/{_open(CAT)}")
        await e.client.get(f"/o/{_open(BOB)}")
        await e.drain()
        assert [o.address for o in await _opens(granted)] == [CAT]


@pytest.mark.parametrize(("ua", "ua_class", "machine"), [
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
     "GoogleImageProxy)", "gmail-proxy", True),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
     "yahoo-proxy", True),
    ("Mozilla/5.0", "apple-mpp", True),
    ("Mozilla/5.0 (compatible; Barracuda Link Protection)", "scanner", True),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Mobile/15E148", "browser", False),
])
async def test_machine_opens_are_marked(env: Env, store: Store, ua: str, ua_class: str,
                                        machine: bool) -> None:
    # X-Forwarded-For is not trusted: the peer (127.0.0.1) is what counts, not 17.x (Apple).
    await env.client.get(f"/o/{_open()}", headers={"User-Agent": ua,
                                                   "X-Forwarded-For": "17.1.2.3"})
    await env.drain()
    [o] = await _opens(store)
    assert (o.ua_class, o.machine) == (ua_class, machine)


async def test_behind_a_trusted_proxy_the_forwarded_client_is_classified(store: Store) -> None:
    guard = Guard(client=ClientAddress((ipaddress.ip_network("127.0.0.0/8"),)))
    async with _env(store, guard=guard) as e:
        await e.client.get(f"/o/{_open()}", headers={"User-Agent": "Mozilla/5.0 (iPhone)",
                                                     "X-Forwarded-For": "17.1.2.3"})
        await e.drain()
    [o] = await _opens(store)
    assert (o.ua_class, o.machine) == ("apple-mpp", True)


async def test_repeated_hits_of_one_token_are_rate_limited(store: Store) -> None:
    now = [1000.0]
    limit = RateLimit(min_interval=30, per_window=3, window=3600, clock=lambda: now[0])
    async with _env(store, rate_limit=limit) as e:
        token = _open()
        for _ in range(5):
            assert await (await e.client.get(f"/o/{token}")).read() == PIXEL
        await e.client.get(f"/o/{_open(issued_at=2_000_000_000)}")  # another token
        await e.drain()
        assert len(await _opens(store)) == 2
        for _ in range(5):  # 3 per hour at most, 30 s apart
            now[0] += 31
            await e.client.get(f"/o/{token}")
        await e.drain()
        assert len(await _opens(store)) == 4


async def test_head_returns_the_pixel_and_records_nothing(env: Env, store: Store) -> None:
    resp = await env.client.head(f"/o/{_open()}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/gif"
    await env.drain()
    assert await _opens(store) == []


async def test_queued_opens_are_recorded_when_the_server_stops(store: Store) -> None:
    async with _env(store) as e:
        for i in range(20):
            await e.client.get(f"/o/{_open(issued_at=2_000_000_000 + i)}")
    assert len(await _opens(store)) == 20  # the app's cleanup flushed the queue


# -- the preference page ----------------------------------------------------------------------


async def test_page_get_changes_nothing(env: Env, store: Store) -> None:
    await store.suppress(BOB, LIST, source="test")
    before = await _snapshot(store)
    for who in (ANN, BOB, CAT):
        for _ in range(2):
            resp = await env.client.get(f"/u/{_unsub(who)}")
            assert resp.status == 200
            await env.client.head(f"/u/{_unsub(who)}")
    assert await _snapshot(store) == before
    assert env.suspended == []


async def test_page_shows_state_and_safe_headers(env: Env, store: Store) -> None:
    resp = await env.client.get(f"/u/{_unsub()}")
    body = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert re.fullmatch("default-src 'none'; style-src 'sha256-[A-Za-z0-9+/]{43}='; "
                        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'", csp), csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Set-Cookie" not in resp.headers
    assert "a***@example.org" in body and ANN not in body
    assert LIST in body
    assert "<script" not in body.lower() and "http" not in body and "src=" not in body
    assert 'lang="en"' in body and 'name="viewport"' in body
    assert 'value="stop-tracking"' in body and 'value="suspend-list"' in body
    assert 'value="allow-tracking"' not in body and 'value="resume"' not in body


async def test_head_of_the_page_has_no_body(env: Env) -> None:
    resp = await env.client.head(f"/u/{_unsub()}")
    assert resp.status == 200
    assert await resp.read() == b""


async def test_bad_tokens_get_one_404_page_and_change_nothing(env: Env, store: Store) -> None:
    before = await _snapshot(store)
    bodies = set()
    for name, token in _bad_variants(_unsub(), _open(), _unsub).items():
        resp = await env.client.get(f"/u/{token}")
        assert resp.status == 404, name
        bodies.add(await resp.text())
        resp = await env.client.post(f"/u/{token}", data=ONE_CLICK, headers=URLENCODED)
        assert (resp.status, await resp.text()) == (404, INVALID + ".\n"), name
        resp = await env.client.post(f"/u/{token}", data=b"action=suspend-all",
                                     headers=URLENCODED)
        assert resp.status == 404, name
        bodies.add(await resp.text())
    assert len(bodies) == 1
    assert INVALID in bodies.pop()
    for path in ("/u/..%2F", "/u/..%2F..%2Fetc%2Fpasswd", "/u/%00", "/u/" + "A" * 5000):
        resp = await env.client.get(path)
        assert resp.status in (404, 414), path
        resp = await env.client.post(path, data=ONE_CLICK, headers=URLENCODED)
        assert resp.status in (404, 414), path
    assert await _snapshot(store) == before


@pytest.mark.parametrize(("query", "accept", "default", "expected"), [
    ("?lang=ja", "en", "en", "ja"),
    ("?lang=xx", "ja-JP,ja;q=0.9,en;q=0.5", "en", "ja"),
    ("", "en-US,en;q=0.9,ja;q=0.8", "ja", "en"),
    ("", "fr, de;q=0.5", "ja", "ja"),
    ("", "en;q=0.2, ja;q=0.7", "en", "ja"),
    ("", "", "ja", "ja"),
])
async def test_language_choice(store: Store, query: str, accept: str, default: str,
                               expected: str) -> None:
    async with _env(store, default_language=default) as e:
        resp = await e.client.get(f"/u/{_unsub()}{query}",
                                  headers={"Accept-Language": accept} if accept else {})
        body = await resp.text()
        assert f'<html lang="{expected}">' in body
        assert resp.headers["Content-Language"] == expected
        assert f'action="?lang={expected}"' in body
        assert 'href="?lang=en"' in body and 'href="?lang=ja"' in body
        if expected == "ja":
            assert "開封トラッキングを停止する" in body


# -- changes -------------------------------------------------------------------------------


async def test_one_click_urlencoded_is_idempotent_and_never_redirects(env: Env,
                                                                     store: Store) -> None:
    token = _unsub()
    for _ in range(2):
        resp = await env.client.post(f"/u/{token}", data=ONE_CLICK, headers=URLENCODED,
                                     allow_redirects=False)
        assert resp.status == 200
        assert "Location" not in resp.headers
        assert (await resp.text()).startswith("Unsubscribed")
    [s] = await store.suppressions_of(ANN)
    assert (s.list_id, s.source, s.reason, s.actor) == (LIST, "web", "one-click", "web:one-click")
    entries = [h for h in await _history(store) if h.action == "suppression.add"]
    assert [(h.list_id, h.source) for h in entries] == [(LIST, "web")]
    assert len(env.suspended) == 1 and env.suspended[0].list_id == LIST
    decisions = await store.decisions([ANN], LIST)
    assert decisions[ANN].value == "suppressed-list"
    assert (await store.decisions([ANN], "other.example.org"))[ANN].value == "granted"


@pytest.mark.parametrize("recipient", [
    "reader@xn--ls8h.la", "reader@xn--zz.example", "reader@\u05d0a.com",
    "reader@[IPv6:2001:DB8:0::1]"])
async def test_one_click_works_for_every_address_the_relay_delivers_to(
        env: Env, store: Store, recipient: str) -> None:
    """Domains IDNA 2008 refuses (the relay accepts them) and address literals: the link
    in their copies works, and the next message of the list is suppressed."""
    resp = await env.client.post(f"/u/{_unsub(recipient)}", data=ONE_CLICK, headers=URLENCODED)
    assert resp.status == 200, await resp.text()
    assert (await store.decisions([recipient], LIST))[recipient].value == "suppressed-list"
    page = await env.client.get(f"/u/{_unsub(recipient)}")
    assert page.status == 200


async def test_one_click_multipart(env: Env, store: Store) -> None:
    with aiohttp.MultipartWriter("form-data") as mp:
        part = mp.append("One-Click")
        part.set_content_disposition("form-data", name="List-Unsubscribe")
    resp = await env.client.post(f"/u/{_unsub(BOB)}", data=mp, allow_redirects=False)
    assert resp.status == 200, await resp.text()
    assert [s.list_id for s in await store.suppressions_of(BOB)] == [LIST]


async def test_one_click_without_a_list_suspends_all_mail(env: Env, store: Store) -> None:
    resp = await env.client.post(f"/u/{_unsub(CAT, None)}", data=ONE_CLICK, headers=URLENCODED)
    assert resp.status == 200
    assert [s.list_id for s in await store.suppressions_of(CAT)] == [None]


def _form(token: str, action: str) -> bytes:
    """A page action's body, with the form token the page gives it."""
    return f"form={Tokens([SECRET]).form_token(token)}&action={action}".encode()


async def _act(env: Env, token: str, action: str, lang: str = "en") -> str:
    resp = await env.client.post(f"/u/{token}?lang={lang}", data=_form(token, action),
                                 headers={**URLENCODED, "Sec-Fetch-Site": "same-origin"},
                                 allow_redirects=False)
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    return await resp.text()


async def test_each_page_action(env: Env, store: Store) -> None:
    token = _unsub()
    body = await _act(env, token, "stop-tracking")
    assert "Saved: read-tracking is off." in body and 'value="allow-tracking"' in body
    consent = await store.get_consent(ANN)
    assert consent is not None and (consent.beacons, consent.source) == ("refused", "web")
    body = await _act(env, token, "stop-tracking")
    assert "Nothing to change" in body
    await _act(env, token, "allow-tracking")
    consent = await store.get_consent(ANN)
    assert consent is not None and consent.beacons == "granted"
    body = await _act(env, token, "suspend-list")
    assert "Delivery of this list is suspended." in body
    body = await _act(env, token, "suspend-all", lang="ja")
    assert '<html lang="ja">' in body and "すべてのメールの配信を停止しました" in body
    assert sorted(str(s.list_id) for s in await store.suppressions_of(ANN)) == [
        "None", LIST]
    assert len(env.suspended) == 2
    body = await _act(env, token, "resume")
    assert "Saved: delivery is resumed." in body
    assert await store.suppressions_of(ANN) == []
    changes = [h for h in await _history(store) if h.actor == "web:recipient"]
    assert [h.action for h in changes] == [
        "consent.set", "consent.set", "suppression.add", "suppression.add",
        "suppression.remove", "suppression.remove"]
    assert {h.source for h in changes if h.action != "suppression.remove"} == {"web"}


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Content-Type": "text/plain"}, ONE_CLICK, 415),
    ({"Content-Type": "application/json"}, b'{"List-Unsubscribe": "One-Click"}', 415),
    ({}, ONE_CLICK, 415),
    (URLENCODED, ONE_CLICK + b"&" + ONE_CLICK, 400),
    (URLENCODED, b"List-Unsubscribe=One-Click%FF", 400),
    (URLENCODED, b"List-Unsubscribe=\xff\xfe", 400),
    (URLENCODED, b"List-Unsubscribe=Two-Clicks", 400),
    (URLENCODED, b"", 400),
    (URLENCODED, b"action=delete-everything", 400),
    (URLENCODED, b"action=resume&" + ONE_CLICK, 400),
    (URLENCODED, b"&".join([b"a=b"] * 100), 400),
    (URLENCODED, b"List-Unsubscribe=" + b"x" * 10_000, 413),
    ({"Content-Type": "multipart/form-data"}, ONE_CLICK, 400),
    ({"Content-Type": "multipart/form-data; boundary=zz"},
     b'--zz\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click', 400),
    ({"Content-Type": "multipart/form-data; boundary=zz"},
     b"--zz\r\nContent-Type: text/plain\r\n\r\nOne-Click\r\n--zz--\r\n", 400),
    ({"Content-Type": "multipart/form-data; boundary=zz"},
     b"garbage without any boundary", 400),
])
async def test_hostile_bodies_are_refused_and_change_nothing(env: Env, store: Store,
                                                             headers: dict[str, str],
                                                             body: bytes, status: int) -> None:
    before = await _snapshot(store)
    for token in (_unsub(), "forged-token"):  # the same answer whatever the token
        resp = await env.client.post(f"/u/{token}", data=body, headers=headers)
        assert resp.status == status, await resp.text()
        assert len(await resp.text()) < 200
    assert await _snapshot(store) == before


async def test_a_huge_streamed_body_is_cut(env: Env, store: Store) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(64):
            yield b"x" * 1024

    resp = await env.client.post(f"/u/{_unsub()}", data=chunks(), headers=URLENCODED)
    assert resp.status == 413
    assert await store.suppressions_of(ANN) == []


async def test_store_failure_is_a_503(env: Env, store: Store) -> None:
    await store.close()
    resp = await env.client.post(f"/u/{_unsub()}", data=ONE_CLICK, headers=URLENCODED)
    assert resp.status == 503 and resp.headers["Retry-After"] == "60"
    assert (await env.client.get(f"/u/{_unsub()}")).status == 503
    assert (await env.client.get(f"/o/{_open()}")).status == 200
    await env.drain()
    await store.open()


def test_recipient_side_refuses_an_unknown_language(store: Store) -> None:
    with pytest.raises(ValueError, match="default_language"):
        RecipientSide(Tokens([SECRET]), store, default_language="fr")
    side = RecipientSide(Tokens([SECRET]), store)
    assert replace(side, default_language="ja").default_language == "ja"


async def test_simultaneous_one_clicks_make_one_change(env: Env, store: Store) -> None:
    token = _unsub(CAT)
    answers = await asyncio.gather(*(
        env.client.post(f"/u/{token}", data=ONE_CLICK, headers=URLENCODED) for _ in range(5)))
    assert [r.status for r in answers] == [200] * 5
    entries = [h for h in await _history(store) if h.action == "suppression.add"]
    assert len(entries) == 1 and len(env.suspended) == 1


# -- cross-site forms ----------------------------------------------------------------------


async def test_page_forms_carry_a_form_token_bound_to_the_link(env: Env) -> None:
    ann, bob = _unsub(), _unsub(BOB)
    body = await (await env.client.get(f"/u/{ann}")).text()
    forms = re.findall(r'<input type="hidden" name="form" value="([^"]+)">', body)
    assert forms and set(forms) == {Tokens([SECRET]).form_token(ann)}
    assert body.count("<form ") == len(forms)
    assert Tokens([SECRET]).form_token(bob) != forms[0]


def _refused_forms() -> dict[str, tuple[dict[str, str], str | None]]:
    """name -> (headers, form value: None = the right one, "" = no form field)."""
    return {
        "no form token": ({}, ""),
        "another link's form token": ({}, Tokens([SECRET]).form_token(_unsub(BOB))),
        "a made-up form token": ({}, "AAAAAAAAAAAAAAAAAAAAAA"),
        "cross-site": ({"Sec-Fetch-Site": "cross-site"}, None),
        "same-site": ({"Sec-Fetch-Site": "same-site"}, None),
        "another origin": ({"Origin": "https://evil.example"}, None),
        "another origin, same path": ({"Origin": "http://127.0.0.2"}, None),
    }


@pytest.mark.parametrize("case", list(_refused_forms()))
async def test_page_actions_from_elsewhere_are_refused(env: Env, store: Store,
                                                       case: str) -> None:
    headers, form = _refused_forms()[case]
    token = _unsub()
    value = Tokens([SECRET]).form_token(token) if form is None else form
    before = await _snapshot(store)
    for action in ("allow-tracking", "suspend-all", "resume"):
        fields = f"form={value}&" if value else ""
        resp = await env.client.post(f"/u/{token}", data=f"{fields}action={action}".encode(),
                                     headers={**URLENCODED, **headers})
        assert resp.status == 403, (case, await resp.text())
    assert await _snapshot(store) == before
    assert env.suspended == []


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin", "Origin": "null"},  # Chromium, Firefox, Safari
    {"Sec-Fetch-Site": "none"},
    {"Origin": "null"},  # a no-referrer page, older browsers
    {},
    {"Origin": "https://prefs.example.com"},  # public_url
])
async def test_page_actions_from_the_page_itself_work(store: Store,
                                                      headers: dict[str, str]) -> None:
    async with _env(store, public_url="https://prefs.example.com") as e:
        token = _unsub()
        resp = await e.client.post(f"/u/{token}", data=_form(token, "stop-tracking"),
                                   headers={**URLENCODED, **headers})
        assert resp.status == 200, await resp.text()
        origin = f"http://{e.client.host}:{e.client.port}"
        previous = f"form={Tokens([PREVIOUS]).form_token(token)}&action=allow-tracking"
        resp = await e.client.post(f"/u/{token}", data=previous.encode(),  # key rotation
                                   headers={**URLENCODED, "Origin": origin})
        assert resp.status == 200, await resp.text()
    assert [h.action for h in await _history(store) if h.actor == "web:recipient"] == [
        "consent.set", "consent.set"]


async def test_one_click_needs_no_form_token_and_comes_from_anywhere(env: Env,
                                                                    store: Store) -> None:
    resp = await env.client.post(f"/u/{_unsub()}", data=ONE_CLICK, headers={
        **URLENCODED, "Sec-Fetch-Site": "cross-site", "Origin": "https://mail.example"})
    assert resp.status == 200, await resp.text()
    assert [s.list_id for s in await store.suppressions_of(ANN)] == [LIST]


# -- a flood of bad tokens -----------------------------------------------------------------


class _CountingStore:
    """The real store, with every attribute looked up on it recorded."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.used: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.used.append(name)
        return getattr(self.inner, name)


async def test_a_flood_of_bad_tokens_never_reaches_the_store(store: Store) -> None:
    counting = _CountingStore(store)
    valid_open, valid_unsub = _open(), _unsub()
    # Bad for both routes (each route's cross-purpose token is checked below).
    bad = [t for name, t in (*_bad_variants(valid_unsub, valid_open, _unsub).items(),
                             *_bad_variants(valid_open, valid_unsub, _open).items())
           if name != "cross-purpose"]
    bad += [secrets.token_urlsafe(n) for n in (1, 8, 40, 60, 80, 200, 1000) for _ in range(4)]
    bad += ["A" * 2560, "A" * 2561, "%00", "%C3%A9" * 10, "..%2F", "a.b", "=" * 40]
    async with _env(cast(Store, counting)) as e:
        pixel = await e.client.get(f"/o/{valid_open}")
        expected = (pixel.status, await pixel.read(), _pixel_headers(pixel))
        await e.drain()
        counting.used.clear()
        for token in bad:
            resp = await e.client.get(f"/o/{token}")
            assert (resp.status, await resp.read(), _pixel_headers(resp)) == expected, token
            assert (await e.client.head(f"/o/{token}")).status == 200
            assert (await e.client.get(f"/u/{token}")).status == 404, token
            resp = await e.client.post(f"/u/{token}", data=ONE_CLICK, headers=URLENCODED)
            assert resp.status == 404, token
            form = f"form={Tokens([SECRET]).form_token(token)}&action=allow-tracking"
            resp = await e.client.post(f"/u/{token}", data=form.encode(), headers=URLENCODED)
            assert resp.status == 404, token
        resp = await e.client.get(f"/o/{valid_unsub}")
        assert (resp.status, await resp.read(), _pixel_headers(resp)) == expected
        assert (await e.client.get(f"/u/{valid_open}")).status == 404
        assert e.app[OPEN_QUEUE].pending() == 0
        await e.drain()
    assert counting.used == []
