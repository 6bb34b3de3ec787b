"""The console in a real headless Chromium (JavaScript off): sign in, look an address up,
change its consent, import a CSV with an error (its line shown, nothing applied) and a
good one, see the dashboard's charts, in English and Japanese.

The aiohttp app runs on a free loopback port in a thread of its own (selenium blocks),
on a real SQLite store and spool.  Nothing may be loaded from another host and the
browser console must stay clean (a Content-Security-Policy violation fails the test).
Screenshots are kept in ``tests/artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from beacon_proxy.consent.store import open_store
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import Spool
from beacon_proxy.web.auth import ApiTokens, hash_token
from beacon_proxy.web.console import Console
from beacon_proxy.web.console.stats import hour_of
from beacon_proxy.web.server import build_admin_app
from tests.browser import (
    AppThread,
    artifact,
    chromium,
    console_problems,
    requested_urls,
    wait_replaced,
)

T = TypeVar("T")
TOKEN = "marketing-token-0123456789abcdef"
ANN = "ann@example.org"


class Server(AppThread):
    """The admin app with the console, its store and spool, on a loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(open_store(f"sqlite:///{tmp / 'store.db'}"))
        self.spool = Spool(tmp / "spool")

    async def _start(self) -> None:
        await self.store.open()
        self.spool.open()
        await self.store.set_consent(ANN, "granted", source="signup", actor="api:crm")
        await self.store.suppress(ANN, "news.example.org", reason="complaint", source="api")
        now = datetime.now(UTC)
        await self.store.record_open(ANN, list_id="offers.example.org", message_id="<o1@x>",
                                     ua_class="browser", at=now - timedelta(hours=2))
        await self.store.record_open(ANN, list_id="offers.example.org", machine=True,
                                     ua_class="proxy", at=now - timedelta(hours=1))
        stats = []
        for back in range(24 * 30):
            hour = hour_of(now - timedelta(hours=back))
            stats += [(hour, "received", 40 + back % 17), (hour, "delivered", 90 + back % 23),
                      (hour, "deferred", back % 5), (hour, "bounced", back % 3),
                      (hour, "suppressed", back % 4), (hour, "fallback", back % 2),
                      (hour, "held", back % 7 == 0)]
        stats += [(hour_of(now), "vendor:Mailchimp", 31), (hour_of(now), "vendor:HubSpot", 12),
                  (hour_of(now), "vendor:<b>Evil</b>", 1)]
        await self.store.add_stats([(h, n, int(v)) for h, n, v in stats])
        env = Envelope(new_queue_id(), "news@shop.example", (ANN,), size=2048,
                       list_id="offers.example.org")
        await self.spool.put(env, b"Subject: Offers\r\n\r\nHello\r\n")
        await self.spool.record(env.queue_id, 0, "deferred", "451 4.7.1 greylisted")
        tokens = ApiTokens({"marketing": hash_token(TOKEN)})
        console = Console(self.store, tokens, spool_root=self.spool.root)
        app = build_admin_app(lambda: {"status": "ok"}, console=console)
        await self.serve(app)

    async def _stop(self) -> None:
        await super()._stop()
        self.spool.close()



@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _only_loopback(driver: Any, server: Server) -> None:
    urls = requested_urls(driver)
    assert urls, "the performance log recorded no request"
    assert {urlsplit(u).netloc for u in urls} == {f"127.0.0.1:{server.port}"}, urls
    assert console_problems(driver) == []


def _submit(driver: Any, button_css: str) -> None:
    button = driver.find_element("css selector", button_css)
    button.click()
    wait_replaced(driver, button)
    assert console_problems(driver) == []


def _login(driver: Any, server: Server) -> None:
    driver.get(server.url("/console"))
    assert urlsplit(driver.current_url).path == "/console/login"
    driver.find_element("id", "token").send_keys(TOKEN)
    _submit(driver, "form button[type=submit]")
    assert "Signed in as marketing" in driver.page_source


