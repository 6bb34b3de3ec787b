"""End-to-end: the console on the real ``beacon-proxy serve``'s admin listener, and the
dashboard's counts written to the store by the relay."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from beacon_proxy.web.auth import hash_token
from tests.e2e import harness
from tests.e2e.harness import Proxy, Upstream, free_port, newsletter

pytestmark = pytest.mark.e2e
TOKEN = "console-e2e-token-0123456789"
SAME = {"Sec-Fetch-Site": "same-origin"}


class Browser:
    """urllib with a cookie jar, no proxy, and redirects followed."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=SAME)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()


def test_console_on_the_admin_listener_and_the_dashboards_counts(
        tmp_path: Path, upstream: Upstream) -> None:
    admin = free_port()
    proxy = Proxy(tmp_path, f"""
[web]
admin_listen = "127.0.0.1:{admin}"
[api.tokens]
marketing = "{hash_token(TOKEN)}"
""", upstream=upstream.port).start()
    stopped = False
    try:
        browser = Browser(admin)
        status, page = browser.get("/console")  # redirected to the sign-in form
        assert status == 200 and 'name="login"' in page
        nonce = re.search(r'name="login" value="([^"]+)"', page)
        assert nonce is not None
        status, page = browser.post("/console/login", {"login": nonce.group(1),
                                                       "token": TOKEN})
        assert status == 200 and "Signed in as marketing" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        status, page = browser.post("/console/address", {
            "csrf": csrf.group(1), "address": "ann@example.org", "action": "suppress",
            "list": "news.sender.example", "reason": "asked to stop"})
        assert status == 200 and "Delivery suspended." in page
        proxy.send("news@sender.example", ["bob@example.org", "ann@example.org"],
                   newsletter())
        proxy.wait_events("delivered", 1)
        proxy.wait_events("suppressed", 1)
        [login] = proxy.events("console_login")
        assert (login["result"], login["user"]) == ("ok", "marketing")
        [action] = proxy.events("console_action")
        assert action["action"] == "suppress" and "ann" not in str(action)
        events = proxy.events()
        assert proxy.stop() == 0  # the counts so far are written as the relay stops
        stopped = True
    finally:
        if not stopped:
            proxy.kill9()
    # the same numbers the log has
    expected: dict[str, int] = {}
    for e in events:
        name = e["event"]
        if name in ("received", "delivered", "deferred", "bounced", "suppressed", "held"):
            expected[name] = expected.get(name, 0) + 1
        if name == "delivered" and e.get("policy") == "refused":
            for vendor in e.get("vendors", []):
                expected["vendor:" + vendor] = expected.get("vendor:" + vendor, 0) + 1
    assert harness.stored_counts(tmp_path) == expected
    assert expected["received"] == 1 and expected["suppressed"] == 1
