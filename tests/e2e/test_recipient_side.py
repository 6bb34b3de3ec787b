"""End-to-end: the recipient side of the policy through the real relay, a real upstream
and the real web listener (issue 7's "done when").

A granted recipient's copy has one first-party pixel whose fetch is recorded;
refused and unknown recipients' copies have no beacon and no open is ever
recorded for them, nor asked for by a read-receipt request; every copy carries
both unsubscribe headers and the footer link in both parts; a one-click POST
suspends that list, so the next mail of the list is not delivered to that
recipient while another list still is; fetching the preference page changes
nothing.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity
from tests.e2e.harness import Proxy, Upstream, free_port, newsletter, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("store_backend")]

SECRET = "e2e-recipient-secret-0123456789"
LIST = "news.sender.example"


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    port = free_port()
    p = Proxy(tmp_path, f"""
[web]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
unsubscribe_mailto = "unsubscribe@sender.example"
[tokens]
secret = "{SECRET}"
""", upstream=upstream.port)
    p.web_port = port
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _ok(proxy: Proxy, *args: str) -> str:
    result = proxy.cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert part is not None, kind
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _http(url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kw: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _opens(proxy: Proxy) -> list[dict[str, object]]:
    out = _ok(proxy, "events", "opens", "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_recipient_side_end_to_end(proxy: Proxy, upstream: Upstream) -> None:
    base = f"http://127.0.0.1:{proxy.web_port}"
    _ok(proxy, "consent", "set", "granted@example.net", "--beacons", "granted")
    _ok(proxy, "consent", "set", "refused@example.net", "--beacons", "refused")
    people = ["granted@example.net", "refused@example.net", "unknown@example.net"]
    first = newsletter("First", list_id=LIST).replace(
        b"\r\nDate:", b"\r\nDisposition-Notification-To: news@sender.example\r\nDate:", 1)
    proxy.send("news@sender.example", people, first)
    wait_for(lambda: len(upstream.messages) == 3, what="three copies")

    links: dict[str, str] = {}
    for who in people:
        (copy,) = upstream.to(who)
        msg = _parse(copy.data)
        # Exactly one of each header; the HTTPS (here: the test's http) link first.
        (unsubscribe,) = msg.get_all("List-Unsubscribe") or []
        assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
        m = re.fullmatch(rf"<({re.escape(base)}/u/[A-Za-z0-9_-]+)>, "
                         r"<mailto:unsubscribe@sender\.example\?subject=unsubscribe>",
                         str(unsubscribe))
        assert m, unsubscribe
        links[who] = m.group(1)
        # Only a granted recipient's copy asks for a read receipt.
        assert (msg["Disposition-Notification-To"] is not None) == (who == "granted@example.net")
        # The footer link, in both parts, is the same preference link.
        assert links[who] in _body(msg, "html")
        assert links[who] in _body(msg, "plain")
        html = _body(msg, "html")
        assert "t.example.com" not in html
        pixels = re.findall(rf'<img src="({re.escape(base)}/o/[A-Za-z0-9_-]+)"', html)
        assert len(pixels) == (1 if who == "granted@example.net" else 0), who
        if pixels:
            links["pixel"] = pixels[0]

    # The granted recipient's pixel: a GIF, and the open is recorded.
    status, headers, body = _http(links["pixel"])
    assert status == 200 and body.startswith(b"GIF8")
    assert "no-store" in headers["Cache-Control"]
    opens = wait_for(lambda: _opens(proxy), what="the open to be recorded")
    assert [o["address"] for o in opens] == ["granted@example.net"]

    # A refused or unknown recipient's open is never recorded, even with a genuine token.
    tokens = Tokens([SECRET])
    for who in ("refused@example.net", "unknown@example.net"):
        token = tokens.mint(Claims(Purpose.OPEN, who, LIST, "Q", url_identity("https://t/x")))
        status, _, forged_body = _http(f"{base}/o/{token}")
        assert (status, forged_body) == (200, body)
    # ... and a forged one is answered the same.
    assert _http(f"{base}/o/AAAA")[2] == body

    # Fetching the preference page changes nothing.
    before = _ok(proxy, "suppress", "list", "--json")
    history_before = proxy.cli("consent", "get", "refused@example.net", "--json").stdout
    status, headers, page = _http(links["refused@example.net"])
    assert status == 200 and b"<form" in page
    assert _ok(proxy, "suppress", "list", "--json") == before
    assert proxy.cli("consent", "get", "refused@example.net", "--json").stdout == history_before

    # RFC 8058 one-click: 200, no redirect; the list is suspended for that recipient.
    status, _, _ = _http(links["refused@example.net"], b"List-Unsubscribe=One-Click",
                         {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    suppressed = [json.loads(line) for line in _ok(proxy, "suppress", "list", "--json")
                  .splitlines() if line.strip()]
    assert [(s["address"], s["list_id"]) for s in suppressed] == [("refused@example.net", LIST)]
    assert _http(links["refused@example.net"], b"List-Unsubscribe=One-Click",
                 {"Content-Type": "application/x-www-form-urlencoded"})[0] == 200  # idempotent

    # The next mail of that list is not delivered to them; another list's still is.
    proxy.send("news@sender.example", ["refused@example.net"], newsletter("Second", list_id=LIST))
    proxy.send("news@sender.example", ["refused@example.net"],
               newsletter("Deals", list_id="deals.sender.example"))
    wait_for(lambda: len(upstream.to("refused@example.net")) == 2, what="the other list's mail")
    wait_for(lambda: proxy.events("suppressed"), what="the suppressed copy")
    subjects = [str(_parse(m.data)["Subject"]) for m in upstream.to("refused@example.net")]
    assert subjects == ["First #0", "Deals #0"]
    # Still no open for anyone but the granted recipient.
    assert [o["address"] for o in _opens(proxy)] == ["granted@example.net"]


def test_a_refused_copy_s_invitation_loads_nothing(proxy: Proxy, upstream: Upstream) -> None:
    _ok(proxy, "consent", "set", "granted@example.net", "--beacons", "granted")
    pixel = b"https://t.example.com/cal/open.gif"
    invite = (
        b"From: news@sender.example\r\nTo: list@sender.example\r\nSubject: Launch\r\n"
        b"Message-ID: <launch@sender.example>\r\nList-Id: <" + LIST.encode() + b">\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nJoin us.\r\n"
        b"--b\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n"
        b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:launch@sender.example\r\n"
        b'X-ALT-DESC;FMTTYPE=text/html:<html><body><img src="' + pixel + b'"></body></html>\r\n'
        b"IMAGE;VALUE=URI:" + pixel + b"\r\nDESCRIPTION:Join us.\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n--b--\r\n")
    people = ["granted@example.net", "refused@example.net"]
    proxy.send("news@sender.example", people, invite)
    wait_for(lambda: len(upstream.messages) == 2, what="two copies")
    for who in people:
        (copy,) = upstream.to(who)
        calendar = next(p for p in _parse(copy.data).walk()
                        if p.get_content_type() == "text/calendar")
        text = calendar.get_payload(decode=True)
        assert isinstance(text, bytes) and b"DESCRIPTION:Join us." in text
        # a refused copy's calendar is rebuilt without what loads
        assert (pixel in text) is (who == "granted@example.net"), who
    wait_for(lambda: len(proxy.events("delivered")) == 2, what="both delivered lines")
    delivered = {e["recipient"]: e for e in proxy.events("delivered")}
    assert delivered["refused@example.net"]["calendar_loads"] == 2
    assert "calendar_loads" not in delivered["granted@example.net"]
