"""SmtpCourier against a real (in-process) aiosmtpd upstream."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Literal, TypeVar, cast

import pytest
from aiosmtplib import SMTPResponseException
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.deliver.courier import Outcome, Result
from beacon_proxy.deliver.smtp import (
    SmtpCourier,
    _Replies,
    _reply_text,
    wire_data,
    wire_pieces,
)
from beacon_proxy.smtpd.data import canonical, unstuff
from tests.deliver.smtppeer import Upstream

T = TypeVar("T")
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"


async def bounded(aw: Awaitable[T], timeout: float = 10.0) -> T:
    return await asyncio.wait_for(aw, timeout)


def make_courier(port: int, *, starttls: Literal["required", "opportunistic", "off"] = "off",
                 tls_verify: bool = False, timeout: float = 5.0) -> SmtpCourier:
    return SmtpCourier("127.0.0.1", port, starttls=starttls, tls_verify=tls_verify,
                       timeout=timeout, helo_name="relay.test")


@pytest.fixture
async def courier(upstream: Upstream) -> AsyncIterator[SmtpCourier]:
    c = make_courier(upstream.port)
    yield c
    await bounded(c.close())


async def send(c: SmtpCourier, recipient: str = "b@example.net", data: bytes = MESSAGE,
               **kw: Any) -> Result:
    return await bounded(c.deliver("a@example.org", recipient, data, **kw))


# -- delivery and bytes -----------------------------------------------------------

async def test_delivers_exact_bytes_including_dot_lines(upstream: Upstream,
                                                        courier: SmtpCourier) -> None:
    data = (b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\n. \r\n"
            b"8bit \xc3\xa9\r\nlast line\r\n")
    result = await send(courier, data=data, body_type="8BITMIME")
    assert result == Result(Outcome.DELIVERED, 250, "250 2.0.0 Ok: queued as 4711", "2.0.0",
                            f"127.0.0.1:{upstream.port}")
    [msg] = upstream.messages
    assert msg.content == data
    assert (msg.mail_from, msg.rcpt_tos) == ("a@example.org", ["b@example.net"])
    assert "BODY=8BITMIME" in msg.mail_options
    assert f"SIZE={len(data)}" in msg.mail_options
    assert not msg.tls


SMUGGLED = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nx\r\n")


@pytest.mark.parametrize(
    "dot_line",
    [b"\r\n..\r\n", b"\n..\n", b"\n..\r\n", b"\r\n..\n",  # a stuffed "." line: content
     b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n\x00.\r\n"],  # smuggling attempts
)
async def test_received_dot_line_reaches_the_upstream_inside_one_message(
        upstream: Upstream, courier: SmtpCourier, dot_line: bytes) -> None:
    """smtpd's canonical bytes, sent on: a "." line is stuffed, so the next hop reads it all."""
    data = canonical(b"Subject: dots\r\n\r\nbody" + dot_line + SMUGGLED)
    assert (await send(courier, data=data)).ok
    await bounded(courier.close())
    [msg] = upstream.messages  # one message, not two
    assert msg.content == re.sub(rb"\r\n|\r|\n", b"\r\n", data)  # whole, not cut at the "."
    assert msg.content.endswith(b"\r\n" + SMUGGLED)
    assert msg.rcpt_tos == ["b@example.net"]


async def test_null_sender_is_sent_as_empty_reverse_path(upstream: Upstream,
                                                         courier: SmtpCourier) -> None:
    result = await bounded(courier.deliver("", "b@example.net", MESSAGE))
    assert result.ok
    assert upstream.messages[0].mail_from == "<>"


