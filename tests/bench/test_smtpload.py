"""The soak's load side: the byte template against a reference rendering, the lean client
against scripted servers (refusals, malformed replies, closes, timeouts, cancellation)."""

from __future__ import annotations

import asyncio
import doctest
import email.parser
import email.policy
import smtplib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _smtpload
from _smtpload import Failed, Refused, SmtpClient, SoakTemplate, dot_stuff, soak_message, wire
from newsletter import newsletter

from tests.bench.fakesmtp import Server, run

BODY = newsletter().replace(b"\n", b"\r\n")
IDS = [0, 1, 9, 10, 99, 12345, 10**7, 2**40]


def smtplib_wire(message: bytes) -> bytes:
    """What smtplib's DATA sends for ``message``: an independent reference."""
    quoted = smtplib.quotedata(message.decode("latin-1")).encode("latin-1")
    return quoted + (b"" if quoted.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def undo_dot_stuffing(data: bytes) -> bytes:
    assert data.endswith(b"\r\n.\r\n")
    lines = data[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(_smtpload).failed == 0


def test_the_benchmark_body_needs_dot_stuffing() -> None:
    """Else the template's stuffing would be tested on nothing."""
    assert b"\r\n." in BODY


@pytest.mark.parametrize("n", IDS)
def test_the_template_equals_the_reference_rendering(n: int) -> None:
    template = SoakTemplate(BODY)
    assert template.render(n) == wire(n, BODY) == smtplib_wire(soak_message(n, BODY))
    assert template.rcpt(n) == f"RCPT TO:<s{n}@example.org>\r\n".encode()
    assert template.size(n) == len(soak_message(n, BODY))


@pytest.mark.parametrize("n", IDS)
def test_each_message_carries_its_own_id_recipient_and_message_id(n: int) -> None:
    data = undo_dot_stuffing(SoakTemplate(BODY).render(n))
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert msg["X-Bench-Id"] == str(n)
    assert msg["To"] == f"s{n}@example.org"
    assert msg["Message-ID"] == f"<soak-{n}@mailer.shop.example>"
    assert msg["From"] == "Shop Example <news@shop.example>"


def test_messages_differ_only_in_the_three_values() -> None:
    template = SoakTemplate(BODY)
    rendered = {n: template.render(n) for n in IDS}
    assert len(set(rendered.values())) == len(IDS)

    def generic(n: int, data: bytes) -> bytes:
        return (data.replace(b"X-Bench-Id: %d\r\n" % n, b"X-Bench-Id: N\r\n", 1)
                .replace(b"To: s%d@" % n, b"To: sN@", 1)
                .replace(b"<soak-%d@" % n, b"<soak-N@", 1))

    shapes = {generic(n, data) for n, data in rendered.items()}
    assert len(shapes) == 1
    # Apart from the three values, the bytes are the benchmark's own, dot-stuffed once.
    original = (BODY.replace(b"To: rcpt@example.net", b"To: sN@example.org")
                .replace(b"<20250320093000.8f3b21@", b"<soak-N@"))
    assert undo_dot_stuffing(shapes.pop()) == b"X-Bench-Id: N\r\n" + original


def test_the_parts_are_shared_but_the_values() -> None:
    template = SoakTemplate(BODY)
    a, b = template.parts(1), template.parts(2)
    assert [x is y for x, y in zip(a, b, strict=True)] == [True, False, True, False, True,
                                                           False, True]
    assert sum(len(x) for x in a) < len(BODY) + 100


@pytest.mark.parametrize("body", [
    b".first\r\nTo: rcpt@example.net\r\nMessage-ID: <20250320093000.8f3b21@mailer.shop.example>"
    b"\r\n\r\n.\r\n..\r\nend",
    b"To: rcpt@example.net\r\nMessage-ID: <20250320093000.8f3b21@mailer.shop.example>\r\n\r\n",
])
def test_dot_stuffing_at_the_edges(body: bytes) -> None:
    for n in (0, 7):
        assert SoakTemplate(body).render(n) == smtplib_wire(soak_message(n, body))


@pytest.mark.parametrize(("body", "problem"), [
    (b"Subject: no To\r\n\r\nhi\r\n", "nothing to personalise"),
    (b"To: rcpt@example.net\r\n\r\nno message id\r\n", "nothing to personalise"),
    (b"Message-ID: <20250320093000.8f3b21@mailer.shop.example>\r\nTo: rcpt@example.net\r\n",
     "before its To"),
    (b"To: rcpt@example.net\nMessage-ID: <20250320093000.8f3b21@mailer.shop.example>\r\n",
     "bare CR or LF"),
    (b"To: rcpt@example.net\r\rMessage-ID: <20250320093000.8f3b21@mailer.shop.example>\r\n",
     "bare CR or LF"),
])
def test_a_body_the_template_cannot_personalise_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SoakTemplate(body)


def test_dot_stuff_of_nothing_is_the_terminator() -> None:
    assert dot_stuff(b"") == b".\r\n"


@pytest.mark.parametrize(("line", "parsed"), [
    (b"250 ok\r\n", (250, True, b"ok")),
    (b"250-SIZE 10\r\n", (250, False, b"SIZE 10")),
    (b"550\r\n", (550, True, b"")),
])
def test_reply_lines_parse(line: bytes, parsed: tuple[int, bool, bytes]) -> None:
    assert _smtpload.parse_reply_line(line) == parsed


@pytest.mark.parametrize("line", [
    b"", b"250 ok", b"250 ok\n", b"25O ok\r\n", b"650 ok\r\n", b"260 ok\r\n", b"250+ok\r\n",
    b"250\rX\r\n", b"2\r\n", b"ok\r\n",
])
def test_malformed_reply_lines_fail(line: bytes) -> None:
    with pytest.raises(Failed):
        _smtpload.parse_reply_line(line)


# -- the client against scripted servers ---------------------------------------------------

@pytest.mark.parametrize("pipelining", [False, True])
def test_a_message_goes_through_byte_for_byte(pipelining: bool) -> None:
    template = SoakTemplate(BODY)

    async def scenario() -> None:
        # The relay offers SIZE and no PIPELINING; the capture offers both.
        ehlo = b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n" if pipelining else (
            b"250-fake\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n")
        async with Server(ehlo) as srv:
            client = await SmtpClient.connect("127.0.0.1", srv.port, "news@shop.example", 30)
            assert (client.pipelining, client.size) == (pipelining, not pipelining)
            for n in (3, 4):
                await client.send(template.rcpt(n), template.parts(n), template.size(n))
            await client.quit()
            assert client.closed
        assert srv.data == [wire(3, BODY), wire(4, BODY)]
        size = b" SIZE=%d" % len(soak_message(3, BODY)) if not pipelining else b""
        assert srv.lines[1:4] == [b"MAIL FROM:<news@shop.example>" + size + b"\r\n",
                                  b"RCPT TO:<s3@example.org>\r\n", b"DATA\r\n"]
        assert srv.lines[-1] == b"QUIT\r\n"

    run(scenario())


def test_pipelining_can_be_turned_off() -> None:
    async def scenario() -> None:
        async with Server(b"250-fake\r\n250 PIPELINING\r\n") as srv:
            client = await SmtpClient.connect("127.0.0.1", srv.port, "a@b", 30, pipelining=False)
            assert not client.pipelining
            client.close()

    run(scenario())


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_refused_recipient_is_refused_and_drops_the_connection(pipelining: bool) -> None:
    async def scenario() -> None:
        ehlo = b"250-fake\r\n250 PIPELINING\r\n" if pipelining else b"250 fake\r\n"
        async with Server(ehlo) as srv:
            srv.on_rcpt[b"RCPT TO:<s1@example.org>\r\n"] = b"550 5.1.1 no such user\r\n"
            client = await SmtpClient.connect("127.0.0.1", srv.port, "a@b", 30)
            with pytest.raises(Refused) as info:
                await client.send(b"RCPT TO:<s1@example.org>\r\n", [b"x\r\n.\r\n"], 3)
            assert info.value.reason == "RCPT 550"
            assert client.closed
            assert srv.data == []

    run(scenario())


@pytest.mark.parametrize(("greeting", "error", "text"), [
    (b"421 busy\r\n", Refused, "greeting 421"),
    (b"220-a\r\n221 b\r\n", Failed, "codes 220 and 221"),
    (b"220 " + b"x" * 5000 + b"\r\n", Failed, "ValueError"),
    (b"220-x\r\n" * 101, Failed, "longer than 100 lines"),
    (b"22O hello\r\n", Failed, "malformed"),
])
def test_a_bad_greeting_fails_the_connect(greeting: bytes, error: type[Exception],
                                          text: str) -> None:
    async def scenario() -> None:
        async with Server() as srv:
            srv.greeting = greeting
            with pytest.raises(error, match=text):
                await SmtpClient.connect("127.0.0.1", srv.port, "a@b", 30)

    run(scenario())


def test_a_connection_refused_fails() -> None:
    async def scenario() -> None:
        async with Server() as srv:
            port = srv.port
        with pytest.raises(Failed, match="connect"):
            await SmtpClient.connect("127.0.0.1", port, "a@b", 30)

    run(scenario())


@pytest.mark.parametrize(("server_does", "why"), [("close", "connection closed"),
                                                   ("hang", "timeout")])
def test_a_server_that_closes_or_never_answers_fails_the_send(server_does: str,
                                                               why: str) -> None:
    async def scenario() -> None:
        async with Server() as srv:
            if server_does == "close":
                srv.on_rcpt[b"RCPT TO:<s1@example.org>\r\n"] = b""
            else:
                srv.hang_on.add(b"RCPT TO:<s1@example.org>\r\n")
            client = await SmtpClient.connect("127.0.0.1", srv.port, "a@b", 30)
            if server_does == "hang":
                client.timeout = 0.2  # the server never answers: no race with the clock
            with pytest.raises(Failed, match=why):
                await client.send(b"RCPT TO:<s1@example.org>\r\n", [b"x\r\n.\r\n"], 3)
            assert client.closed

    run(scenario())


def test_a_cancelled_send_closes_the_connection() -> None:
    async def scenario() -> None:
        async with Server() as srv:
            srv.hang_on.add(b"RCPT TO:<s1@example.org>\r\n")
            client = await SmtpClient.connect("127.0.0.1", srv.port, "a@b", 30)
            task = asyncio.create_task(client.send(b"RCPT TO:<s1@example.org>\r\n", [b".\r\n"], 0))
            await srv.mail_seen.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.closed
            await client.quit()  # a no-op once closed

    run(scenario())
