"""The console's routes: sessions, CSRF and origin checks, lookups, changes, CSV, queue."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.consent.store import Store
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.parts import part_root
from beacon_proxy.spool.queue import Spool
from beacon_proxy.web.auth import ApiTokens, hash_token
from beacon_proxy.web.console import CONSOLE_CSP, Console
from beacon_proxy.web.console.handlers import CONSOLE, texts
from beacon_proxy.web.console.jobs import ImportJob
from beacon_proxy.web.console.stats import hour_of
from beacon_proxy.web.forms import MAX_BODY
from beacon_proxy.web.guard import ClientAddress, Guard, Rate
from beacon_proxy.web.server import build_admin_app
from tests.web.console.helpers import OTHER, SAME, TOKEN, Client, csrf, login

ANN = "ann@example.org"


@pytest.fixture
def tokens() -> ApiTokens:
    return ApiTokens({"ops": hash_token(TOKEN), "other": hash_token(OTHER)})


def _app(store: Store, tokens: ApiTokens, spool: Spool, public_url: str = "",
         guard: Guard | None = None) -> web.Application:
    console = Console(store, tokens, spool_root=spool.root, public_url=public_url)
    return build_admin_app(lambda: {"status": "ok"}, console=console, guard=guard)


@pytest.fixture
async def client(store: Store, tokens: ApiTokens, spool: Spool) -> AsyncIterator[Client]:
    async with TestClient(TestServer(_app(store, tokens, spool))) as c:
        yield c


def _routes(app: web.Application) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/console") and route.method != "HEAD":
            path = (path.replace("{job}", "x1").replace("{queue_id}", "ABC")
                    .replace("{kind}", "consent"))
            out.append((route.method, path))
    return out


async def test_every_console_route_without_a_session_is_refused(client: Client,
                                                                store: Store) -> None:
    routes = _routes(client.app)
    assert len(routes) == 14
    for method, path in routes:
        if path == "/console/login":
            continue
        resp = await client.request(method, path, allow_redirects=False, headers=SAME,
                                    data={"csrf": "x", "address": ANN, "action": "suppress",
                                          "reason": "r"})
        if method == "GET":
            assert resp.status == 303, path
            assert resp.headers["Location"].startswith("/console/login?next=")
        else:
            assert resp.status == 403, path
    assert await store.suppressions_of(ANN) == []
    # a cookie that is no session is none
    client.session.cookie_jar.update_cookies({"bp_console": "forged"})
    resp = await client.get("/console/address?address=" + ANN, allow_redirects=False)
    assert resp.status == 303


async def test_login_sets_a_strict_session_cookie(client: Client) -> None:
    page = await (await client.get("/console/login")).text()
    nonce = re.search(r'name="login" value="([^"]+)"', page)
    assert nonce is not None
    resp = await client.post("/console/login", headers=SAME, allow_redirects=False,
                             data={"login": nonce.group(1), "token": TOKEN,
                                   "next": "/console/queue"})
    assert resp.status == 303 and resp.headers["Location"] == "/console/queue"
    cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("bp_console="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attrs and "secure" not in attrs
    assert "SameSite=Strict" in cookie and "Path=/console" in cookie
    page = await (await client.get("/console")).text()
    assert "Signed in as ops" in page


async def test_https_public_url_makes_the_cookie_secure(store: Store, tokens: ApiTokens,
                                                       spool: Spool) -> None:
    app = _app(store, tokens, spool, public_url="https://relay.example.org")
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/console/login")
        assert "Secure" in resp.headers["Set-Cookie"]
    # an admin listener of its own, reached over plain HTTP on a private network
    console = Console(store, tokens, public_url="https://relay.example.org",
                      secure_cookies=False)
    app = build_admin_app(lambda: {"status": "ok"}, console=console)
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/console/login")
        assert "Secure" not in resp.headers["Set-Cookie"]


async def test_a_trusted_tls_proxy_makes_the_cookie_secure(store: Store, tokens: ApiTokens,
                                                          spool: Spool) -> None:
    """An admin listener of its own behind a TLS-terminating proxy: the proxy's
    ``X-Forwarded-Proto: https`` counts, from a trusted peer only."""
    console = Console(store, tokens, secure_cookies=False)
    trusting = Guard(client=ClientAddress((ipaddress.ip_network("127.0.0.0/8"),
                                           ipaddress.ip_network("::1/128"))))
    app = build_admin_app(lambda: {"status": "ok"}, console=console, guard=trusting)
    async with TestClient(TestServer(app)) as c:
        for proto, secure in ((["https"], True), (["http"], False), ([], False),
                              (["https, http"], False), (["http", "HTTPS"], True)):
            headers = [("X-Forwarded-Proto", p) for p in proto]
            resp = await c.get("/console/login", headers=headers)
            assert ("Secure" in resp.headers["Set-Cookie"]) is secure, proto
    app = build_admin_app(lambda: {"status": "ok"}, console=Console(
        store, tokens, secure_cookies=False), guard=Guard())  # no trusted proxy
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/console/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in resp.headers["Set-Cookie"]


async def test_bad_token_stale_form_and_foreign_origin_log_nobody_in(client: Client) -> None:
    page = await (await client.get("/console/login")).text()
    nonce = re.search(r'name="login" value="([^"]+)"', page)
    assert nonce is not None
    resp = await client.post("/console/login", headers=SAME,
                             data={"login": nonce.group(1), "token": "wrong-token"})
    assert resp.status == 403 and "not valid" in await resp.text()
    resp = await client.post("/console/login", headers=SAME,
                             data={"login": "other", "token": TOKEN})
    assert resp.status == 403 and "expired" in await resp.text()
    resp = await client.post("/console/login", headers={"Sec-Fetch-Site": "cross-site"},
                             data={"login": nonce.group(1), "token": TOKEN})
    assert resp.status == 403
    resp = await client.get("/console", allow_redirects=False)
    assert resp.status == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console",
                                    "/consolex", "/console\\..", "/api/v1/audit",
                                    "/console/../api/v1/audit", "/console/%2E%2E/metrics"])
async def test_login_never_redirects_off_the_console(client: Client, target: str) -> None:
    page = await (await client.get("/console/login")).text()
    nonce = re.search(r'name="login" value="([^"]+)"', page)
    assert nonce is not None
    resp = await client.post("/console/login", headers=SAME, allow_redirects=False,
                             data={"login": nonce.group(1), "token": TOKEN, "next": target})
    assert resp.headers["Location"] == "/console"


async def test_logins_are_rate_limited(store: Store, tokens: ApiTokens, spool: Spool) -> None:
    async with TestClient(TestServer(_app(store, tokens, spool))) as c:
        statuses = []
        for _ in range(7):
            resp = await c.post("/console/login", headers=SAME,
                                data={"login": "x", "token": "guess"})
            statuses.append(resp.status)
        assert statuses[:5] == [403] * 5 and statuses[5:] == [429, 429]
        assert int(resp.headers["Retry-After"]) >= 1


async def test_cross_origin_post_changes_nothing(client: Client, store: Store) -> None:
    token = await login(client)
    form = {"csrf": token, "address": ANN, "action": "suppress", "reason": "spam trap"}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://evil.example"}):
        resp = await client.post("/console/address", data=form, headers=headers)
        assert resp.status == 403
        assert "Nothing was changed" in await resp.text()
    for bad in ("", "x" * 43):  # no or a wrong CSRF token, from the right origin
        resp = await client.post("/console/address", data={**form, "csrf": bad}, headers=SAME)
        assert resp.status == 403
    assert await store.suppressions_of(ANN) == []
    assert (await store.history(ANN)).items == []


async def test_change_consent_suppress_and_resume_are_audited(client: Client,
                                                               store: Store) -> None:
    token = await login(client)
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": "Ann@Example.org", "action": "consent",
        "beacons": "granted", "reason": "asked by phone"})
    assert resp.status == 200 and resp.url.path == "/console/address"
    assert "Consent changed." in await resp.text()
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": ANN, "action": "suppress", "list": "news.example.org",
        "reason": "complaint"})
    assert "Delivery suspended." in await resp.text()
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": ANN, "action": "resume", "list": "news.example.org",
        "reason": "resolved"})
    assert "Delivery resumed." in await resp.text()
    trail = (await store.history(ANN)).items
    assert [(e.action, e.actor, e.source, e.reason) for e in trail] == [
        ("consent.set", "console:ops", "console", "asked by phone"),
        ("suppression.add", "console:ops", "console", "complaint"),
        ("suppression.remove", "console:ops", "console", "resolved")]
    consent = await store.get_consent(ANN)
    assert consent is not None and consent.beacons.value == "granted"


async def test_a_change_needs_a_reason_and_a_good_address(client: Client,
                                                           store: Store) -> None:
    token = await login(client)
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": ANN, "action": "suppress", "reason": " "})
    assert resp.status == 400 and texts("en")["refused_reason_required"] in await resp.text()
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": "not an address", "action": "suppress", "reason": "x"})
    assert resp.status == 400
    assert await store.suppressions_of(ANN) == []


async def test_lookup_shows_opens_only_for_consenting_recipients(client: Client,
                                                                store: Store) -> None:
    await store.set_consent(ANN, "granted", source="signup")
    assert await store.record_open(ANN, list_id="news.example.org", message_id="<m1@x>")
    await store.suppress(ANN, None, reason="<script>alert(1)</script>", source="test")
    await login(client)
    page = await (await client.get("/console/address", params={"address": ANN})).text()
    assert "&lt;m1@x&gt;" in page and "news.example.org" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # escaped
    await store.set_consent(ANN, "refused")
    page = await (await client.get("/console/address", params={"address": ANN})).text()
    assert "&lt;m1@x&gt;" not in page
    assert texts("en")["opens_not_consenting"] in page


async def test_lookup_shows_the_queued_copies(client: Client, spool: Spool) -> None:
    env = Envelope(new_queue_id(), "s@example.net", (ANN, "bob@example.org"), size=20)
    await spool.put(env, b"Subject: hi\r\n\r\nbody\r\n")
    await spool.record(env.queue_id, 0, "deferred", "451 try later")
    await login(client)
    page = await (await client.get("/console/address", params={"address": ANN})).text()
    assert env.queue_id in page and "451 try later" in page


async def test_a_big_queue_is_read_only_as_far_as_a_page_shows(
        client: Client, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog is when operators look: the queue page loads what it lists, a lookup
    the newest LOOKUP_SCANNED messages, and both say how many are queued."""
    from beacon_proxy.web.console import handlers

    monkeypatch.setattr(handlers, "QUEUE_SHOWN", 3)
    monkeypatch.setattr(handlers, "LOOKUP_SCANNED", 4)
    envs = [Envelope(new_queue_id(now_ns=(i + 1) * 10**9), "s@example.net", (ANN,), size=20)
            for i in range(6)]
    for env in envs:
        await spool.put(env, b"Subject: hi\r\n\r\nbody\r\n")
    loaded: list[str] = []
    load = Spool.load_some_sync

    def counting(self: Spool, ids: Any) -> list[Any]:
        ids = list(ids)
        loaded.extend(i for i, _ in ids)
        return load(self, ids)

    monkeypatch.setattr(Spool, "load_some_sync", counting)
    await login(client)
    page = await (await client.get("/console/queue")).text()
    assert "6 messages in the queue." in page and "The first 3 are listed." in page
    assert loaded == [e.queue_id for e in envs[:3]]  # the oldest first, as listed
    loaded.clear()
    page = await (await client.get("/console/address", params={"address": ANN})).text()
    assert sorted(loaded) == sorted(e.queue_id for e in envs[2:])  # the newest 4 only
    assert all(e.queue_id in page for e in envs[2:]) and envs[0].queue_id not in page
    assert "Looked at the newest 4 of the 6 queued messages." in page