async def test_connection_is_reused(upstream: Upstream, courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    assert (await send(courier, "c@example.net")).ok
    assert upstream.connections == 1
    assert [m.rcpt_tos for m in upstream.messages] == [["b@example.net"], ["c@example.net"]]


async def test_close_says_quit_and_next_delivery_reconnects(upstream: Upstream,
                                                            courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    await bounded(courier.close())
    await bounded(courier.close())  # idempotent
    assert upstream.quits == 1
    assert (await send(courier)).ok
    assert upstream.connections == 2


# -- reply mapping ----------------------------------------------------------------

async def test_4xx_rcpt_is_temporary_and_connection_kept(upstream: Upstream,
                                                         courier: SmtpCourier) -> None:
    result = await send(courier, "tempfail@example.net")
    assert result.outcome is Outcome.TEMPORARY
    assert (result.code, result.reply, result.status) == (451, "451 4.3.0 try later", "4.3.0")
    assert result.remote == f"127.0.0.1:{upstream.port}"
    assert (await send(courier)).ok  # RSET made the connection reusable
    assert upstream.connections == 1


async def test_status_is_derived_without_enhanced_code(courier: SmtpCourier) -> None:
    result = await send(courier, "plain4@example.net")
    assert (result.outcome, result.reply, result.status) == (
        Outcome.TEMPORARY, "450 mailbox busy", "4.0.0")


async def test_5xx_rcpt_is_permanent(upstream: Upstream, courier: SmtpCourier) -> None:
    result = await send(courier, "reject@example.net")
    assert result.outcome is Outcome.PERMANENT
    assert (result.code, result.reply, result.status) == (
        550, "550 5.1.1 no such user", "5.1.1")
    assert (await send(courier)).ok
    assert upstream.connections == 1


async def test_multiline_reply_becomes_one_line(courier: SmtpCourier) -> None:
    result = await send(courier, "multiline@example.net")
    assert result.reply == "550 5.1.1 The account does not exist. Please check the address."
    assert "\r" not in result.reply
    assert "\n" not in result.reply
    assert result.status == "5.1.1"


async def test_5xx_after_data_is_permanent(upstream: Upstream, courier: SmtpCourier) -> None:
    result = await send(courier, "datafail@example.net")
    assert (result.outcome, result.code, result.status) == (Outcome.PERMANENT, 554, "5.7.1")
    assert result.reply == "554 5.7.1 message content rejected"
    assert (await send(courier)).ok
    assert upstream.connections == 1


async def test_4xx_after_data_is_temporary(courier: SmtpCourier) -> None:
    result = await send(courier, "datatemp@example.net")
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 452, "4.3.1")


async def test_421_is_temporary_and_drops_the_connection(upstream: Upstream,
                                                         courier: SmtpCourier) -> None:
    result = await send(courier, "bye@example.net")
    assert (result.outcome, result.code, result.reply) == (
        Outcome.TEMPORARY, 421, "421 4.3.2 shutting down")
    assert (await send(courier)).ok
    assert upstream.connections == 2


async def test_out_of_place_2xx_is_temporary_not_delivered(upstream: Upstream,
                                                             courier: SmtpCourier) -> None:
    result = await send(courier, "weird@example.net")
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.5.0")
    assert result.reply == (f"451 4.5.0 unexpected reply from 127.0.0.1:{upstream.port} "
                            "to RCPT TO: 252 2.1.5 cannot verify")
    assert upstream.messages == []
    assert (await send(courier)).ok


async def test_bad_address_is_permanent_without_sending(upstream: Upstream,
                                                        courier: SmtpCourier) -> None:
    result = await send(courier, "x@example.net> NOTIFY=NEVER")
    assert (result.outcome, result.code, result.status) == (Outcome.PERMANENT, 501, "5.1.3")
    assert upstream.connections == 0


# -- dropped connections ---------------------------------------------------------

async def test_reconnects_after_the_server_hung_up(upstream: Upstream,
                                                   courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    upstream.hang_up_all()
    assert (await send(courier, "c@example.net")).ok
    assert upstream.connections == 2
    assert len(upstream.messages) == 2


async def test_stale_connection_at_mail_is_retried_once_afresh(upstream: Upstream,
                                                               courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    upstream.script("MAIL", "drop")
    assert (await send(courier, "c@example.net")).ok
    assert upstream.connections == 2
    assert [m.rcpt_tos for m in upstream.messages] == [["b@example.net"], ["c@example.net"]]


async def test_retry_happens_only_once(upstream: Upstream, courier: SmtpCourier) -> None:
    assert (await send(courier)).ok
    upstream.script("MAIL", "drop", "drop")
    result = await send(courier)
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.4.2")
    assert result.reply == (f"451 4.4.2 lost connection with 127.0.0.1:{upstream.port} "
                            "while sending MAIL FROM")
    assert upstream.connections == 2  # the reused one, then one fresh attempt only


async def test_fresh_connection_dropped_at_mail_is_not_retried(upstream: Upstream,
                                                               courier: SmtpCourier) -> None:
    upstream.script("MAIL", "drop")
    result = await send(courier)
    assert result.outcome is Outcome.TEMPORARY
    assert upstream.connections == 1


async def test_lost_reply_after_data_is_not_resent(upstream: Upstream,
                                                   courier: SmtpCourier) -> None:
    result = await send(courier, "datadrop@example.net")
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.4.2")
    assert result.reply.endswith("while sending DATA")
    assert len(upstream.messages) == 1  # the upstream has it: at-least-once, never resent here
    assert upstream.connections == 1


async def test_timeout_after_data_is_temporary(upstream: Upstream) -> None:
    c = make_courier(upstream.port, timeout=0.3)
    try:
        result = await send(c, "datahang@example.net")
    finally:
        await bounded(c.close())
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.4.2")
    assert result.reply.startswith("451 4.4.2 timeout with")
    assert upstream.connections == 1


async def test_cancelled_delivery_drops_the_connection(upstream: Upstream,
                                                       courier: SmtpCourier) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(courier.deliver("a@example.org", "datahang@example.net",
                                               MESSAGE), 0.3)
    assert (await send(courier)).ok
    assert upstream.connections == 2


# -- connection failures ---------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_temporary_451() -> None:
    port = closed_port()
    c = make_courier(port)
    result = await send(c)
    await bounded(c.close())
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.4.1")
    assert result.reply == f"451 4.4.1 connection to 127.0.0.1:{port} failed: Connection refused"
    assert result.remote == f"127.0.0.1:{port}"


async def test_silent_server_times_out_as_temporary() -> None:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    server = await loop.create_server(Silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        c = make_courier(port, timeout=0.3)
        result = await send(c)
        await bounded(c.close())
    finally:
        server.close()
        for t in transports:
            t.close()
        await bounded(server.wait_closed())
    assert (result.outcome, result.code) == (Outcome.TEMPORARY, 451)
    assert result.reply == f"451 4.4.1 connection to 127.0.0.1:{port} failed: timed out"


async def test_cancelled_while_connecting_leaves_nothing_open() -> None:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    lost = asyncio.Event()

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            lost.set()

    server = await loop.create_server(Silent, "127.0.0.1", 0)
    c = make_courier(server.sockets[0].getsockname()[1], timeout=5)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.deliver("a@example.org", "b@example.net", MESSAGE), 0.2)
        await bounded(lost.wait(), 5)  # the courier closed its half-made connection
    finally:
        server.close()
        for t in transports:
            t.close()
        await bounded(server.wait_closed())


# -- STARTTLS ---------------------------------------------------------------------

async def test_starttls_required_but_not_offered_is_temporary(upstream: Upstream) -> None:
    c = make_courier(upstream.port, starttls="required")
    result = await send(c)
    await bounded(c.close())
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.7.4")
    assert "TLS is required, but was not offered" in result.reply
    assert upstream.messages == []


async def test_opportunistic_without_starttls_sends_in_clear(upstream: Upstream) -> None:
    c = make_courier(upstream.port, starttls="opportunistic", tls_verify=True)
    result = await send(c)
    await bounded(c.close())
    assert result.ok
    assert not upstream.messages[0].tls


@pytest.mark.parametrize(("policy", "verify", "encrypted", "connections"), [
    ("opportunistic", False, True, 1),
    ("required", False, True, 1),
    # Opportunistic TLS never keeps mail back: the handshake fails (the certificate
    # is not trusted), then one connection in clear text, reused.
    ("opportunistic", True, False, 2),
])
async def test_starttls_per_policy(tls_upstream: Upstream,
                                   policy: Literal["opportunistic", "required"], verify: bool,
                                   encrypted: bool, connections: int) -> None:
    c = make_courier(tls_upstream.port, starttls=policy, tls_verify=verify)
    first = await send(c)
    second = await send(c, "c@example.net")
    await bounded(c.close())
    assert first.ok
    assert second.ok
    assert [m.tls for m in tls_upstream.messages] == [encrypted, encrypted]
    assert tls_upstream.connections == connections


async def test_starttls_off_stays_in_clear(tls_upstream: Upstream) -> None:
    c = make_courier(tls_upstream.port, starttls="off")
    assert (await send(c)).ok
    await bounded(c.close())
    assert not tls_upstream.messages[0].tls


async def test_unverifiable_certificate_is_temporary(tls_upstream: Upstream) -> None:
    c = make_courier(tls_upstream.port, starttls="required", tls_verify=True)
    result = await send(c)
    await bounded(c.close())
    assert (result.outcome, result.code, result.status) == (Outcome.TEMPORARY, 451, "4.7.5")
    assert result.reply.startswith(f"451 4.7.5 TLS handshake with 127.0.0.1:{tls_upstream.port}"
                                   " failed: certificate verification failed")
    assert "Traceback" not in result.reply
    assert tls_upstream.messages == []


# -- SMTPUTF8 and 8BITMIME -----------------------------------------------------------

UTF8_MESSAGE = "Subject: h\u00e9llo\r\n\r\nbody\r\n".encode()


async def test_smtputf8_offered_is_used(upstream: Upstream, courier: SmtpCourier) -> None:
    result = await bounded(courier.deliver("a@example.org", "\u00fcser@example.net",
                                           UTF8_MESSAGE, smtputf8=True))
    assert result.ok
    [msg] = upstream.messages
    assert "SMTPUTF8" in msg.mail_options
    assert msg.rcpt_tos == ["\u00fcser@example.net"]
    assert msg.content == UTF8_MESSAGE


async def test_smtputf8_needed_but_not_offered_is_permanent(ascii_upstream: Upstream) -> None:
    c = make_courier(ascii_upstream.port)
    result = await send(c, data=UTF8_MESSAGE, smtputf8=True)
    await bounded(c.close())
    assert (result.outcome, result.code, result.status) == (Outcome.PERMANENT, 554, "5.6.7")
    assert "SMTPUTF8 is required" in result.reply
    assert ascii_upstream.messages == []


async def test_utf8_address_without_smtputf8_is_permanent(ascii_upstream: Upstream) -> None:
    c = make_courier(ascii_upstream.port)
    result = await send(c, "\u00fcser@example.net")
    await bounded(c.close())
    assert (result.outcome, result.status) == (Outcome.PERMANENT, "5.6.7")


async def test_declared_smtputf8_on_ascii_mail_goes_without(ascii_upstream: Upstream) -> None:
    c = make_courier(ascii_upstream.port)
    result = await send(c, smtputf8=True)
    await bounded(c.close())
    assert result.ok
    assert "SMTPUTF8" not in ascii_upstream.messages[0].mail_options


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="starttls"):
        SmtpCourier("h", 25, starttls="always", tls_verify=True,  # type: ignore[arg-type]
                    timeout=1, helo_name="x")
    with pytest.raises(ValueError, match="helo_name"):
        SmtpCourier("h", 25, starttls="off", tls_verify=True, timeout=1, helo_name="a b")


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"x" * 30]),
                max_size=50))