def _import(driver: Any, kind: str, path: Path, *, dry_run: bool) -> str:
    """Upload a file and wait for the job's result (the page refreshes itself meanwhile:
    a look at a page being replaced may fail, and is tried again)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(driver.current_url.split("/console")[0] + "/console/import")
    Select(driver.find_element("id", "kind")).select_by_value(kind)
    box = driver.find_element("id", "dry_run")
    if box.is_selected() != dry_run:
        box.click()
    driver.find_element("id", "file").send_keys(str(path))
    _submit(driver, "#upload")
    WebDriverWait(driver, 120, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.find_elements("id", "result"))
    return str(driver.find_element("id", "result").text)


def test_console_in_a_browser(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("address,beacons,source\nbob@example.org,granted,crm\n"
                   "carol@example.org,perhaps,crm\n", encoding="utf-8")
    good = tmp_path / "good.csv"
    good.write_text("address,beacons,source\n" + "".join(
        f"user{i}@example.org,refused,crm\n" for i in range(2000)), encoding="utf-8")
    with chromium(lang="en-US", javascript=False, width=1200, height=1000) as driver:
        _login(driver, server)
        # look an address up
        driver.find_element("id", "q").send_keys(ANN)
        _submit(driver, "form[role=search] button")
        assert driver.find_element("id", "beacons").text == "granted"
        assert "news.example.org" in driver.find_element("id", "suppressions").text
        assert "<o1@x>" in driver.find_element("id", "opens").text
        assert "451 4.7.1 greylisted" in driver.find_element("id", "deliveries").text
        # change consent, with a reason
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("id", "beacons-new")).select_by_value("refused")
        driver.find_element("id", "reason-consent").send_keys("asked by phone, ticket 4711")
        _submit(driver, "#set-consent")
        assert driver.find_element("id", "done").text == "Consent changed."
        assert driver.find_element("id", "beacons").text == "refused"
        assert "Opens are shown only" in driver.find_element("id", "opens").text
        driver.save_screenshot(str(artifact("console-lookup.png")))
        last = server.call(server.store.recent_history(ANN, limit=1))[0]
        assert (last.action, last.new, last.actor, last.source, last.reason) == (
            "consent.set", "refused", "console:marketing", "console",
            "asked by phone, ticket 4711")
        # a CSV with an error: its line, nothing applied
        text = _import(driver, "consent", bad, dry_run=False)
        assert "Line 3 is wrong" in text and "perhaps" in text
        assert "Nothing was applied." in text
        assert server.call(server.store.get_consent("bob@example.org")) is None
        driver.save_screenshot(str(artifact("console-import-error.png")))
        # a good one: dry run, then for real
        text = _import(driver, "consent", good, dry_run=True)
        assert "2000 rows are valid" in text
        assert server.call(server.store.get_consent("user7@example.org")) is None
        text = _import(driver, "consent", good, dry_run=False)
        assert "Imported 2000 rows; 2000 changed something." in text
        consent = server.call(server.store.get_consent("user1999@example.org"))
        assert consent is not None and consent.actor == "console:marketing"
        driver.save_screenshot(str(artifact("console-import-done.png")))
        # the dashboard
        driver.get(server.url("/console/dashboard"))
        charts = driver.find_elements("css selector", "#charts svg")
        assert len(charts) == 8 and all(c.size["width"] > 200 for c in charts)
        assert "Mailchimp" in driver.page_source and "<b>Evil</b>" not in driver.page_source
        driver.save_screenshot(str(artifact("console-dashboard.png")))
        driver.get(server.url("/console/dashboard?span=30d"))
        assert len(driver.find_elements("css selector", "#charts svg rect")) > 30 * 5
        driver.save_screenshot(str(artifact("console-dashboard-30d.png")))
        # the queue
        driver.get(server.url("/console/queue"))
        assert "news@shop.example" in driver.find_element("id", "queue").text
        _only_loopback(driver, server)
        # sign out: the pages are gone
        _submit(driver, "header form button")
        driver.get(server.url("/console/address?address=" + ANN))
        assert urlsplit(driver.current_url).path == "/console/login"


def test_console_in_japanese(server: Server) -> None:
    with chromium(lang="ja", javascript=False) as driver:
        driver.get(server.url("/console/login"))
        assert driver.find_element("tag name", "html").get_attribute("lang") == "ja"
        assert driver.find_element("tag name", "h1").text == "ログイン"
        driver.find_element("id", "token").send_keys(TOKEN)
        _submit(driver, "form button[type=submit]")
        driver.get(server.url("/console/dashboard"))
        assert driver.find_element("tag name", "h1").text == "ダッシュボード"
        driver.save_screenshot(str(artifact("console-dashboard-ja.png")))
        heading = driver.find_element("tag name", "h1")
        driver.find_element("link text", "English").click()  # the language switch
        wait_replaced(driver, heading)
        assert driver.find_element("tag name", "h1").text == "Dashboard"
        _only_loopback(driver, server)