async def test_pages_are_strict_and_speak_japanese(client: Client) -> None:
    resp = await client.get("/console/login", headers={"Accept-Language": "ja,en;q=0.5"})
    assert resp.headers["Content-Security-Policy"] == CONSOLE_CSP
    assert resp.headers["Content-Language"] == "ja"
    assert "<script" not in await resp.text()
    await login(client)
    page = await (await client.get("/console?lang=ja")).text()
    assert 'lang="ja"' in page and texts("ja")["lookup_title"] in page
    page = await (await client.get("/console/import")).text()  # the switch is remembered
    assert texts("ja")["import_title"] in page


async def _import(client: Client, token: str, kind: str, body: bytes,
                  dry_run: bool) -> tuple[str, Any]:
    form = FormData()
    form.add_field("csrf", token)
    form.add_field("kind", kind)
    if dry_run:
        form.add_field("dry_run", "1")
    form.add_field("file", body, filename="x.csv", content_type="text/csv")
    resp = await client.post("/console/import", data=form, headers=SAME, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    job = client.app[CONSOLE].jobs.get(resp.headers["Location"].rsplit("/", 1)[1])
    assert job is not None
    await job.finished.wait()
    return await (await client.get(resp.headers["Location"])).text(), job


async def test_import_with_an_error_shows_its_line_and_applies_nothing(
        client: Client, store: Store) -> None:
    token = await login(client)
    bad = b"address,beacons,source\r\na@example.org,granted,x\r\nb@example.org,maybe,x\r\n"
    for dry_run in (True, False):
        page, job = await _import(client, token, "consent", bad, dry_run)
        assert job.state == "failed" and job.error_line == 3
        assert "Line 3 is wrong" in page and "maybe" in page
        assert "Nothing was applied." in page
    assert await store.get_consent("a@example.org") is None


async def test_dry_run_then_import(client: Client, store: Store) -> None:
    token = await login(client)
    rows = b"".join(f"u{i}@example.org,granted,list\r\n".encode() for i in range(3000))
    body = b"address,beacons,source\r\n" + rows
    page, job = await _import(client, token, "consent", body, True)
    assert "3000 rows are valid" in page and await store.get_consent("u1@example.org") is None
    page, job = await _import(client, token, "consent", body, False)
    assert job.state == "done" and (job.rows, job.changed) == (3000, 3000)
    assert "Imported 3000 rows" in page
    consent = await store.get_consent("u2999@example.org")
    assert consent is not None and consent.actor == "console:ops"
    resp = await client.get("/console/export/consent")
    assert resp.headers["Content-Disposition"] == 'attachment; filename="consent.csv"'
    assert len((await resp.text()).splitlines()) == 3001


async def test_a_running_import_page_refreshes_with_a_progress_bar(client: Client) -> None:
    await login(client)
    h = client.app[CONSOLE]
    job = ImportJob("j1", "consent", False, "ops", total=101, rows=40)
    h.jobs._jobs["j1"] = job
    page = await (await client.get("/console/import/j1")).text()
    assert '<meta http-equiv="refresh" content="1">' in page
    assert '<progress id="progress" max="100" value="40">' in page
    assert "40 of 100 rows read" in page
    resp = await client.get("/console/import/nope")
    assert resp.status == 404


async def test_upload_without_its_csrf_token_first_is_refused(client: Client,
                                                              store: Store) -> None:
    token = await login(client)
    form = FormData()
    form.add_field("kind", "consent")
    form.add_field("file", b"address,beacons,source\r\na@example.org,granted,x\r\n",
                   filename="x.csv", content_type="text/csv")
    form.add_field("csrf", token)
    resp = await client.post("/console/import", data=form, headers=SAME)
    assert resp.status == 403
    assert await store.get_consent("a@example.org") is None


async def test_large_upload_passes_the_guard(store: Store, tokens: ApiTokens,
                                             spool: Spool) -> None:
    guard = Guard(page=Rate(100, 100), console=Rate(100, 100))
    async with TestClient(TestServer(_app(store, tokens, spool, guard=guard))) as c:
        token = await login(c)
        rows = b"".join(f"u{i}@example.org,refused,x\r\n".encode() for i in range(500))
        assert len(rows) > MAX_BODY
        _, job = await _import(c, token, "consent", b"address,beacons,source\r\n" + rows, False)
        assert job.state == "done" and job.rows == 500
        resp = await c.post("/console/address", headers=SAME,
                            data={"csrf": token, "reason": "x" * (MAX_BODY + 10)})
        assert resp.status == 413  # every other console form keeps the small bound


async def test_queue_list_show_retry_delete(client: Client, spool: Spool) -> None:
    env = Envelope(new_queue_id(), "s@example.net", (ANN,), size=30)
    await spool.put(env, b"Subject: <b>hello</b>\r\n\r\nbody\r\n")
    token = await login(client)
    page = await (await client.get("/console/queue")).text()
    assert env.queue_id in page and "1 messages in the queue." in page
    page = await (await client.get(f"/console/queue/{env.queue_id}")).text()
    assert "Subject: &lt;b&gt;hello&lt;/b&gt;" in page and ANN in page
    resp = await client.post(f"/console/queue/{env.queue_id}", headers=SAME,
                             data={"csrf": token, "action": "retry"})
    assert resp.status == 200 and f"Retry of {env.queue_id} requested" in await resp.text()
    assert (spool.control / f"retry.{env.queue_id}").exists()
    resp = await client.post(f"/console/queue/{env.queue_id}", headers={"Sec-Fetch-Site":
                                                                      "cross-site"},
                             data={"csrf": token, "action": "delete"})
    assert resp.status == 403 and spool.find_sync(env.queue_id) is not None
    resp = await client.post(f"/console/queue/{env.queue_id}", headers=SAME,
                             data={"csrf": token, "action": "delete"})
    assert f"{env.queue_id} was deleted." in await resp.text()
    assert spool.find_sync(env.queue_id) is None
    assert (spool.control / f"delete.{env.queue_id}").exists()
    resp = await client.post(f"/console/queue/{env.queue_id}", headers=SAME,
                             data={"csrf": token, "action": "delete"})
    assert resp.status == 404
    resp = await client.get("/console/queue/NOPE")
    assert resp.status == 404


async def test_a_queued_message_shows_its_header_section_only(client: Client,
                                                              spool: Spool) -> None:
    """The header ends at the first empty line, whatever the line ends; a message without
    a header shows none (its body is no header)."""
    ids = []
    for data in (b"Subject: lf\nTo: x\n\nBody-Line: lf\n", b"\r\nBody-Line: none\r\n\r\nx\r\n",
                 b"Subject: only\r\n"):
        env = Envelope(new_queue_id(), "s@example.net", (ANN,), size=len(data))
        await spool.put(env, data)
        ids.append(env.queue_id)
    await login(client)
    pages = [await (await client.get(f"/console/queue/{q}")).text() for q in ids]
    assert "Subject: lf\nTo: x\n</pre>" in pages[0] and "Body-Line" not in pages[0]
    assert "<pre></pre>" in pages[1] and "Body-Line" not in pages[1]
    assert "Subject: only\r\n</pre>" in pages[2]


async def test_logout_and_a_removed_token_end_the_session(client: Client,
                                                          tokens: ApiTokens) -> None:
    token = await login(client)
    resp = await client.post("/console/logout", headers=SAME, data={"csrf": token},
                             allow_redirects=False)
    assert resp.status == 303
    client.session.cookie_jar.clear()  # even a kept cookie is no session any more
    assert (await client.get("/console", allow_redirects=False)).status == 303
    await login(client, OTHER)
    assert (await client.get("/console", allow_redirects=False)).status == 200
    tokens.replace({"ops": hash_token(TOKEN)})  # a reload without "other"
    assert (await client.get("/console", allow_redirects=False)).status == 303


async def test_csrf_token_is_the_sessions(client: Client) -> None:
    first = await login(client)
    assert await csrf(client, "/console/import") == first


async def test_dashboard_shows_the_charts(client: Client, store: Store) -> None:
    await store.add_stats([(hour_of(datetime.now(UTC)), "received", 12),
                           (hour_of(datetime.now(UTC)), "vendor:<Evil>", 2)])
    await login(client)
    page = await (await client.get("/console/dashboard")).text()
    assert page.count("<svg") == 8 and "Messages received: 12" in page
    assert "&lt;Evil&gt;" in page and "<Evil>" not in page
    page = await (await client.get("/console/dashboard?span=30d&lang=ja")).text()
    assert texts("ja")["span_30d"] in page and page.count("<svg") == 8


def test_both_languages_have_every_text_the_templates_use() -> None:
    from importlib import resources

    folder = resources.files("beacon_proxy").joinpath("data/console")
    used: set[str] = set()
    for entry in folder.iterdir():
        if entry.name.endswith(".html"):
            used |= set(re.findall(r"\bt\.([a-z0-9_]+)", entry.read_text("utf-8")))
    assert len(used) > 50
    en, ja = texts("en"), texts("ja")
    assert set(en) == set(ja)
    assert used - set(en) == set()
    for key, text in en.items():  # the same placeholders in both
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", ja[key])), key


async def test_queue_pages_see_every_workers_part(client: Client, spool: Spool) -> None:
    """With ``[smtp] workers`` > 1 the messages live in ``<spool>/parts/<i>``: the queue
    pages list them, show them, and send retry/delete to the part that holds them."""
    part = Spool(part_root(spool.root, 1))
    part.open()
    try:
        env = Envelope(new_queue_id(), "s@example.net", (ANN,), size=30)
        await part.put(env, b"Subject: in part 1\r\n\r\nbody\r\n")
        token = await login(client)
        page = await (await client.get("/console/queue")).text()
        assert env.queue_id in page and "1 messages in the queue." in page
        page = await (await client.get(f"/console/queue/{env.queue_id}")).text()
        assert "Subject: in part 1" in page
        page = await (await client.get("/console/address", params={"address": ANN})).text()
        assert env.queue_id in page
        resp = await client.post(f"/console/queue/{env.queue_id}", headers=SAME,
                                 data={"csrf": token, "action": "retry"})
        assert resp.status == 200
        assert (part.control / f"retry.{env.queue_id}").exists()
        assert not (spool.control / f"retry.{env.queue_id}").exists()
        resp = await client.post(f"/console/queue/{env.queue_id}", headers=SAME,
                                 data={"csrf": token, "action": "delete"})
        assert f"{env.queue_id} was deleted." in await resp.text()
        assert part.find_sync(env.queue_id) is None
        assert (part.control / f"delete.{env.queue_id}").exists()
    finally:
        part.close()
