"""Upstream faults, one per test, against the real delivery path.

Scheduler, spool and SmtpCourier are the real ones, the upstream is the scripted
one (:mod:`tests.deliver.smtppeer`).  Each test makes the fault happen, waits for
the log event the relay writes about it, checks what the spool kept, then lets
the upstream work again and asks for the retry (``Scheduler.retry_now``, as
``beacon-proxy queue retry`` does): every recipient ends delivered exactly
once, or bounced with a DSN; the only duplicate is the documented at-least-once
case (the upstream took the message but its final reply never came).  The
table of these faults is in ``docs/flow.md``.

Retries wait an hour unless asked for, so nothing happens behind a test's back.
Short SMTP timeouts are used only where the timeout is the event waited for;
the delivery that follows runs in a restarted scheduler with a long timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.consent.policy import DefaultConsent, Policy
from beacon_proxy.deliver.courier import Courier
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.deliver.scheduler import Scheduler
from beacon_proxy.deliver.smtp import SmtpCourier, StartTls
from beacon_proxy.rewrite.step import TraceStep
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import Spool
from tests.deliver.smtppeer import Upstream
from tests.deliver.test_dsn import parse, status_blocks
from tests.deliver.test_smtp import closed_port

DATA = b"From: s@example.org\r\nSubject: news\r\nMessage-ID: <m1@example.org>\r\n\r\nhello\r\n"
SENDER = "s@example.org"
WAIT = 30.0  # seconds: a bound on waiting for an event, never a duration relied on
HOUR = RetryPolicy(3600, 3600, 86400)


@dataclass
class Relay:
    """A scheduler with a real SMTP courier, on a spool that outlives restarts."""

    spool: Spool
    caplog: pytest.LogCaptureFixture
    port: int = 0
    starttls: StartTls = "off"
    scheduler: Scheduler | None = None
    couriers: list[SmtpCourier] = field(default_factory=list)

    async def start(self, port: int | None = None, *, timeout: float = 30.0,
                    data_timeout: float | None = None) -> Relay:
        self.port = port or self.port

        def courier() -> Courier:
            c = SmtpCourier("127.0.0.1", self.port, starttls=self.starttls, tls_verify=False,
                            timeout=timeout, helo_name="relay.test",
                            data_timeout=data_timeout)
            self.couriers.append(c)
            return c

        self.scheduler = Scheduler(self.spool, courier, TraceStep("relay.test"),
                                   DefaultConsent(Policy.REFUSED), HOUR, concurrency=1,
                                   hostname="relay.test")
        await self.scheduler.start()
        return self

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop(5)
            self.scheduler = None

    async def restart(self, *, timeout: float = 30.0) -> None:
        """Stop, then start on the same spool (its deferred messages are recovered)."""
        await self.stop()
        await self.start(timeout=timeout)

    async def send(self, *rcpts: str) -> str:
        assert self.scheduler is not None
        env = Envelope(new_queue_id(), SENDER, rcpts, client_address="127.0.0.1",
                       size=len(DATA), message_id="<m1@example.org>")
        await self.scheduler.enqueue(env, DATA)
        return env.queue_id

    async def send_until(self, name: str, *rcpts: str,
                         count: int | None = None) -> tuple[str, list[dict[str, Any]]]:
        """Send to ``rcpts``; the queue id and its first ``count`` ``name`` events
        (one per recipient unless said)."""
        queue_id = await self.send(*rcpts)
        return queue_id, await self.until(name, queue_id, count or len(rcpts))

    def events(self, name: str, queue_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for record in self.caplog.records:
            fields = getattr(record, "fields", None)
            if fields is not None and record.getMessage() == name and (
                    queue_id is None or fields.get("queue_id") == queue_id):
                out.append(fields)
        return out

    async def until(self, name: str, queue_id: str, count: int = 1) -> list[dict[str, Any]]:
        """The ``name`` events for ``queue_id``, once there are ``count`` of them."""
        async def poll() -> list[dict[str, Any]]:
            while len(found := self.events(name, queue_id)) < count:
                await asyncio.sleep(0.01)
            return found

        return await asyncio.wait_for(poll(), WAIT)

    async def retry(self, queue_id: str) -> None:
        """Ask for the retry (as ``beacon-proxy queue retry`` does) and wait for the end."""
        assert self.scheduler is not None
        assert self.scheduler.retry_now(queue_id) == 1
        await self.until("removed", queue_id)

    def states(self, queue_id: str) -> list[tuple[str, str]]:
        """What the spool holds on disk: (state, last reply) per recipient."""
        entry = self.spool.find_sync(queue_id)
        assert entry is not None, f"{queue_id} is not queued"
        return [(r.state, r.reply) for r in entry.recipients]


@pytest.fixture
async def relay(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Relay]:
    caplog.set_level(logging.INFO, logger="beacon_proxy.relay")
    spool = Spool(tmp_path / "spool")
    spool.open()
    r = Relay(spool, caplog)
    yield r
    await r.stop()
    spool.close()


def copies(upstream: Upstream, *rcpts: str) -> list[int]:
    return [len(upstream.to(r)) for r in rcpts]


# -- no session ------------------------------------------------------------------

async def test_connection_refused_defers_everyone_then_delivers_once(relay: Relay) -> None:
    await relay.start(closed_port())
    qid, deferred = await relay.send_until("deferred", "a@example.net", "b@example.net")
    refused = f"451 4.4.1 connection to 127.0.0.1:{relay.port} failed: Connection refused"
    assert [(e["recipient"], e["reply"], e["attempt"]) for e in deferred] == [
        ("a@example.net", refused, 1), ("b@example.net", refused, 1)]  # b not even tried
    assert relay.states(qid) == [("deferred", refused)] * 2
    up = await Upstream(port=relay.port).start()  # the upstream comes back
    try:
        await relay.retry(qid)
        assert copies(up, "a@example.net", "b@example.net") == [1, 1]
        assert [e["attempt"] for e in relay.events("delivered", qid)] == [2, 2]
    finally:
        await up.stop()
    assert relay.spool.find_sync(qid) is None


async def test_slow_greeting_times_out_and_defers(relay: Relay, upstream: Upstream) -> None:
    upstream.script("greeting", "hold")
    await relay.start(upstream.port, timeout=1.0)  # the timeout is the event waited for
    qid, (deferred,) = await relay.send_until("deferred", "a@example.net")
    timed_out = f"451 4.4.1 connection to 127.0.0.1:{upstream.port} failed: timed out"
    assert deferred["reply"] == timed_out
    assert relay.states(qid) == [("deferred", timed_out)]
    assert upstream.messages == []
    await relay.restart()
    await relay.retry(qid)
    assert copies(upstream, "a@example.net") == [1]
    assert upstream.faults == [("greeting", "hold")]


# -- faults in the transaction -----------------------------------------------------

async def test_dropped_during_data_is_deferred_and_sent_once(relay: Relay,
                                                             upstream: Upstream) -> None:
    await relay.start(upstream.port)
    upstream.script("DATA", "drop", rcpt="a@example.net")
    qid, deferred = await relay.send_until("deferred", "a@example.net", "b@example.net")
    lost = f"451 4.4.2 lost connection with 127.0.0.1:{upstream.port} while sending DATA"
    assert {e["reply"] for e in deferred} == {lost}  # a site failure: b waits too
    assert relay.states(qid) == [("deferred", lost)] * 2
    assert upstream.messages == []  # the final dot never arrived
    await relay.retry(qid)
    assert copies(upstream, "a@example.net", "b@example.net") == [1, 1]


@pytest.mark.parametrize("stage", ["MAIL", "RCPT"])
async def test_421_mid_session_defers_the_rest_and_reconnects(relay: Relay, upstream: Upstream,
                                                              stage: str) -> None:
    await relay.start(upstream.port)
    upstream.script(stage, "421 4.3.2 closing: too busy")
    qid, deferred = await relay.send_until("deferred", "a@example.net", "b@example.net")
    assert [(e["recipient"], e["reply"]) for e in deferred] == [
        ("a@example.net", "421 4.3.2 closing: too busy"),
        ("b@example.net", "421 4.3.2 closing: too busy")]
    assert relay.states(qid) == [("deferred", "421 4.3.2 closing: too busy")] * 2
    assert upstream.connections == 1  # b was not tried on a closing server
    await relay.retry(qid)
    assert copies(upstream, "a@example.net", "b@example.net") == [1, 1]
    assert upstream.connections == 2


async def test_452_on_some_recipients_retries_only_those(relay: Relay,
                                                         upstream: Upstream) -> None:
    await relay.start(upstream.port)
    upstream.script("RCPT", "452 4.5.3 too many recipients", rcpt="b@example.net")
    qid, (deferred,) = await relay.send_until("deferred", "a@example.net", "b@example.net",
                                              "c@example.net", count=1)
    assert (deferred["recipient"], deferred["reply"]) == (
        "b@example.net", "452 4.5.3 too many recipients")
    assert [e["recipient"] for e in relay.events("delivered", qid)] == [
        "a@example.net", "c@example.net"]
    assert [s for s, _ in relay.states(qid)] == ["delivered", "deferred", "delivered"]
    await relay.retry(qid)
    assert copies(upstream, "a@example.net", "b@example.net", "c@example.net") == [1, 1, 1]
    assert [(e["recipient"], e["attempt"]) for e in relay.events("delivered", qid)] == [
        ("a@example.net", 1), ("c@example.net", 1), ("b@example.net", 2)]


async def test_5xx_after_data_bounces_that_recipient_with_a_dsn(relay: Relay,
                                                                upstream: Upstream) -> None:
    await relay.start(upstream.port)
    upstream.script("dot", "554 5.7.1 content rejected", rcpt="b@example.net")
    qid, (bounced,) = await relay.send_until("bounced", "a@example.net", "b@example.net",
                                             count=1)
    assert (bounced["recipient"], bounced["reply"], bounced["status"], bounced["expired"]) == (
        "b@example.net", "554 5.7.1 content rejected", "5.7.1", False)
    await relay.until("removed", qid)
    await relay.until("delivered", bounced["dsn_queue_id"])
    assert copies(upstream, "a@example.net", "b@example.net") == [1, 0]
    (dsn,) = upstream.to(SENDER)
    assert dsn.mail_from == "<>"
    msg = parse(dsn.content)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    per_message, *per_rcpt = status_blocks(msg)
    assert per_message["X-Beacon-Proxy-Queue-ID"] == qid
    assert len(per_rcpt) == 1  # a was delivered: not in the report
    fields = per_rcpt[0]
    assert (fields["Final-Recipient"], fields["Action"], fields["Status"],
            fields["Remote-MTA"], fields["Diagnostic-Code"]) == (
        "rfc822; b@example.net", "failed", "5.7.1", "dns; 127.0.0.1",
        "smtp; 554 5.7.1 content rejected")


# -- TLS -------------------------------------------------------------------------

async def test_tls_handshake_failure_when_required_defers_nothing_in_clear(
        relay: Relay, tls_upstream: Upstream) -> None:
    relay.starttls = "required"
    await relay.start(tls_upstream.port)
    tls_upstream.script("STARTTLS", "garbage")
    qid, deferred = await relay.send_until("deferred", "a@example.net", "b@example.net")
    reply = deferred[0]["reply"]
    assert reply.startswith(f"451 4.7.5 TLS handshake with 127.0.0.1:{tls_upstream.port} "
                            "failed: ")
    assert relay.states(qid) == [("deferred", reply)] * 2
    assert tls_upstream.messages == []  # never sent in clear text
    assert tls_upstream.connections == 1  # a failure of the site: b waits without a try
    await relay.retry(qid)
    assert copies(tls_upstream, "a@example.net", "b@example.net") == [1, 1]
    assert all(m.tls for m in tls_upstream.messages)


async def test_tls_handshake_failure_when_opportunistic_sends_in_clear_at_once(
        relay: Relay, tls_upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    """As Postfix's "may" level: a failed handshake is retried without TLS."""
    relay.starttls = "opportunistic"
    await relay.start(tls_upstream.port)
    tls_upstream.script("STARTTLS", "garbage")
    qid = await relay.send("a@example.net")
    await relay.until("removed", qid)
    [copy] = tls_upstream.to("a@example.net")
    assert not copy.tls
    assert relay.events("deferred", qid) == []
    assert tls_upstream.connections == 2  # the failed handshake, then one in clear text
    assert any("TLS handshake" in r.getMessage() and "clear text" in r.getMessage()
               for r in caplog.records if r.name == "beacon_proxy.deliver.smtp")


