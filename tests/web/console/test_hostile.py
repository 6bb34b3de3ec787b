"""The console under attack: what an adversary tried, and what must hold.

Token rotation under the same name, ``HEAD`` on a streamed export, queue ids
that are no queue ids, many uploads at once.  (Cross-site forms, open
redirects and routes without a session are in ``test_handlers.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.consent.store import Store
from beacon_proxy.spool.queue import Spool
from beacon_proxy.web.auth import ApiTokens, hash_token
from beacon_proxy.web.console import Console
from beacon_proxy.web.console.handlers import CONSOLE
from beacon_proxy.web.console.jobs import RUNNING
from beacon_proxy.web.server import build_admin_app
from tests.web.console.helpers import SAME, TOKEN, Client, login

NEW_TOKEN = "rotated-token-0123456789abcdef"


@pytest.fixture
def tokens() -> ApiTokens:
    return ApiTokens({"ops": hash_token(TOKEN)})


def _app(store: Store, tokens: ApiTokens, spool: Spool) -> web.Application:
    return build_admin_app(lambda: {"status": "ok"},
                           console=Console(store, tokens, spool_root=spool.root))


@pytest.fixture
async def client(store: Store, tokens: ApiTokens, spool: Spool) -> AsyncIterator[Client]:
    async with TestClient(TestServer(_app(store, tokens, spool))) as c:
        yield c


async def test_a_rotated_token_ends_the_sessions_it_opened(client: Client,
                                                           tokens: ApiTokens) -> None:
    """A leaked token is replaced by a new one of the same name (SIGHUP): whoever
    signed in with the old one is out, though the name is still configured."""
    await login(client)
    assert (await client.get("/console", allow_redirects=False)).status == 200
    tokens.replace({"ops": hash_token(NEW_TOKEN)})
    assert (await client.get("/console", allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    await login(client, NEW_TOKEN)  # the new token signs in, as the same user
    page = await (await client.get("/console")).text()
    assert "Signed in as ops" in page


async def test_head_of_an_export_sends_no_body(client: Client, store: Store) -> None:
    """A body after a HEAD answer would be read as the next answer on the connection."""
    await store.set_consent("ann@example.org", "granted", source="form")
    await login(client)
    resp = await client.head("/console/export/consent")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert await resp.read() == b""
    resp = await client.get("/console/dashboard")  # the same keep-alive connection
    assert resp.status == 200
    resp = await client.get("/console/export/consent")
    assert (await resp.text()).startswith("address,beacons,source")


@pytest.mark.parametrize("queue_id", ["A" * 300, "\u00b2\u00b2", "ABC\u0661"])
async def test_queue_ids_that_are_no_queue_ids(client: Client, queue_id: str) -> None:
    token = await login(client)
    resp = await client.get(f"/console/queue/{queue_id}")
    assert resp.status == 404
    for action in ("retry", "delete"):
        resp = await client.post(f"/console/queue/{queue_id}", headers=SAME,
                                 data={"csrf": token, "action": action})
        assert resp.status in (400, 404), await resp.text()


async def test_the_queue_page_repeats_no_made_up_message(client: Client) -> None:
    """A link to ``/console/queue?done=delete&id=...`` must not put words on the page."""
    await login(client)
    page = await (await client.get(
        "/console/queue?done=delete&id=ALL%20MAIL%20DELETED%20CALL%20555")).text()
    assert "CALL 555" not in page and 'role="status"' not in page


def _upload_head(csrf: str) -> bytes:
    return (b"--B\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + csrf.encode()
            + b"\r\n--B\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nconsent"
            b"\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.csv\""
            b"\r\nContent-Type: text/csv\r\n\r\naddress,beacons,source\r\n")


async def test_uploads_at_once_are_bounded(client: Client) -> None:
    """Every upload is a temporary file of up to 1 GiB: no more are written at once than
    imports may run at once; one more is refused before its file is read."""
    token = await login(client)
    h = client.app[CONSOLE]
    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield _upload_head(token)
        await go_on.wait()
        yield b"ann@example.org,granted,form\r\n--B--\r\n"

    headers = {**SAME, "Content-Type": "multipart/form-data; boundary=B"}
    uploads = [asyncio.create_task(client.post("/console/import", data=slow_body(),
                                               headers=headers, allow_redirects=False))
               for _ in range(RUNNING)]
    async with asyncio.timeout(60):
        while h.jobs.busy() is False:  # both uploads are being written
            await asyncio.sleep(0.01)
    resp = await client.post("/console/import", headers=headers, allow_redirects=False,
                             data=_upload_head(token) + b"bob@example.org,granted,x\r\n--B--\r\n")
    assert resp.status == 503
    go_on.set()
    for done in await asyncio.gather(*uploads):
        assert done.status == 303


async def test_a_stalled_upload_gives_its_slot_back(client: Client, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload that stops sending would hold an import slot for as long as its
    client likes: after UPLOAD_IDLE seconds without data it is refused, its file gone."""
    import tempfile

    from beacon_proxy.web.console import handlers

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    monkeypatch.setattr(handlers, "UPLOAD_IDLE", 0.2)
    token = await login(client)
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield _upload_head(token)
        await never.wait()  # the client goes quiet, the connection stays open
        yield b"--B--\r\n"

    headers = {**SAME, "Content-Type": "multipart/form-data; boundary=B"}
    resp = await client.post("/console/import", data=stalled(), headers=headers,
                             allow_redirects=False)
    assert resp.status == 408 and "stopped arriving" in await resp.text()
    assert not client.app[CONSOLE].jobs.busy()
    assert list(uploads.iterdir()) == []