def test_wire_data_round_trips_through_unstuffing(parts: list[bytes]) -> None:
    data = b"".join(parts)
    wire = wire_data(data)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n" or wire.endswith(b".\r\n")
    body = wire[:-3]
    assert b"\r\n.\r\n" not in b"\r\n" + body  # no early end of data
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuff(body) == normalised


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"x" * 30]),
                max_size=50))
def test_wire_data_stuffs_each_line_that_starts_with_a_period(parts: list[bytes]) -> None:
    """Read line by line: every line of the CRLF form that starts with a period gets one
    more, and the terminator follows."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", b"".join(parts)).removesuffix(b"\r\n")
    lines = data.split(b"\r\n")
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                       for line in lines)
    assert wire_data(b"".join(parts)) == stuffed + b".\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"x" * 30]),
                max_size=50))
def test_wire_data_of_proven_crlf_bytes_is_the_same(parts: list[bytes]) -> None:
    """``crlf=True`` (a DKIM-signed copy) skips only the line-end check: for bytes that
    are CRLF-only and end in CRLF, the DATA section is the same, stuffing included."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", b"".join(parts)) + b"\r\n"
    assert wire_data(data, crlf=True) == wire_data(data)


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"x" * 30]),
                max_size=50), st.booleans(), st.booleans())
