"""The preference page in a real headless Chromium: both languages, a phone, every action.

The aiohttp app runs on a free loopback port in a thread of its own (selenium
blocks), on a real SQLite store; the browser clicks the page's buttons (one by
keyboard) and the store must show each change with source ``web``.  The
console must stay clean: a Content-Security-Policy violation fails a test.
Screenshots are kept in ``tests/artifacts/`` for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from beacon_proxy.consent.store import open_store
from beacon_proxy.tokens import Claims, Purpose, Tokens
from beacon_proxy.web.recipient import RecipientSide
from beacon_proxy.web.server import build_app
from tests.browser import (
    AppThread,
    artifact,
    chromium,
    console_problems,
    requested_urls,
    wait_replaced,
)

T = TypeVar("T")
SECRET = "browser-test-secret-0123456789"
ANN = "ann@example.org"
LIST = "news.example.org"


class Server(AppThread):
    """The app and its store on an event loop in a background thread."""

    def __init__(self, db: Path) -> None:
        super().__init__(open_store(f"sqlite:///{db}"))

    async def _start(self) -> None:
        await self.store.open()
        await self.store.set_consent(ANN, "granted", source="signup")
        side = RecipientSide(Tokens([SECRET]), self.store)
        await self.serve(build_app(lambda: {"status": "ok"}, recipient=side))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "store.db")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _url(server: Server, query: str = "") -> str:
    token = Tokens([SECRET]).mint(Claims(Purpose.UNSUBSCRIBE, ANN, LIST, "Q1"))
    return f"http://127.0.0.1:{server.port}/u/{token}{query}"


def _only_loopback(driver: Any, server: Server) -> None:
    """Nothing was loaded from elsewhere, and the console is clean: no style or resource
    refused by the Content-Security-Policy, no form blocked, nothing failed."""
    urls = requested_urls(driver)
    assert urls, "the performance log recorded no request"
    assert {urlsplit(u).netloc for u in urls} == {f"127.0.0.1:{server.port}"}, urls
    assert console_problems(driver) == []


def _history(server: Server) -> list[Any]:
    return list(server.call(server.store.history(ANN)).items)


def test_page_renders_in_english_and_japanese(server: Server) -> None:
    with chromium(lang="en-US") as driver:
        driver.get(_url(server))
        assert driver.find_element("tag name", "html").get_attribute("lang") == "en"
        assert driver.find_element("tag name", "h1").text == "Your email preferences"
        # The inline style applies (the policy allows it by its hash).
        button = driver.find_element("tag name", "button")
        assert button.value_of_css_property("background-color") == "rgba(29, 78, 216, 1)"
        assert console_problems(driver) == []
        driver.save_screenshot(str(artifact("preference-en.png")))
        driver.get(_url(server)[:-4])  # a truncated link
        assert driver.find_element("tag name", "h1").text == (
            "This link is not valid or has expired")
        driver.save_screenshot(str(artifact("preference-invalid.png")))
        [problem] = console_problems(driver)  # its status, and nothing else
        assert "status of 404" in problem, problem
        _only_loopback(driver, server)
    with chromium(lang="ja") as driver:
        driver.get(_url(server))
        assert driver.find_element("tag name", "html").get_attribute("lang") == "ja"
        assert driver.find_element("tag name", "h1").text == "メールの配信設定"
        driver.save_screenshot(str(artifact("preference-ja.png")))
        heading = driver.find_element("tag name", "h1")
        driver.find_element("link text", "English").click()  # the language switch
        wait_replaced(driver, heading)
        assert driver.find_element("tag name", "html").get_attribute("lang") == "en"
        _only_loopback(driver, server)
    assert _history(server)[-1].source == "signup"  # looking changed nothing


def test_page_fits_a_phone(server: Server) -> None:
    with chromium(width=390, height=844, lang="en-US") as driver:
        # Headless Chromium keeps windows at least 500 px wide: emulate the phone's viewport.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        driver.get(_url(server))
        assert driver.execute_script("return window.innerWidth") == 390
        width = driver.execute_script("return document.documentElement.scrollWidth")
        inner = driver.execute_script("return window.innerWidth")
        assert width <= inner, (width, inner)
        buttons = driver.find_elements("tag name", "button")
        assert buttons and all(b.size["height"] >= 44 for b in buttons)
        driver.save_screenshot(str(artifact("preference-mobile.png")))
        # Keyboard: Tab goes through the language links to the first button, with a ring.
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        for _ in range(3):
            ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        assert focused.tag_name == "button" and focused.text == "Stop read-tracking"
        assert driver.execute_script(
            "return getComputedStyle(arguments[0]).outlineStyle", focused) == "solid"
        driver.save_screenshot(str(artifact("preference-focus.png")))
        _only_loopback(driver, server)


def _click(driver: Any, action: str) -> None:
    """Click an action's button and wait until the answer replaced the page."""
    button = driver.find_element("css selector", f'input[value="{action}"] + button')
    button.click()
    wait_replaced(driver, button)
    assert console_problems(driver) == []


def test_every_action_works_without_javascript(server: Server) -> None:
    with chromium(lang="en-US", javascript=False) as driver:
        driver.get(_url(server))
        _click(driver, "stop-tracking")
        assert "Saved: read-tracking is off." in driver.page_source
        consent = server.call(server.store.get_consent(ANN))
        assert consent is not None and (consent.beacons, consent.source) == ("refused", "web")

        # By keyboard: focus the button, press Enter.
        from selenium.webdriver.common.keys import Keys

        button = driver.find_element("css selector", 'input[value="allow-tracking"] + button')
        button.send_keys(Keys.ENTER)
        wait_replaced(driver, button)  # the next page replaced it
        assert "Saved: read-tracking is allowed." in driver.page_source
        consent = server.call(server.store.get_consent(ANN))
        assert consent is not None and consent.beacons == "granted"

        _click(driver, "suspend-list")
        assert "Delivery of this list is suspended." in driver.page_source
        _click(driver, "suspend-all")
        sups = server.call(server.store.suppressions_of(ANN))
        assert sorted(str(s.list_id) for s in sups) == ["None", LIST]
        assert {s.source for s in sups} == {"web"}
        driver.save_screenshot(str(artifact("preference-suspended.png")))
        _click(driver, "resume")
        assert "Saved: delivery is resumed." in driver.page_source
        assert server.call(server.store.suppressions_of(ANN)) == []
        _only_loopback(driver, server)
    web_changes = [h for h in _history(server) if h.actor == "web:recipient"]
    assert [h.action for h in web_changes] == [
        "consent.set", "consent.set", "suppression.add", "suppression.add",
        "suppression.remove", "suppression.remove"]