EVIL = "</script><svg/onload=alert(1)><img src=x onerror=alert(2)>"


async def test_hostile_texts_are_shown_as_text_everywhere(client: Client, store: Store,
                                                         spool: Spool) -> None:
    """Addresses, sources, reasons, audit entries, queue envelopes and headers hold what
    senders and importers wrote: on every page they are text, never markup."""
    from beacon_proxy.spool.envelope import Envelope, new_queue_id

    who = '"</script><svg/onload=alert(1)>"@example.org'
    await store.set_consent(who, "granted", source="<b>crm</b>", actor="api:<i>x</i>",
                            reason=EVIL + " 日本語の理由")
    await store.suppress(who, None, reason=EVIL, source="api")
    env = Envelope(new_queue_id(), '"<svg onload=alert(3)>"@shop.example', (who,),
                   message_id="<" + EVIL + "@x>", size=10)
    await spool.put(env, ("Subject: " + EVIL + " 件名\r\nFrom: <x@y>\r\n\r\nhi\r\n").encode())
    await login(client)
    pages = [f"/console/address?address={who}", "/console/queue",
             f"/console/queue/{env.queue_id}", f"/console/address?address={who}&lang=ja"]
    for path in pages:
        resp = await client.get(path)
        page = await resp.text()
        assert resp.status == 200, path
        assert "<svg/onload" not in page and "<svg onload" not in page, path
        assert "<img src=x" not in page and "</script>" not in page, path
        assert "&lt;svg" in page, path
    page = await (await client.get(f"/console/address?address={who}&lang=ja")).text()
    assert "日本語の理由" in page


async def test_an_upload_declared_too_large_is_refused_before_it_is_read(
        client: Client) -> None:
    """A Content-Length over the bound is refused at once, not after 1 GiB on disk."""
    token = await login(client)
    cookies = "; ".join(f"{k}={v.value}" for k, v in
                        client.session.cookie_jar.filter_cookies(
                            client.make_url("/console")).items())
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        head = (f"POST /console/import HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n"
                f"Cookie: {cookies}\r\nSec-Fetch-Site: same-origin\r\n"
                "Content-Type: multipart/form-data; boundary=B\r\n"
                f"Content-Length: {2 << 30}\r\n\r\n")
        writer.write(head.encode() + _upload_head(token))
        await writer.drain()
        async with asyncio.timeout(30):  # the answer comes without the rest of the body
            status = await reader.readline()
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert not client.app[CONSOLE].jobs.busy()


async def test_an_empty_store_and_a_store_that_is_down(client: Client, store: Store) -> None:
    """An empty store draws empty charts; a store that is down is a 503 page on every
    page that needs it (never a 500 or a half-drawn page), and the relay goes on."""
    token = await login(client)
    page = await (await client.get("/console/dashboard")).text()
    assert page.count("<svg") == 7 and "Messages received: 0" in page  # no vendor chart
    await store.close()
    for path in ("/console/dashboard", "/console/address?address=ann@example.org",
                 "/console/export/consent", "/console/dashboard?span=30d&lang=ja"):
        resp = await client.get(path)
        assert resp.status == 503, path
        assert "refresh" not in await resp.text()
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": "ann@example.org", "action": "suppress", "reason": "x"})
    assert resp.status == 503
    assert (await client.get("/console/queue")).status == 200  # the spool needs no store


async def test_reordering_and_control_characters_are_shown_as_marks(
        client: Client, store: Store, spool: Spool) -> None:
    """A right-to-left override in a Subject would reorder what the operator reads
    ("Invoice \u202egpj.exe" shows as "Invoice exe.jpg"): pages show it as a mark, and the
    hidden fields that send an address back keep it exact."""
    import re

    from beacon_proxy.spool.envelope import Envelope, new_queue_id
    from tests.web.console.helpers import csrf

    who = "ann\u202e@example.org"  # SMTPUTF8 local parts may hold format characters
    await store.set_consent(who, "refused", source="crm\u2066x", actor="api:ops")
    env = Envelope(new_queue_id(), "s@shop.example", (who,), size=10, smtputf8=True)
    subject = "Invoice \u202egpj.exe \x1b[31m"
    await spool.put(env, f"Subject: {subject}\r\nFrom: <s@shop.example>\r\n\r\nhi\r\n"
                    .encode())
    await login(client)
    page = await (await client.get(f"/console/queue/{env.queue_id}")).text()
    assert "Invoice &lt;U+202E&gt;gpj.exe &lt;U+001B&gt;[31m" in page
    assert "\u202e" not in page and "\x1b" not in page
    resp = await client.get("/console/address", params={"address": who})
    page = await resp.text()
    assert "\u2066" not in page and "crm&lt;U+2066&gt;x" in page
    shown = re.findall(r'name="address" value="([^"]*)"', page)
    assert shown and all(v == who for v in shown)  # exact, for the forms to send back
    token = await csrf(client, "/console/address?address=ann%E2%80%AE%40example.org")
    resp = await client.post("/console/address", headers=SAME, data={
        "csrf": token, "address": shown[-1], "action": "consent", "beacons": "granted",
        "reason": "asked"})
    assert resp.status == 200
    consent = await store.get_consent(who)
    assert consent is not None and consent.beacons.value == "granted"