# -- the final reply never comes ---------------------------------------------------------

@pytest.mark.parametrize("step", ["hang", "drop"])
async def test_no_reply_to_the_final_dot_defers_and_may_duplicate(
        relay: Relay, upstream: Upstream, step: str) -> None:
    """The documented at-least-once case: the upstream has the message, we cannot know."""
    upstream.script("dot", step, rcpt="a@example.net")
    # "hang": data_timeout is the event waited for; the other steps' timeout is far longer
    # (it is not the one that applies to the final dot).
    await relay.start(upstream.port, timeout=600.0, data_timeout=2.0)
    qid, deferred = await relay.send_until("deferred", "a@example.net", "b@example.net")
    what = "timeout" if step == "hang" else "lost connection"
    reply = f"451 4.4.2 {what} with 127.0.0.1:{upstream.port} while sending DATA"
    assert [e["reply"] for e in deferred] == [reply, reply]
    assert relay.states(qid) == [("deferred", reply)] * 2
    assert copies(upstream, "a@example.net", "b@example.net") == [1, 0]
    await relay.restart()
    await relay.retry(qid)
    assert copies(upstream, "a@example.net", "b@example.net") == [2, 1]
    assert [e["recipient"] for e in relay.events("delivered", qid)] == [
        "a@example.net", "b@example.net"]
