"""PIPELINING (RFC 2920) on the way out, and one connection for many messages.

The courier tests in ``test_smtp.py`` and ``test_faults.py`` run every case against
an upstream that offers PIPELINING and one that does not (the ``upstream`` fixture);
these add what only a pipelining client shows: the group goes out before any reply
is awaited, replies that come together or in fragments are read in order, the
refusal cases, and the connection kept across messages, through the courier and
through the scheduler's workers.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtplib import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.consent.policy import DefaultConsent, Policy
from beacon_proxy.deliver.courier import Courier, Outcome
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.deliver.scheduler import Scheduler
from beacon_proxy.deliver.smtp import _PLAIN_ADDRESS, SmtpCourier, _path, _Replies, wire_data
from beacon_proxy.metrics import UPSTREAM_CONNECTIONS
from beacon_proxy.rewrite.step import TraceStep
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import Spool
from tests.deliver.smtppeer import Upstream
from tests.deliver.test_smtp import MESSAGE, bounded, make_courier, send

WAIT = 30.0  # seconds: a bound on waiting for an event, never a duration relied on


# -- a strict pipelining peer ---------------------------------------------------------

@dataclass
class Strict:
    """A raw SMTP server that answers MAIL, RCPT and DATA only once all three are in
    (a client waiting for each reply would get none), with the replies given, all in
    one write; then reads the data up to the final dot and answers ``dot``."""

    rcpt_reply: bytes = b"250 2.1.5 ok\r\n"
    data_reply: bytes = b"354 go ahead\r\n"
    dot: bytes = b"250 2.0.0 queued\r\n"
    stray: bytes = b""  # written once before the next group's replies (a late extra reply)
    connections: int = 0
    groups: list[bytes] = field(default_factory=list)  # MAIL..DATA as received
    bodies: list[bytes] = field(default_factory=list)  # DATA sections, final dot included
    resets: int = 0
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> Strict:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await bounded(self.server.wait_closed())

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 strict.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-strict.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    group = line + await reader.readuntil(b"DATA\r\n")
                    self.groups.append(group)
                    writer.write(self.stray + b"250 2.1.0 ok\r\n" + self.rcpt_reply
                                 + self.data_reply)
                    self.stray = b""
                    if self.data_reply.startswith(b"354"):
                        body = b""
                        while not body.endswith(b"\n.\r\n") and body != b".\r\n":
                            body += await reader.readuntil(b"\r\n")
                        self.bodies.append(body)
                        writer.write(self.dot)
                elif verb == b"RSET":
                    self.resets += 1
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    break
                else:
                    writer.write(b"502 5.5.2 not here\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def strict() -> AsyncIterator[Strict]:
    peer = await Strict().start()
    yield peer
    await peer.stop()


async def test_group_is_written_before_any_reply_is_awaited(strict: Strict) -> None:
    c = make_courier(strict.port)
    try:
        data = b"Subject: x\r\n\r\n.dot\r\nline\r\n"
        assert (await send(c, data=data)).ok
        assert (await send(c, "c@example.net", data=data)).ok
    finally:
        await bounded(c.close())
    assert strict.groups == [
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
    ]
    assert strict.bodies == [wire_data(data)] * 2
    assert strict.connections == 1
    assert strict.resets == 0  # none after a successful transaction (RFC 5321 needs none)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_proven_copy_goes_out_in_pieces_with_the_same_bytes(loop: str) -> None:
    """A copy with proven line ends and periods (``crlf``, ``dots``) is written as views
    of it (``wire_pieces``: ``writelines``, uvloop's ``writev``), with its periods
    stuffed: the upstream reads what ``wire_data`` makes, on either loop."""
    data = (b"Subject: x\r\n\r\n.dot\r\nline\r\n..two\r\n" + (b"x" * 990 + b"\r\n") * 200
            + b".\r\n")
    dots = tuple(i for i in range(len(data)) if data[i:i + 1] == b"."
                 and (i == 0 or data[i - 2:i] == b"\r\n"))
    assert len(dots) == 3

    async def run() -> list[bytes]:
        peer = await Strict().start()
        c = make_courier(peer.port)
        try:
            for _ in range(2):
                assert (await send(c, data=data, crlf=True, dots=dots)).ok
        finally:
            await bounded(c.close())
            await peer.stop()
        return peer.bodies

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        bodies = uvloop.run(run())
    else:
        bodies = asyncio.run(run())
    assert bodies == [wire_data(data)] * 2
    assert wire_data(data).count(b"\r\n..") == 3


async def test_stepwise_path_never_pipelines(strict: Strict) -> None:
    """``pipelining=False`` (the benchmark's old path) waits for each reply: the strict
    peer, which answers only a whole group, gives it none, and the wait times out."""
    c = SmtpCourier("127.0.0.1", strict.port, starttls="off", tls_verify=False, timeout=0.5,
                    helo_name="relay.test", pipelining=False)
    try:
        result = await send(c)
    finally:
        await bounded(c.close())
    assert (result.outcome, result.status) == (Outcome.TEMPORARY, "4.4.2")
    assert result.reply.startswith("451 4.4.2 timeout with")
    assert result.reply.endswith("while sending MAIL FROM")


async def test_refused_recipient_with_data_accepted_ends_the_data_at_once(
        strict: Strict) -> None:
    """A server that says 354 although it refused the only recipient gets a lone dot."""
    strict.rcpt_reply = b"550 5.1.1 no such user\r\n"
    strict.dot = b"554 5.5.1 no valid recipients\r\n"
    c = make_courier(strict.port)
    try:
        result = await send(c)
        assert (result.outcome, result.reply) == (Outcome.PERMANENT, "550 5.1.1 no such user")
        strict.rcpt_reply, strict.dot = b"250 ok\r\n", b"250 2.0.0 queued\r\n"
        assert (await send(c)).ok  # the connection is still in step
    finally:
        await bounded(c.close())
    assert strict.bodies[0] == b".\r\n"
    assert strict.bodies[1] == wire_data(MESSAGE)
    assert strict.connections == 1
    assert strict.resets == 1  # after the refusal, as without pipelining


@pytest.mark.parametrize("stray", [b"250 2.0.0 queued again\r\n",
                                   b"250-2.0.0 one\r\n250 2.0.0 two\r\n",
                                   b"250 a\r\n250 b\r\n"])
async def test_a_late_extra_reply_never_makes_a_message_delivered(strict: Strict,
                                                                  stray: bytes) -> None:
    """An upstream that sends a reply nobody asked for, arriving with the next group's
    replies, shifts them: the transaction must fail (temporarily, on a new connection
    next), never count a message delivered whose data was not sent."""
    c = make_courier(strict.port)
    try:
        assert (await send(c)).ok
        strict.stray = stray
        result = await send(c)
        assert (result.outcome, result.status) == (Outcome.TEMPORARY, "4.5.0")
        assert len(strict.bodies) == 1  # the second message's data never went out
        assert (await send(c)).ok  # a new connection, in step
    finally:
        await bounded(c.close())
    assert strict.connections == 2
    assert len(strict.bodies) == 2


async def test_malformed_reply_in_a_group_drops_the_connection(strict: Strict) -> None:
    strict.rcpt_reply = b"hello there\r\n"
    c = make_courier(strict.port)
    try:
        result = await send(c)
        assert (result.outcome, result.status) == (Outcome.TEMPORARY, "4.5.0")
        assert result.reply.endswith("to RCPT TO: -1 Malformed SMTP response line: hello there")
        strict.rcpt_reply = b"250 ok\r\n"
        assert (await send(c)).ok
    finally:
        await bounded(c.close())
    assert strict.connections == 2


async def test_refused_data_keeps_the_connection(strict: Strict) -> None:
    strict.data_reply = b"554 5.7.1 not from you\r\n"
    c = make_courier(strict.port)
    try:
        result = await send(c)
        assert (result.outcome, result.reply) == (Outcome.PERMANENT, "554 5.7.1 not from you")
        strict.data_reply = b"354 go ahead\r\n"
        assert (await send(c)).ok
    finally:
        await bounded(c.close())
    assert (strict.connections, strict.resets) == (1, 1)


# -- refusals and faults against aiosmtpd, both paths --------------------------------

@pytest.fixture
async def courier(upstream: Upstream) -> AsyncIterator[SmtpCourier]:
    c = make_courier(upstream.port)
    yield c
    await bounded(c.close())


@pytest.mark.parametrize(("reply", "outcome"), [
    ("550 5.7.1 sender refused", Outcome.PERMANENT),
    ("451 4.3.0 sender deferred", Outcome.TEMPORARY),
])
async def test_refused_mail_keeps_the_connection(upstream: Upstream, courier: SmtpCourier,
                                                 reply: str, outcome: Outcome) -> None:
    upstream.script("MAIL", reply)
    result = await send(courier)
    assert (result.outcome, result.reply) == (outcome, reply)
    assert upstream.messages == []
    assert (await send(courier)).ok
    assert upstream.connections == 1


async def test_refused_data_command(upstream: Upstream, courier: SmtpCourier) -> None:
    upstream.script("DATA", "554 5.7.1 no thanks")
    result = await send(courier)
    assert (result.outcome, result.reply) == (Outcome.PERMANENT, "554 5.7.1 no thanks")
    assert (await send(courier)).ok
    assert [m.content for m in upstream.messages] == [MESSAGE]
    assert upstream.connections == 1


async def test_421_to_mail_on_a_fresh_connection(upstream: Upstream,
                                                 courier: SmtpCourier) -> None:
    upstream.script("MAIL", "421 4.3.2 going down")
    result = await send(courier)
    assert (result.outcome, result.reply) == (Outcome.TEMPORARY, "421 4.3.2 going down")
    assert (await send(courier)).ok
    assert upstream.connections == 2


async def test_421_to_mail_on_a_reused_connection_is_retried_afresh(
        upstream: Upstream, courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    upstream.script("MAIL", "421 4.4.2 idle too long")
    assert (await send(courier, "c@example.net")).ok
    assert upstream.connections == 2
    assert [m.rcpt_tos for m in upstream.messages] == [["b@example.net"], ["c@example.net"]]


async def test_connection_lost_at_rcpt(upstream: Upstream, courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    upstream.script("RCPT", "drop")
    result = await send(courier)
    assert (result.outcome, result.status) == (Outcome.TEMPORARY, "4.4.2")
    assert result.reply.endswith("while sending RCPT TO")  # not retried: MAIL was accepted
    assert len(upstream.messages) == 1
    assert (await send(courier)).ok
    assert upstream.connections == 2


async def test_connection_lost_after_354(upstream: Upstream, courier: SmtpCourier) -> None:
    upstream.script("DATA", "drop")
    result = await send(courier)
    assert (result.outcome, result.status) == (Outcome.TEMPORARY, "4.4.2")
    assert result.reply.endswith("while sending DATA")
    assert upstream.messages == []


async def test_options_go_with_the_pipelined_mail(upstream: Upstream,
                                                  courier: SmtpCourier) -> None:
    data = "Subject: h\u00e9\r\n\r\nb\u00e9\r\n".encode()
    result = await bounded(courier.deliver("a@example.org", "\u00fc@example.net", data,
                                           smtputf8=True, body_type="8BITMIME"))
    assert result.ok
    [msg] = upstream.messages
    assert sorted(msg.mail_options) == sorted(
        [f"SIZE={len(data)}", "SMTPUTF8", "BODY=8BITMIME"])
    assert (msg.rcpt_tos, msg.content) == (["\u00fc@example.net"], data)


async def test_many_messages_one_connection(upstream: Upstream, courier: SmtpCourier) -> None:
    offered = "yes" if upstream.pipelining else "no"
    before = UPSTREAM_CONNECTIONS.labels(offered)._value.get()
    bodies = [b"Subject: %d\r\n\r\n.%d\r\n" % (n, n) for n in range(50)]
    for n, body in enumerate(bodies):
        assert (await send(courier, f"r{n}@example.net", data=body)).ok
    assert upstream.connections == 1
    assert UPSTREAM_CONNECTIONS.labels(offered)._value.get() == before + 1
    assert [m.content for m in upstream.messages] == bodies
    assert [m.rcpt_tos for m in upstream.messages] == [[f"r{n}@example.net"]
                                                       for n in range(50)]


async def test_quoted_local_part_and_bad_address(upstream: Upstream,
                                                 courier: SmtpCourier) -> None:
    assert (await send(courier, '"a b"@example.net')).ok  # quoted: the space may be there
    assert len(upstream.messages) == 1
    result = await send(courier, "a b@example.net")
    assert (result.outcome, result.code, result.status) == (Outcome.PERMANENT, 501, "5.1.3")
    assert "bad address syntax" in result.reply
    assert len(upstream.messages) == 1


# -- the scheduler's workers: one connection each, closed when idle ------------------

DATA = b"From: s@example.org\r\nSubject: news\r\n\r\nhello\r\n.\r\n"


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_scheduler_workers_keep_their_connections(spool: Spool, upstream: Upstream,
                                                        concurrency: int) -> None:
    """Many messages through the real scheduler: at most one connection per worker."""
    couriers: list[SmtpCourier] = []

    def courier() -> Courier:
        c = make_courier(upstream.port, timeout=30)
        couriers.append(c)
        return c

    scheduler = Scheduler(spool, courier, TraceStep("relay.test"),
                          DefaultConsent(Policy.REFUSED), RetryPolicy(3600, 3600, 86400),
                          concurrency=concurrency, hostname="relay.test", idle_timeout=3600)
    await scheduler.start()
    try:
        for n in range(60):
            env = Envelope(new_queue_id(), "s@example.org", (f"r{n}@example.net",),
                           client_address="127.0.0.1", size=len(DATA))
            await scheduler.enqueue(env, DATA)

        async def delivered() -> None:
            while len(upstream.messages) < 60 or scheduler.queue_size():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(delivered(), WAIT)
    finally:
        await scheduler.stop(5)
    assert 1 <= upstream.connections <= concurrency
    assert sorted(m.rcpt_tos[0] for m in upstream.messages) == sorted(
        f"r{n}@example.net" for n in range(60))
    assert all(m.content.endswith(b"\r\n\r\nhello\r\n.\r\n") for m in upstream.messages)


async def test_idle_worker_says_quit_and_reconnects(spool: Spool, upstream: Upstream) -> None:
    scheduler = Scheduler(spool, lambda: make_courier(upstream.port, timeout=30),
                          TraceStep("relay.test"), DefaultConsent(Policy.REFUSED),
                          RetryPolicy(3600, 3600, 86400), concurrency=1,
                          hostname="relay.test", idle_timeout=0.2)
    await scheduler.start()

    async def until(value: Callable[[], int], count: int) -> None:
        while value() != count:
            await asyncio.sleep(0.01)

    def delivered() -> int:
        return len(upstream.messages)

    def quits() -> int:
        return upstream.quits

    try:
        for n in range(2):
            env = Envelope(new_queue_id(), "s@example.org", (f"r{n}@example.net",),
                           client_address="127.0.0.1", size=len(DATA))
            await scheduler.enqueue(env, DATA)
            await asyncio.wait_for(until(delivered, n + 1), WAIT)
            # idle: the worker says QUIT (waited for, however long the machine takes)
            await asyncio.wait_for(until(quits, n + 1), WAIT)
    finally:
        await scheduler.stop(5)
    assert upstream.connections == 2  # the second message opened a new one


def test_idle_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        Scheduler(Spool(tmp_path), lambda: make_courier(1),
                  TraceStep("relay.test"), DefaultConsent(Policy.REFUSED),
                  RetryPolicy(3600, 3600, 86400), concurrency=1, hostname="relay.test",
                  idle_timeout=0)


# -- reading replies --------------------------------------------------------------

class _Inner(SMTPProtocol):
    def __init__(self) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self.lost: list[Exception | None] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


REPLIES = (b"250-first line\r\n250 second line\r\n251 2.1.5 will forward\r\n"
           b"354 End data with <CR><LF>.<CR><LF>\r\n")


@given(st.lists(st.integers(1, len(REPLIES)), max_size=8))
def test_replies_in_any_fragments(cuts: list[int]) -> None:
    async def run() -> list[tuple[int, str]]:
        replies = _Replies(_Inner())
        points = sorted({0, *cuts, len(REPLIES)})
        for a, b in itertools.pairwise(points):
            replies.data_received(REPLIES[a:b])
        return [tuple(await replies.next(1)) for _ in range(3)]  # type: ignore[misc]

    assert asyncio.run(run()) == [(250, "first line\nsecond line"),
                                  (251, "2.1.5 will forward"),
                                  (354, "End data with <CR><LF>.<CR><LF>")]


async def test_reply_waited_for_arrives_later() -> None:
    replies = _Replies(_Inner())
    later = asyncio.ensure_future(replies.next(WAIT))
    await asyncio.sleep(0)
    assert not later.done()
    replies.data_received(b"250 ok\r\n")
    assert tuple(await bounded(later)) == (250, "ok")


async def test_replies_then_connection_lost() -> None:
    inner = _Inner()
    replies = _Replies(inner)
    replies.data_received(b"250 ok\r\n421 4.3.2 bye\r\n")
    replies.connection_lost(None)
    assert inner.lost == [None]  # aiosmtplib's protocol learns of it
    assert [r.code for r in (await replies.next(1), await replies.next(1))] == [250, 421]
    with pytest.raises(SMTPServerDisconnected):
        await replies.next(1)


async def test_eof_is_a_disconnect() -> None:
    replies = _Replies(_Inner())
    assert replies.eof_received() is False
    with pytest.raises(SMTPServerDisconnected, match="EOF"):
        await replies.next(1)


async def test_no_reply_times_out() -> None:
    with pytest.raises(SMTPReadTimeoutError):
        await _Replies(_Inner()).next(0.01)


def _live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [t for t in scheduled if not t.cancelled()]


async def test_a_reply_in_time_leaves_no_timer_behind() -> None:
    """The wait's timer goes with the wait: a reply that came in time (or a wait that
    found one at once) leaves nothing that could fail a later wait."""
    loop = asyncio.get_running_loop()
    before = len(_live_timers(loop))
    replies = _Replies(_Inner())
    loop.call_soon(replies.data_received, b"250 ok\r\n")
    assert (await replies.next(3600)).code == 250
    replies.data_received(b"354 go\r\n")
    assert (await replies.next(3600)).code == 354
    assert len(_live_timers(loop)) == before


async def test_a_cancelled_wait_cancels_its_timer_and_the_next_wait_works() -> None:
    loop = asyncio.get_running_loop()
    before = len(_live_timers(loop))
    replies = _Replies(_Inner())
    waiting = asyncio.ensure_future(replies.next(3600))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(_live_timers(loop)) == before
    replies.data_received(b"250 ok\r\n")
    assert tuple(await replies.next(WAIT)) == (250, "ok")


async def test_a_timed_out_wait_then_a_late_reply() -> None:
    """The timeout fails that wait only; a reply that comes afterwards is still read in
    order by the next wait (the courier drops the connection after a timeout anyway)."""
    replies = _Replies(_Inner())
    with pytest.raises(SMTPReadTimeoutError, match="Timed out"):
        await replies.next(0.001)
    replies.data_received(b"250 late\r\n")
    assert tuple(await replies.next(WAIT)) == (250, "late")


@pytest.mark.parametrize(("data", "message"), [
    (b"hello there\r\n", "Malformed SMTP response line: hello there"),
    (b"250-" + b"x" * 9000 + b"\r\n", "Response too long"),
    (b"250-x\r\n" * 6000, "Response too long"),
    (b"2" * 40000, "Response too long"),
])
async def test_bad_replies_are_refused_as_aiosmtplib_refuses_them(data: bytes,
                                                                  message: str) -> None:
    replies = _Replies(_Inner())
    replies.data_received(data)
    with pytest.raises(SMTPResponseException) as caught:
        await replies.next(1)
    assert caught.value.code == -1
    assert re.sub(r"\s+$", "", caught.value.message) == message


# -- command lines ------------------------------------------------------------------

@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
def test_plain_address_path_is_what_aiosmtplib_writes(address: str) -> None:
    assert _path(address) == quote_address(address)


@pytest.mark.parametrize("address", [
    "", "a@b", '"a b"@example.net', "a..b@example.net", "a.@example.net",
    "user@[192.0.2.1]", "\u00fc@example.net", "a(comment)@example.net",
])
def test_other_paths_are_aiosmtplibs(address: str) -> None:
    assert _path(address) == quote_address(address)


def test_bad_path_raises_as_aiosmtplib_does() -> None:
    with pytest.raises(ValueError, match="not permitted"):
        _path("a b@example.net")


@pytest.mark.parametrize("pipelining", [True, False])
async def test_delivery_pipelining_setting_reaches_the_courier(
        strict: Strict, tmp_path: Path, pipelining: bool) -> None:
    """``[delivery] pipelining = false``: the strict peer (answering only whole groups)
    gets one command at a time and never answers."""
    from beacon_proxy.app import _courier_factory
    from beacon_proxy.config import load_config

    path = tmp_path / "beacon-proxy.toml"
    path.write_text(f'[delivery]\nupstream = "smtp://127.0.0.1:{strict.port}"\n'
                    f'starttls = "off"\ntimeout = 1\n'
                    f'pipelining = {str(pipelining).lower()}\n')
    c = _courier_factory(load_config(path, environ={}), "relay.test")()
    try:
        result = await bounded(c.deliver("a@example.org", "b@example.net", MESSAGE))
    finally:
        await bounded(c.close())
    assert result.ok is pipelining
    assert len(strict.groups) == int(pipelining)