def test_wire_pieces_joined_are_wire_data(parts: list[bytes], crlf: bool, proven: bool) -> None:
    """What the courier writes in pieces (``writelines``) is, joined, the DATA section:
    with and without the line-end proof, with and without the periods' offsets."""
    data = b"".join(parts)
    if crlf:
        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data) + b"\r\n"
    dots = (tuple(m.start() for m in re.finditer(rb"(?=\r\n\.)", b"\r\n" + data))
            if crlf and proven else None)
    pieces = wire_pieces(data, crlf, dots)
    assert b"".join(pieces) == wire_data(data, crlf, dots) == wire_data(data)
    if dots is None:
        assert len(pieces) == 1


@pytest.mark.parametrize("data", [b"Subject: lf\n\nbody\nmore\n", b"Subject: cr\r\n\r\nbo\rdy\r\n",
                                  b"Subject: end\r\n\r\nno line end"])
async def test_a_copy_not_proven_crlf_is_made_crlf(upstream: Upstream, courier: SmtpCourier,
                                                  data: bytes) -> None:
    """Without the proof (the default: no DKIM step made the copy) a bare LF or CR
    still goes out as CRLF."""
    assert (await send(courier, data=data)).ok
    [msg] = upstream.messages
    assert msg.content == re.sub(rb"\r\n|\r|\n", b"\r\n", data).removesuffix(b"\r\n") + b"\r\n"


