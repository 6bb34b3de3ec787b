"""A renderer oracle: what a refused copy makes headless Chromium request.

The parser oracle (:mod:`tests.rewrite.oracle`) says which URLs an HTML parser
finds; this one asks a real browser engine what it *loads*.  A message's HTML
parts are read with Python's ``email`` (an independent MIME reader: transfer
decoding, ``message/rfc822`` attachments, base64/QP-encoded ones too), served
from loopback with the part's charset as the HTTP charset (what a mail client
hands its HTML engine), loaded in Chromium, scrolled to the bottom, and every
request the performance log shows (``Network.requestWillBeSent``: an attempt
counts even though no host but loopback resolves) is collected.  With
``renderer(trap_host=...)`` that host resolves to a loopback :class:`Trap` that
counts connections: a ``<link rel=preconnect>`` connects without a request.  A
``dns-prefetch`` alone (a resolution, no connection) stays unseen: seeing it would
mean letting the browser's DNS out.

Chromium runs with JavaScript disabled, as mail clients render mail: then
``<noscript>`` holds markup and ``loading=lazy`` images load at once.  The
module using this makes one browser and reuses it (:class:`Renderer`).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import io
import json
import quopri
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message
from typing import Any

from tests.browser import chromium, serve_pages

__all__ = ["PATIENT", "SWITCHES", "HtmlPart", "Renderer", "Trap", "html_parts", "renderer"]

#: No traffic leaves loopback: every other host fails to resolve, and the attempt is
#: still logged (requestWillBeSent), which is what counts.
SWITCHES = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-pings",
)
MAX_EMBEDDED = 4  # message/rfc822 inside each other
_QUIET = 0.1  # s without a network event after load and scroll: settled
PATIENT = 1.0  # the same, for a second look where a request was expected and not seen
_POLL = 0.02
_MAX_WAIT = 3.0  # s per page, bound on every wait
_SCROLL = "window.scrollTo(0, 1e7); return document.readyState"


@dataclass(frozen=True, slots=True)
class HtmlPart:
    body: bytes  # transfer-decoded bytes, as the part carries them
    charset: str | None  # the part's charset parameter (None: absent)


def html_parts(data: bytes, _depth: int = 0) -> list[HtmlPart]:
    """Every ``text/html`` part a client renders, by Python's ``email`` (compat32),
    ``message/rfc822`` attachments included (transfer-encoded ones decoded first)."""
    out: list[HtmlPart] = []
    _walk(email.message_from_bytes(data, policy=email.policy.compat32), out, _depth)
    return out


def _walk(part: Message, out: list[HtmlPart], depth: int) -> None:
    ctype = part.get_content_type()
    if ctype == "text/html":
        body = part.get_payload(decode=True)
        out.append(HtmlPart(body if isinstance(body, bytes) else b"",
                            part.get_content_charset() if part.get_param("charset") else None))
    elif ctype == "message/rfc822" and depth < MAX_EMBEDDED:
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        inner = part.get_payload()
        if cte in ("base64", "quoted-printable") and isinstance(inner, list) and inner \
                and isinstance(inner[0], Message):
            # the parser read the encoded text as a message: write it back, decode, read it
            buffer = io.BytesIO()
            BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(inner[0])
            text = buffer.getvalue()
            decoded = (base64.decodebytes(text) if cte == "base64"
                       else quopri.decodestring(text))
            out += html_parts(decoded, depth + 1)
        elif isinstance(inner, list):
            for sub in inner:
                if isinstance(sub, Message):
                    _walk(sub, out, depth + 1)
    elif part.is_multipart():
        payload = part.get_payload()
        assert isinstance(payload, list)
        for sub in payload:
            if isinstance(sub, Message):
                _walk(sub, out, depth)


def _network_events(driver: Any) -> list[dict[str, Any]]:
    return [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]


class Renderer:
    """One Chromium and one loopback server: :meth:`load` pages, get their requests."""

    def __init__(self, driver: Any, pages: dict[str, tuple[bytes, str]], base: str) -> None:
        self.driver = driver
        self.pages = pages
        self.base = base
        self._n = 0
        self.loads = 0
        self.trap: Trap | None = None  # renderer(trap_host=...): its host's connections

    def load(self, body: bytes, charset: str | None, quiet: float = _QUIET) -> list[str]:
        """The URLs the page requested that are not on the loopback server; ``quiet``:
        how long no network event after the load and the scroll means settled."""
        self._n += 1
        path = f"/page-{self._n}"
        # serve_pages() writes "text/html; charset=<charset>"; "" names no charset
        self.pages[path] = (body, charset or "")
        _network_events(self.driver)  # forget what came before
        events: list[dict[str, Any]] = []
        start = time.monotonic()
        with contextlib.suppress(Exception):  # a timeout: what was requested still counts
            self.driver.get(self.base + path)
        self.loads += 1
        ready = ""
        quiet_since = time.monotonic()
        while time.monotonic() - start < _MAX_WAIT + quiet:
            if ready != "complete":
                try:
                    ready = self.driver.execute_script(_SCROLL)
                except Exception:
                    ready = ""
            new = _network_events(self.driver)
            events += new
            now = time.monotonic()
            if any(e.get("method", "").startswith("Network.") for e in new):
                quiet_since = now
            elif ready == "complete" and now - quiet_since >= quiet:
                break
            time.sleep(_POLL)
        del self.pages[path]
        return [url for url in _requested(events)
                if not url.startswith((self.base + "/", "http://127.0.0.1:"))]


def _requested(events: list[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        if event.get("method") == "Network.requestWillBeSent":
            url = event["params"]["request"]["url"]
            if not url.startswith(("data:", "blob:", "about:", "chrome", "devtools:")):
                yield url


class Trap:
    """A loopback listener that counts the TCP connections it accepts (and closes them):
    a browser whose resolver maps a host here shows every connection to that host,
    ``<link rel=preconnect>`` too, which sends no request the performance log shows."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


@contextmanager
def renderer(*, javascript: bool = False, trap_host: str | None = None
             ) -> Iterator[Renderer]:
    """A :class:`Renderer`; with ``trap_host``, that host resolves to a :class:`Trap`
    (``Renderer.trap``), every other to nothing."""
    trap = Trap() if trap_host is not None else None
    switches = SWITCHES if trap is None else (
        f"--host-resolver-rules=MAP {trap_host} 127.0.0.1:{trap.port} , MAP * ~NOTFOUND , "
        "EXCLUDE 127.0.0.1", *SWITCHES[1:])
    try:
        with chromium(javascript=javascript, extra_args=switches) as driver, \
                serve_pages() as (pages, base):
            driver.set_page_load_timeout(10)
            driver.set_script_timeout(5)
            rendering = Renderer(driver, pages, base)
            rendering.trap = trap
            yield rendering
    finally:
        if trap is not None:
            trap.close()
