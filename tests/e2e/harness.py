"""Real peers for end-to-end scenarios.

* :class:`Upstream` — an aiosmtpd server in a thread that captures what the
  proxy delivers and answers per recipient: local part ``reject...`` gets
  ``550``, ``tempfail...`` always ``451``, ``flakyN...`` ``451`` for its first
  N attempts and then ``250``.
* :class:`Proxy` — the real ``beacon-proxy serve`` in a subprocess, with a
  config file written for the test, its JSON log, ``stop()`` (SIGTERM) and
  ``kill9()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import quopri
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from beacon_proxy.consent.store import open_store

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]  # run the code under test, not an installed copy


_BIND_ATTEMPTS = 5
#: The consent store every Proxy uses unless its test's config names one (None: each
#: proxy's own SQLite file); the ``store_backend`` fixture sets a PostgreSQL schema.
DEFAULT_STORE: str | None = None
#: ``[smtp] event_loop`` of every Proxy unless its test's config names one: set
#: ``BEACON_E2E_EVENT_LOOP=asyncio`` (or ``uvloop``) to run the suite on one loop.
DEFAULT_EVENT_LOOP = os.environ.get("BEACON_E2E_EVENT_LOOP", "auto")


class _PortTaken(AssertionError):
    """The proxy could not bind a port :func:`free_port` chose (someone took it since)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int, *, besides: Collection[int] = ()) -> list[int]:
    """``count`` ports free now, all different and none of ``besides``: each socket stays
    bound until every port is chosen (two :func:`free_port` calls in a row can return the
    same port, and a relay given it twice cannot start, however often it is moved)."""
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        while len(ports) < count:  # a port of besides at most once each: bounded
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if port not in besides:
                ports.append(port)
    return ports


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class _Handler:
    messages: list[Captured] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    peers: list[object] = field(default_factory=list)  # each session's client (EHLO)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """Offer PIPELINING, as Postfix does: the relay's pipelined path is the one run."""
        session.host_name = hostname
        with self.lock:
            self.peers.append(session.peer)
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        local = address.split("@")[0]
        with self.lock:
            n = self.attempts[address] = self.attempts.get(address, 0) + 1
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        if local.startswith("tempfail"):
            return "451 4.3.0 Temporary local problem, try again"
        m = re.match(r"flaky(\d+)", local)
        if m and n <= int(m.group(1)):
            return "451 4.3.0 Greylisted, try again"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.messages.append(
                Captured((envelope.mail_from or "").strip("<>"), list(envelope.rcpt_tos),
                         envelope.original_content or b"")
            )
        return "250 2.0.0 OK captured"