class _QuittingClient:
    """Stands for aiosmtplib's SMTP in :meth:`SmtpCourier.close`: QUIT waits for
    ``reply``, which the test settles."""

    is_connected = True

    def __init__(self) -> None:
        self.reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.quitting = asyncio.Event()
        self.closed = False

    async def quit(self, timeout: float | None = None) -> None:
        self.quitting.set()
        await self.reply

    def close(self) -> None:
        self.closed = True


async def test_close_keeps_a_cancellation_that_comes_with_the_quit_reply() -> None:
    """A stop that cancels a delivery worker as the upstream's 221 arrives is not lost:
    on Python 3.11, ``asyncio.wait_for`` returned the reply and dropped the
    cancellation, and the worker then waited on its queue for good (CI hung 300 s in
    ``test_idle_worker_says_quit_and_reconnects``)."""
    courier = make_courier(1)
    client = _QuittingClient()
    courier._client = client  # type: ignore[assignment]
    closing = asyncio.create_task(courier.close())
    await bounded(client.quitting.wait())
    client.reply.set_result(None)  # the reply and the cancellation in the same turn
    closing.cancel()
    await asyncio.wait([closing], timeout=10)  # a bound, never reached when it works
    assert closing.cancelled()
    assert client.closed


# -- the reply's text ---------------------------------------------------------------

_OLD_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_OLD_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def _old_reply_text(code: int, message: str) -> str:
    """``smtp._reply_text`` before its one-line shortcut (the reference)."""
    message = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    lines = [line.strip() for line in message.split("\n")]
    first = _OLD_ENHANCED.match(lines[0]) if lines else None
    if first:
        repeated = first.group(0)
        lines[1:] = [line.removeprefix(repeated).lstrip() for line in lines[1:]]
    text = f"{code} " + " ".join(line for line in lines if line)
    return _OLD_CONTROLS.sub(" ", text).strip()[:1000]


