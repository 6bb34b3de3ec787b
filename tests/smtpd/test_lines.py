"""Lines over 998 octets and NUL bytes: refused after DATA, before any 250.

RFC 5321 4.5.3.1.6 (1000 octets with CRLF) and RFC 5322 2.1.1 (998 before
CRLF); NUL is no text character, and neither BDAT nor BINARYMIME is offered.
"""

from __future__ import annotations

import pytest

from tests.smtpd.conftest import Running, Serve, events

HEAD = b"From: a@example.org\r\nSubject: lines\r\n"


async def send(running: Running, data: bytes) -> tuple[int, str]:
    """One transaction with ``data`` sent as is (plus the final dot); the reply to it.

    The session must still be in step afterwards (NOOP answers 250).
    """
    client = await running.connect()
    reply = await client.transaction("a@example.org", ["b@example.org"], data + b".\r\n")
    assert (await client.cmd("NOOP")).code == 250
    return reply.code, reply.text


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"Subject: " + b"h" * 5000 + b"\r\n\r\nbody\r\n", 1),  # a 5 000-octet header
        (HEAD + b"X-Long: " + b"v" * 991 + b"\r\n\r\nbody\r\n", 3),  # 999 octets
        (HEAD + b"\r\nshort\r\n" + b"b" * 20_000 + b"\r\nend\r\n", 5),  # a 20 000-octet body line
        (HEAD + b"\r\n" + b"b" * 999 + b"\r\n", 4),
        (HEAD + b"\r\nlf\n" + b"b" * 999 + b"\nend\r\n", 5),  # bare LF line ends count too
    ],
    ids=["header-5000", "header-999", "body-20000", "body-999", "bare-lf"],
)
async def test_long_line_refused_before_250(serve: Serve, caplog: pytest.LogCaptureFixture,
                                            data: bytes, line: int) -> None:
    running = await serve()
    code, text = await send(running, data)
    assert (code, text) == (554, f"554 5.6.0 Line {line} of the message is longer than 998 "
                                 "octets; send it quoted-printable or base64")
    assert running.enqueue.calls == []
    [rejected] = events(caplog, "rejected")
    assert (rejected["stage"], rejected["code"]) == ("DATA", 554)
    assert rejected["reason"].startswith(f"Line {line} of the message is longer than 998")
    assert rejected["client_address"] == "127.0.0.1"


@pytest.mark.parametrize(
    "data",
    [
        HEAD + b"X-Max: " + b"v" * 991 + b"\r\n\r\n" + b"b" * 998 + b"\r\n",  # 998: the limit
        HEAD + b"\r\n." + b"b" * 998 + b"\r\n",  # 999 sent, but the first "." is transparency
        HEAD + b"\r\n" + b"b" * 600 + b"\r" + b"c" * 600 + b"\r\n",  # a bare CR is sent as CRLF
        HEAD + b"\r\n" + (b"x" * 998 + b"\r\n") * 50,
    ],
    ids=["998", "stuffed-dot", "bare-cr", "many-998"],
)
async def test_lines_up_to_998_octets_accepted(serve: Serve, data: bytes) -> None:
    running = await serve()
    code, _ = await send(running, data)
    assert code == 250
    assert len(running.enqueue.calls) == 1


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"Subject: a\x00b\r\n\r\nbody\r\n", 1),
        (HEAD + b"\r\nbody\r\nnul \x00 here\r\n", 5),
        (HEAD + b"\r\nbody\r\n\x00.\r\nMAIL FROM:<e@example.org>\r\n", 5),  # a smuggling try
    ],
    ids=["header", "body", "smuggling"],
)
async def test_nul_refused_before_250(serve: Serve, caplog: pytest.LogCaptureFixture,
                                      data: bytes, line: int) -> None:
    running = await serve()
    code, text = await send(running, data)
    assert (code, text) == (554, f"554 5.6.0 NUL character on line {line} of the message "
                                 "not allowed")
    assert running.enqueue.calls == []
    [rejected] = events(caplog, "rejected")
    assert rejected["reason"] == f"NUL character on line {line} of the message not allowed"


async def test_session_goes_on_after_a_refused_message(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    bad = HEAD + b"\r\n" + b"b" * 1500 + b"\r\n.\r\n"
    assert (await client.transaction("a@example.org", ["b@example.org"], bad)).code == 554
    good = HEAD + b"\r\nfine\r\n.\r\n"
    reply = await client.transaction("a@example.org", ["b@example.org"], good, ehlo="")
    assert reply.code == 250
    [(_, data)] = running.enqueue.calls
    assert data == HEAD + b"\r\nfine\r\n"


async def test_neither_bdat_nor_binarymime_is_offered(serve: Serve) -> None:
    """Binary content would need them (RFC 3030); without them, text rules apply."""
    running = await serve()
    client = await running.connect()
    ehlo = await client.cmd("EHLO client.test")
    assert not {"CHUNKING", "BINARYMIME"} & {line.split()[0] for line in ehlo.lines}
    assert (await client.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME")).code == 501
    assert (await client.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 250
    assert (await client.cmd("BDAT 5 LAST")).code == 500