class Upstream:
    """An SMTP server that captures deliveries (start/stop as often as needed)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = _Handler()
        self._controller: Controller | None = None

    def start(self) -> Upstream:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      decode_data=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Captured]:
        with self.handler.lock:
            return list(self.handler.messages)

    def to(self, address: str) -> list[Captured]:
        return [m for m in self.messages if address in m.rcpt_tos]


class ConnectionLimit:
    """A TCP front for an upstream that takes at most ``limit`` connections at a time
    from its client and greets any more with ``421`` and hangs up, as Postfix's
    ``smtpd_client_connection_count_limit`` does; the rest is passed on byte for byte.
    Runs its own event loop in a thread; ``refused`` counts the connections turned
    away, ``widest`` the most open at once."""

    def __init__(self, target: int, limit: int) -> None:
        self.target, self.limit = target, limit
        self.port = free_port()
        self.open = self.refused = self.widest = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ConnectionLimit:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the connection limit did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.limit:
            self.refused += 1
            writer.write(b"421 4.7.0 mx.test Error: too many connections from 127.0.0.1\r\n")
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self.open += 1
        self.widest = max(self.widest, self.open)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            self.open -= 1
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class Proxy:
    """``beacon-proxy serve`` as a subprocess in its own working directory."""

    def __init__(self, workdir: Path, config: str = "", *, upstream: int | None = None) -> None:
        self.workdir = workdir
        self.upstream = upstream
        self.smtp_port, self.web_port = free_ports(2, besides=self._others())
        self.log_path = workdir / "proxy.log.jsonl"
        self.config_path = workdir / "beacon-proxy.toml"
        base: dict[str, dict[str, Any]] = {
            "smtp": {"listen": f"127.0.0.1:{self.smtp_port}", "hostname": "relay.test",
                     "shutdown_timeout": 5, "event_loop": DEFAULT_EVENT_LOOP},
            "web": {"listen": f"127.0.0.1:{self.web_port}"},
            "log": {"path": str(self.log_path), "level": "debug"},
            "delivery": {"retry_min": 0.5, "retry_max": 1, "timeout": 10},
            # Most scenarios send one copy of a newsletter, which would wait for a
            # second one to compare with: the campaign scenarios set their own hold.
            "campaign": {"hold": 0},
        }
        if DEFAULT_STORE is not None:  # several nodes may share it: one token secret
            base["store"] = {"url": DEFAULT_STORE}
            base["tokens"] = {"secret": "e2e-shared-store-secret-0123456789"}
        if upstream is not None:
            base["delivery"]["upstream"] = f"smtp://127.0.0.1:{upstream}"
        self.config_path.write_text(_merge_toml(base, config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> Proxy:
        for attempt in range(_BIND_ATTEMPTS):
            env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "beacon_proxy", "serve", "--config", str(self.config_path)],
                cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            if not wait:
                break
            try:
                wait_for(self._ready, 30, "the proxy to listen")
                break
            except _PortTaken:
                # free_port() found a port that was free a moment ago; another process
                # on this shared machine has taken it since.  Move and start again.
                if attempt == _BIND_ATTEMPTS - 1:
                    raise
                self._move_ports()
        return self

    def _others(self) -> tuple[int, ...]:
        """Ports the relay's own listeners must not take: its upstream's."""
        return () if self.upstream is None else (self.upstream,)

    def _move_ports(self) -> None:
        text = self.config_path.read_text()
        smtp, web = free_ports(2, besides={self.smtp_port, self.web_port, *self._others()})
        text = re.sub(rf"(?<=:){self.smtp_port}(?!\d)", str(smtp), text)
        text = re.sub(rf"(?<=:){self.web_port}(?!\d)", str(web), text)
        self.config_path.write_text(text)
        self.smtp_port, self.web_port = smtp, web

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            _, err = self.proc.communicate()
            message = f"proxy exited {self.proc.returncode}: {err.decode()[-2000:]}"
            if "address already in use" in message:
                raise _PortTaken(message)
            raise AssertionError(message)
        return any(e["event"] == "started" for e in self.events()) and _connectable(
            self.smtp_port)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc.communicate()
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc.communicate()

    def wait_events(self, name: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The ``name`` events once there are ``count`` of them: a line is written after
        what it reports happened (a copy reaches the upstream before its ``delivered``)."""
        def enough() -> list[dict[str, Any]]:
            found = self.events(name)
            return found if len(found) >= count else []

        return wait_for(enough, timeout, f"{count} {name} log line(s)")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.log_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if name is None or rec.get("event") == name:
                    out.append(rec)
        return out

    def metrics(self) -> str:
        """The relay's ``/metrics`` page (Prometheus text)."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
        return body.decode()

    def metric(self, sample: str) -> float:
        """One sample's value, e.g. ``'beacon_proxy_smtp_auth_total{result="failure"}'``
        (0 when the page does not have it)."""
        match = re.search(rf"^{re.escape(sample)} (\S+)$", self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    @contextlib.contextmanager
    def smtp(self) -> Iterator[smtplib.SMTP]:
        client = smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.quit()

    def send(self, sender: str, recipients: list[str], data: bytes) -> str:
        """Send one message; returns the queue id from the 250 reply."""
        with self.smtp() as client:
            client.ehlo("client.test")
            client.mail(sender)
            for rcpt in recipients:
                code, msg = client.rcpt(rcpt)
                assert code == 250, (code, msg)
            code, msg = client.data(data)
            assert code == 250, (code, msg)
            m = re.search(rb"queued as (\w+)", msg)
            assert m, msg
            return m.group(1).decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "beacon_proxy", *args, "--config", str(self.config_path)],
            cwd=self.workdir, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def _connectable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (a list of them: [dkim] keys)
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def _merge_toml(base: dict[str, dict[str, Any]], extra: str) -> str:
    """Base settings as TOML, with the test's own TOML text winning per key."""
    import tomllib

    override = tomllib.loads(extra)
    out = []
    for section in sorted(set(base) | set(override)):
        values = {**base.get(section, {}), **override.get(section, {})}
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items() if k not in tables]
        for name, table in tables.items():
            out.append(f"[{section}.{name}]")
            out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


