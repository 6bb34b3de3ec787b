"""A real headless Chromium for tests of what a browser or mail client renders.

Debian's ``chromium`` and ``chromium-driver`` driven by selenium.  Without them
a test is skipped with the reason, except under CI (``CI`` set), where a
missing browser is a failure: ``.ci/run`` installs them.

    with chromium() as browser:
        browser.get("http://127.0.0.1:8025/u/...")
        browser.save_screenshot(str(artifact("page.png")))

:func:`artifact` names a file under ``tests/artifacts/`` (not in git), kept
after the run for people to look at.  :func:`requested_urls` lists what the
page loaded from anywhere (Chromium's performance log), for "no request to any
other host" checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from beacon_proxy.consent.store import Store

__all__ = ["ARTIFACTS", "AppThread", "artifact", "chromium", "console_problems", "requested_urls",
           "serve_pages", "wait_replaced"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"
_NOT_NETWORK = ("chrome://", "chrome-extension://", "chrome-untrusted://", "devtools://", "data:",
                "blob:", "about:")


def artifact(name: str) -> Path:
    """A path under ``tests/artifacts/`` for a screenshot or page dump."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return f"{path} not installed (Debian packages chromium, chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


@contextmanager
def chromium(*, width: int = 1024, height: int = 900, lang: str | None = None,
             javascript: bool = True, extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium (a selenium WebDriver) that records its network requests.

    ``javascript=False`` runs it with JavaScript disabled (a content setting), for
    pages that must work without it.  ``extra_args`` are more command-line switches
    (``--host-resolver-rules=...``, rendering switches for screenshot diffs).
    """
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium under CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                f"--window-size={width},{height}", *extra_args):
        options.add_argument(arg)
    prefs: dict[str, object] = {}
    if lang:
        options.add_argument(f"--lang={lang}")
        prefs["intl.accept_languages"] = lang
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    if prefs:
        options.add_experimental_option("prefs", prefs)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="bp-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def wait_replaced(driver: Any, element: Any, timeout: float = 30) -> None:
    """Wait until the page holding ``element`` was replaced by the next one.

    Selenium's ``staleness_of`` only expects ``StaleElementReferenceException``;
    Chromium sometimes answers for a node of a page being replaced with another
    error ("Node with given id does not belong to the document"): gone, too.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    def gone(_: Any) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, timeout).until(gone)


@contextmanager
def serve_pages() -> Iterator[tuple[dict[str, tuple[bytes, str]], str]]:
    """A loopback HTTP server in a thread: yields ``(pages, base URL)``.

    ``pages`` maps a path to ``(HTML bytes, charset)``, filled in by the test; any
    other path is a 404.  An empty charset sends ``text/html`` without one (the
    browser then reads a BOM, a ``<meta>`` or guesses).
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pages: dict[str, tuple[bytes, str]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            if page is None:
                self.send_error(404)
                return
            body, charset = page
            self.send_response(200)
            self.send_header("Content-Type",
                             f"text/html; charset={charset}" if charset else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield pages, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def requested_urls(driver: Any) -> list[str]:
    """Every network URL the browser requested since the last call (performance log).

    The browser's own pages (``chrome://``, ``devtools://``) and ``data:``/``blob:``
    URLs are not network requests and are left out.
    """
    urls: list[str] = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(_NOT_NETWORK):
                urls.append(url)
    return urls


def console_problems(driver: Any) -> list[str]:
    """Warnings and errors of the browser console since the last call: a
    Content-Security-Policy violation (a style or resource refused) is one of them."""
    return [f"{e['level']}: {e['message']}" for e in driver.get_log("browser")
            if e["level"] in ("WARNING", "SEVERE")]


T = TypeVar("T")


class AppThread:
    """An aiohttp app and its store on an event loop in a background thread, for a
    browser to load.  Subclasses fill the store and build the app in :meth:`_start`,
    ending with :meth:`serve`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> None:
        raise NotImplementedError

    async def serve(self, app: web.Application) -> None:
        """Listen on a free loopback port (:attr:`port`)."""
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.store.close()

    def start(self) -> None:
        self._thread.start()
        self.call(self._start())

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
            self.loop.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