_REPLY_CHARS = st.sampled_from([" ", "\t", "\r", "\n", "\x0b", "\x0c", "\x1c", "\x7f", "\x00",
                                "a", "Z", "0", "5", ".", ":", "<", "@", "\xe9", "\xa0",
                                "\u2028", "\u3000", "\udce9"])
_REPLY_TEXTS = st.one_of(
    st.text(_REPLY_CHARS, max_size=30),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=1100),
    st.text(max_size=40),
    st.sampled_from(["2.0.0 Ok: queued as 4711", "", " ", "  2.0.0 Ok  ",
                     "5.1.1 no such user\n5.1.1 really", "x" * 1200]),
)


@given(st.sampled_from([-1, 0, 220, 250, 354, 421, 451, 550, 554, 999]), _REPLY_TEXTS)
def test_reply_text_is_the_old_text(code: int, message: str) -> None:
    """The printable-ASCII shortcut gives what the general path gives, for every text."""
    assert _reply_text(code, message) == _old_reply_text(code, message)


class _OldReplies(_Replies):
    """``_Replies`` with its parser before the one-copy cut (the reference)."""

    def _parse(self) -> None:
        buffer = self._buffer
        start = 0
        while True:
            offset, code, message = start, -1, bytearray()
            while True:
                end = buffer.find(b"\n", offset)
                if end < 0:
                    del buffer[:start]
                    if len(buffer) > 4 * 8192:
                        raise SMTPResponseException(-1, "Response too long")
                    return
                line = bytes(buffer[offset:end + 1])
                if len(line) > 8192:
                    raise SMTPResponseException(-1, "Response too long")
                try:
                    code = int(line[:3])
                except ValueError:
                    text = line.decode("utf-8", errors="ignore")
                    raise SMTPResponseException(
                        -1, f"Malformed SMTP response line: {text}") from None
                offset = end + 1
                if message:
                    message += b"\n"
                message += line[4:].strip(b" \t\r\n")
                if line[3:4] != b"-":
                    break
            self._replies.append(
                SMTPResponse(code, bytes(message).decode("utf-8", "surrogateescape")))
            start = offset


_REPLY_LINES = st.one_of(
    st.sampled_from([b"250 2.1.0 Ok\r\n", b"250-first\r\n", b"250-\r\n", b"354 go\n",
                     b"451 4.3.0 later\r\n", b"250 \r\n", b"250\r\n", b"25x bad\r\n",
                     b" 25 odd\r\n", b"550-a \t\r\n", b"250 \xc3\xa9\xff\r\n", b"\r\n",
                     b"2", b"250 " + b"x" * 8200 + b"\r\n", b"250-" + b"y" * 5000 + b"\r\n"]),
    st.binary(max_size=12),
)


@settings(max_examples=400)
@given(st.lists(_REPLY_LINES, max_size=10), st.lists(st.integers(1, 40), max_size=12))
def test_reply_parser_is_the_old_parser(lines: list[bytes], cuts: list[int]) -> None:
    """Replies read in any pieces give the same replies, in order, and the same error
    (too long, malformed) at the same point as the parser before."""
    stream = b"".join(lines)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(stream[at:at + cut])
        at += cut
    pieces.append(stream[at:])
    new, old = _Replies(cast(SMTPProtocol, None)), _OldReplies(cast(SMTPProtocol, None))
    for piece in pieces:
        for replies in (new, old):
            replies.data_received(piece)
        assert list(new._replies) == list(old._replies)
        assert repr(new._error) == repr(old._error)
        assert new._buffer == old._buffer


async def test_a_421_greeting_is_no_session() -> None:
    """An upstream over its limit of connections per client greets with 421 and hangs up
    (Postfix: ``421 4.7.0 ... Error: too many connections``): no session was had, so the
    copy was certainly not sent (``Result.session``: a lane drops out and another
    connection takes the copy, see the scheduler)."""
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.7.0 mx.test Error: too many connections from 127.0.0.1\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = make_courier(port)
    try:
        result = await send(c)
    finally:
        await bounded(c.close())
        server.close()
        await server.wait_closed()
    assert result.session and result.outcome is Outcome.TEMPORARY
    assert "too many connections" in result.reply