PIXEL = '<img src="https://t.example.com/open?id=abc123" width="1" height="1">'


def newsletter(subject: str = "Our November news", n: int = 0, *, pixel: bool = True,
               list_id: str = "news.sender.example") -> bytes:
    """A small multipart/alternative newsletter (CRLF line ends), with a tracking pixel."""
    html = (
        "<!DOCTYPE html><html><body><table><tr><td>"
        "<h1>News</h1><p>Price: 5 &euro; &mdash; caf\u00e9</p>"
        + (PIXEL if pixel else '<img src="https://cdn.example.com/logo.png" width="200">')
        + "</td></tr></table>\n.leading dot line\n</body></html>"
    )
    text = f"""From: News <news@sender.example>
To: subscribers@sender.example
Subject: {subject} #{n}
Message-ID: <news-{n}-{time.time_ns()}@sender.example>
List-Id: Sender news <{list_id}>
Date: Sat, 28 Nov 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

News. Price: 5 \u20ac, caf\u00e9.
.leading dot line

--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

{quopri.encodestring(html.encode("utf-8")).decode("ascii")}
--b1--
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def preference_link(copy: bytes) -> str:
    """The recipient's preference link, from the copy's ``List-Unsubscribe``."""
    m = re.search(rb"^List-Unsubscribe: <([^>]+)>", copy, re.MULTILINE)
    assert m, copy[:300]
    return m.group(1).decode()


def with_footer(original: bytes, copy: bytes) -> bytes:
    """``original`` with the footer the relay adds, carrying the link ``copy`` carries:
    what a copy is (after :func:`strip_trace`) when the beacon step changed nothing."""
    from beacon_proxy.consent.policy import Policy
    from beacon_proxy.rewrite.footer import Footer
    from beacon_proxy.rewrite.step import Copy, Recipient
    from beacon_proxy.spool.envelope import Envelope

    link = preference_link(copy)
    rcpt = Recipient(Envelope("Q", "s@example.org", ("r@example.org",)), "r@example.org",
                     Policy.REFUSED)
    return Footer(lambda r: link)(Copy(original), rcpt).data


def strip_trace(data: bytes) -> bytes:
    """The message without what the relay put in front of it: the first (our)
    ``Received`` header, then our ``List-Unsubscribe`` and ``List-Unsubscribe-Post``."""
    assert data.startswith(b"Received: "), data[:80]
    lines = data.split(b"\r\n")
    i = 1
    while lines[i].startswith((b"\t", b" ")):
        i += 1
    if lines[i].startswith(b"List-Unsubscribe: <"):
        i += 1
        while lines[i].startswith((b"\t", b" ")):
            i += 1
        assert lines[i] == b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", lines[i]
        i += 1
    return b"\r\n".join(lines[i:])


def stored_counts(tmp_path: Path) -> dict[str, int]:
    """The dashboard's counts a relay of ``tmp_path`` stored, summed over the hours:
    ``{"received": 8, "vendor:Mailchimp": 2, ...}``."""
    url = DEFAULT_STORE or f"sqlite:///{tmp_path / 'var' / 'beacon-proxy.db'}"

    async def counts() -> dict[str, int]:
        async with open_store(url) as store:
            out: dict[str, int] = {}
            for _, name, value in await store.stats_since("2000-01-01T00"):
                out[name] = out.get(name, 0) + value
            return out

    return asyncio.run(counts())
