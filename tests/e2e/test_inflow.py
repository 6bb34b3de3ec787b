"""End-to-end: the real ``beacon-proxy serve`` slows a sender while its delivery is behind.

One delivery worker (``[delivery] concurrency = 1``: new transactions wait from 2
messages due), an upstream that holds its reply to the end of DATA until the test
lets it go: the first message is with the upstream, two more wait for the worker,
and the next client's ``MAIL FROM`` gets no reply until a message of the backlog is
taken (``[smtp] in_flow_delay`` long), or until the delay ran out (short).  Nothing is
refused; every message arrives once.  Each step waits for the event it needs (the
relay's ``/metrics``), never for a time.
"""

from __future__ import annotations

import asyncio
import smtplib
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.harness import ROOT, Proxy, Upstream, newsletter, wait_for

sys.path.insert(0, str(ROOT / "bench"))
from _postfix import PostfixHop, postfix_available  # bench/: a folder of scripts

pytestmark = pytest.mark.e2e

SENDER = "news@sender.example"
WAITING = "beacon_proxy_smtp_in_flow_waiting"


class HeldUpstream(Upstream):
    """The harness's capturing upstream, whose reply to the final dot waits for ``go``."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.arrived = threading.Semaphore(0)  # one per DATA that reached the upstream
        capture = self.handler.handle_DATA

        async def held(server: SMTP, session: Session, envelope: Envelope) -> str:
            self.arrived.release()
            while not self.go.is_set():  # (the relay's attempt waits meanwhile)
                await asyncio.sleep(0.01)
            return await capture(server, session, envelope)

        self.handler.handle_DATA = held  # type: ignore[method-assign]


@pytest.fixture
def held() -> Iterator[HeldUpstream]:
    upstream = HeldUpstream()
    upstream.start()
    yield upstream
    upstream.go.set()
    upstream.stop()


def _behind(tmp_path: Path, proxies: list[Proxy], held: HeldUpstream, smtp: str,
            backlog: int) -> tuple[Proxy, list[str]]:
    """A relay with one delivery worker (``[smtp]`` settings ``smtp``), its first message's
    copy held by the upstream, and ``backlog`` more queued behind it: their queue ids."""
    proxy = Proxy(tmp_path, f"[smtp]\n{smtp}\n[delivery]\nconcurrency = 1\nidle_timeout = 600",
                  upstream=held.port)
    proxies.append(proxy)
    proxy.start()
    ids = [proxy.send(SENDER, ["ann@example.net"], newsletter(n=1))]
    assert held.arrived.acquire(timeout=60), "the first copy never reached the upstream"
    ids += [proxy.send(SENDER, [f"r{n}@example.net"], newsletter(n=n))
            for n in range(2, 2 + backlog)]
    return proxy, ids


def _send_in_thread(proxy: Proxy, rcpt: str, n: int) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []

    def send() -> None:
        out.append(proxy.send(SENDER, [rcpt], newsletter(n=n)))

    thread = threading.Thread(target=send, name=f"client-{n}", daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("delay", ["60", "0.2"])
def test_a_new_transaction_waits_while_delivery_is_behind(
        tmp_path: Path, proxies: list[Proxy], held: HeldUpstream, delay: str) -> None:
    proxy, ids = _behind(tmp_path, proxies, held, f"in_flow_delay = {delay}", 2)
    assert proxy.metric(WAITING) == 0  # (those came before the backlog was 2)

    thread, late = _send_in_thread(proxy, "late@example.net", 4)
    if delay == "60":
        wait_for(lambda: proxy.metric(WAITING) == 1, 60, "the fourth MAIL FROM waiting")
        assert thread.is_alive() and not late  # not answered while delivery is behind
        held.go.set()  # the first copy is delivered; the worker takes the second
    thread.join(120)
    assert not thread.is_alive() and late, "the waiting transaction never went on"
    held.go.set()
    ids += late
    wait_for(lambda: len(held.messages) == 4, 60, "every message delivered")
    assert sorted(r for m in held.messages for r in m.rcpt_tos) == sorted(
        ["ann@example.net", "r2@example.net", "r3@example.net", "late@example.net"])

    received = {e["queue_id"]: e for e in proxy.events("received")}
    assert set(received) == set(ids)
    assert all("in_flow_delay" not in received[q] for q in ids[:3])
    waited = received[late[0]]["in_flow_delay"]
    outcome = "caught_up" if delay == "60" else "delay_passed"
    assert proxy.metric(
        f'beacon_proxy_smtp_in_flow_delays_total{{outcome="{outcome}"}}') == 1
    assert proxy.metric("beacon_proxy_smtp_in_flow_delay_seconds_total") == pytest.approx(
        waited, abs=0.01)
    if delay == "0.2":
        assert waited >= 0.19  # the delay ran out: the upstream was still holding
    assert proxy.metric(WAITING) == 0
    assert proxy.stop() == 0


def test_without_a_delay_nothing_waits(tmp_path: Path, proxies: list[Proxy],
                                       held: HeldUpstream) -> None:
    proxy, _ = _behind(tmp_path, proxies, held, "in_flow_delay = 0", 5)  # each answered at once
    assert proxy.metric('beacon_proxy_smtp_in_flow_delays_total{outcome="caught_up"}') == 0
    assert all("in_flow_delay" not in e for e in proxy.events("received"))
    held.go.set()
    wait_for(lambda: len(held.messages) == 6, 60, "every message delivered")
    assert proxy.stop() == 0


def test_a_client_that_hangs_up_while_it_waits_loses_nothing(
        tmp_path: Path, proxies: list[Proxy], held: HeldUpstream) -> None:
    """A transaction given up while its MAIL FROM waits frees its place; the next client
    is served once delivery catches up, and the queue holds just what was accepted."""
    proxy, _ = _behind(tmp_path, proxies, held, "in_flow_delay = 60", 2)
    client = smtplib.SMTP("127.0.0.1", proxy.smtp_port, timeout=30)
    client.ehlo("client.test")
    client.send(b"MAIL FROM:<news@sender.example>\r\n")  # no reply while behind
    wait_for(lambda: proxy.metric(WAITING) == 1, 60, "the MAIL FROM waiting")
    client.close()  # hangs up without waiting for the reply
    wait_for(lambda: proxy.metric(WAITING) == 0 and proxy.metric(
        "beacon_proxy_smtp_sessions") == 0, 60, "the wait given up with the connection")
    thread, late = _send_in_thread(proxy, "late@example.net", 4)
    wait_for(lambda: proxy.metric(WAITING) == 1, 60, "the next client waiting")
    held.go.set()
    thread.join(120)
    assert late, "the next client was never served"
    wait_for(lambda: len(held.messages) == 4, 60, "every accepted message delivered")
    assert len(proxy.events("received")) == 4
    assert proxy.metric('beacon_proxy_smtp_in_flow_delays_total{outcome="caught_up"}') == 1
    assert proxy.stop() == 0


@pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available()))
def test_a_postfix_in_front_of_two_workers_waits_and_loses_nothing(
        tmp_path: Path, proxies: list[Proxy], held: HeldUpstream) -> None:
    """The deployment the gate is for: an MTA's queue in front of the relay's worker
    processes (each gating on its own backlog), delivery held up behind them.  Postfix's
    client waits at the gate with its MAIL FROM (pipelined with RCPT and DATA), defers
    nothing, and every message it queued arrives once when delivery goes on."""
    count = 30
    proxy = Proxy(tmp_path, "[smtp]\nworkers = 2\nin_flow_delay = 60\n"
                  "[delivery]\nconcurrency = 1\nidle_timeout = 600", upstream=held.port)
    proxies.append(proxy)
    proxy.start()
    # Not tmp_path: pytest's base directory is 0700, and Postfix's daemons (user postfix)
    # must reach the queue below it.
    with tempfile.TemporaryDirectory(prefix="inflow-postfix-") as tmp:
        base = Path(tmp)
        base.chmod(0o711)
        with PostfixHop(base / "hop", proxy.smtp_port) as hop:
            with smtplib.SMTP("127.0.0.1", hop.port, timeout=30) as client:
                for n in range(count):  # into Postfix's queue, each at once
                    client.sendmail(SENDER, [f"r{n}@example.net"], newsletter(n=n))
            wait_for(lambda: proxy.metric(WAITING) >= 1, 120,
                     "a Postfix connection waiting at the gate")
            held.go.set()
            wait_for(lambda: len(held.messages) == count, 120, "every message delivered")
            maillog = base / "hop" / "maillog"
            wait_for(lambda: maillog.read_text().count("status=sent") == count, 60,
                     "Postfix's log of every message sent")
            log = maillog.read_text()
    assert "status=deferred" not in log and "status=bounced" not in log, log[-2000:]
    assert sorted(r for m in held.messages for r in m.rcpt_tos) == sorted(
        f"r{n}@example.net" for n in range(count))
    waits = sum(proxy.metric(f'beacon_proxy_smtp_in_flow_delays_total{{outcome="{o}"}}')
                for o in ("caught_up", "delay_passed"))
    assert waits >= 1
    assert len(proxy.events("received")) == count
    assert proxy.metric(WAITING) == 0
    assert proxy.stop() == 0
