"""MAIL, RCPT and DATA against a real server on 127.0.0.1 (AUTH: test_handler_auth.py)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiosmtplib
import pytest

from beacon_proxy import metrics
from beacon_proxy.smtpd import handler as handler_module
from tests.smtpd.conftest import OUTSIDE, WAIT, Serve, events

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID:\r\n <20240101.1234@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe,\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"   trailing spaces   \r\n"
    b"\r\n"
)


def rejections(stage: str, code: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "beacon_proxy_smtp_rejections_total", {"stage": stage, "code": code})
    return value or 0.0


async def test_message_reaches_enqueue_byte_exact(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve()
    received_before = metrics.REGISTRY.get_sample_value(
        "beacon_proxy_messages_received_total") or 0.0
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, start_tls=False,
                               local_hostname="client.test", timeout=WAIT) as smtp:
        errors, reply = await smtp.sendmail(
            "alice@example.org", ["bob@example.net", "carol@example.net"], MESSAGE,
            mail_options=["BODY=8BITMIME"])
    assert errors == {}
    [(envelope, data)] = running.enqueue.calls
    assert data == MESSAGE
    assert reply == f"2.0.0 Ok: queued as {envelope.queue_id}"
    assert envelope.sender == "alice@example.org"
    assert envelope.recipients == ("bob@example.net", "carol@example.net")
    assert envelope.client_address == "127.0.0.1"
    assert envelope.client_helo == "client.test"
    assert envelope.protocol == "ESMTP"
    assert envelope.auth_user is None
    assert envelope.message_id == "<20240101.1234@example.org>"
    assert envelope.size == len(MESSAGE)
    assert envelope.body_type == "8BITMIME"
    assert not envelope.smtputf8
    assert len(envelope.queue_id) == 16
    [received] = events(caplog, "received")
    assert received == {
        "queue_id": envelope.queue_id, "message_id": "<20240101.1234@example.org>",
        "size": len(MESSAGE), "sender": "alice@example.org", "recipients": 2,
        "client_address": "127.0.0.1", "helo": "client.test", "protocol": "ESMTP",
        "auth_user": None,
    }
    after = metrics.REGISTRY.get_sample_value("beacon_proxy_messages_received_total")
    assert after == received_before + 1


async def test_body_kept_with_bare_lf_as_crlf_and_bare_cr_as_is(serve: Serve) -> None:
    running = await serve()
    body = b"line with bare LF\nand bare CR\rand \xff\r\n"
    client = await running.connect()
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"Subject: s\r\n\r\n" + body + b"..x\n..y\r\n.\r\n")
    assert reply.code == 250
    await client.close()
    [(envelope, data)] = running.enqueue.calls
    assert data == b"Subject: s\r\n\r\nline with bare LF\r\nand bare CR\rand \xff\r\n.x\r\n.y\r\n"
    assert envelope.size == len(data)  # the size of what is queued


def _smtplib_send(port: int, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=WAIT) as smtp:
        return smtp.sendmail("news@example.org", ["bob@example.net"], message.as_bytes())


async def test_lf_only_message_from_smtplib_is_queued_with_crlf(serve: Serve) -> None:
    running = await serve()
    message = EmailMessage()
    message["From"] = "News <news@example.org>"
    message["To"] = "bob@example.net"
    message["Subject"] = "LF only"
    message["Message-ID"] = "<lf-1@example.org>"
    message["List-Id"] = "Example news <news.example.org>"
    message.set_content("Hello\n.a line starting with a dot\n.\n..\nbye\n")
    sent = message.as_bytes()
    assert b"\r" not in sent  # the policy's default linesep is LF
    errors = await asyncio.to_thread(_smtplib_send, running.port, message)
    assert errors == {}
    [(envelope, data)] = running.enqueue.calls
    assert data == sent.replace(b"\n", b"\r\n") + b"\r\n"  # smtplib adds CRLF before "."
    assert envelope.message_id == "<lf-1@example.org>"
    assert envelope.list_id == "news.example.org"


async def test_mixed_crlf_and_lf_lines(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    reply = await client.transaction(
        "a@example.org", ["b@example.org"],
        b"Subject: mixed\nMessage-ID:\r\n <m@example.org>\nList-Id: <l.example.org>\r\n"
        b"\nbody\r\n..dot\nlast\r\n.\r\n")
    assert reply.code == 250
    await client.close()
    [(envelope, data)] = running.enqueue.calls
    assert data == (b"Subject: mixed\r\nMessage-ID:\r\n <m@example.org>\r\n"
                    b"List-Id: <l.example.org>\r\n\r\nbody\r\n.dot\r\nlast\r\n")
    assert (envelope.message_id, envelope.list_id) == ("<m@example.org>", "l.example.org")


async def test_ehlo_advertises_exactly_our_extensions(serve: Serve) -> None:
    running = await serve(max_message_size=123_456)
    client = await running.connect()
    reply = await client.cmd("EHLO client.test")
    assert reply.code == 250
    assert reply.lines == ["mx.test.example", "SIZE 123456", "8BITMIME", "PIPELINING", "SMTPUTF8"]
    assert (await client.cmd("AUTH PLAIN AGFAYg==")).code >= 500  # no AUTH in clear text
    await client.close()


async def test_helo_session_records_smtp_protocol(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("HELO old.client")).code == 250
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"Subject: x\r\n\r\nhi\r\n.\r\n", ehlo="")
    assert reply.code == 250
    await client.close()
    [(envelope, _)] = running.enqueue.calls
    assert envelope.protocol == "SMTP"
    assert envelope.client_helo == "old.client"


async def test_helo_name_is_sanitised(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd(b"EHLO bad\x01name\xff" + b"x" * 300)).code == 250
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"\r\nhi\r\n.\r\n", ehlo="")
    assert reply.code == 250
    await client.close()
    [(envelope, _)] = running.enqueue.calls
    assert envelope.client_helo.startswith("bad?name?xxx")
    assert len(envelope.client_helo) == 255


async def test_relay_denied_outside_allow_networks(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve(allow_networks=OUTSIDE)
    before = rejections("RCPT", "554")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, start_tls=False,
                               timeout=WAIT) as smtp:
        await smtp.ehlo()
        await smtp.mail("alice@example.org")
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await smtp.rcpt("bob@example.net")
        assert refused.value.code == 554
        assert refused.value.message == "5.7.1 <bob@example.net>: Relay access denied"
        with pytest.raises(aiosmtplib.SMTPResponseException) as no_rcpt:
            await smtp.data(MESSAGE)
        assert no_rcpt.value.code == 503
    assert running.enqueue.calls == []
    assert rejections("RCPT", "554") == before + 1
    [denied] = [e for e in events(caplog, "rejected") if e["code"] == 554]
    assert denied == {
        "stage": "RCPT", "code": 554, "reason": "<bob@example.net>: Relay access denied",
        "client_address": "127.0.0.1", "sender": "alice@example.org",
        "recipient": "bob@example.net",
    }


async def test_null_sender_accepted(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<>")).text == "250 2.1.0 Ok"
    assert (await client.cmd("RCPT TO:<b@example.org>")).text == "250 2.1.5 Ok"
    assert (await client.cmd("DATA")).code == 354
    await client.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).code == 250
    await client.close()
    [(envelope, _)] = running.enqueue.calls
    assert envelope.sender == ""


async def test_null_recipient_refused(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    reply = await client.cmd("RCPT TO:<>")
    assert reply.text == "553 5.1.3 Null recipient address <> not allowed"
    await client.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("MAIL FROM:<nodomain>", "501 5.1.7 Bad sender address syntax: the address has no @domain"),
        ('MAIL FROM:<"a b"@example.org>',
         "501 5.1.7 Bad sender address syntax: the address contains spaces or control characters"),
        ("MAIL FROM:<" + "a" * 65 + "@example.org>",
         "501 5.1.7 Bad sender address syntax: the local part is longer than 64 octets"),
        ("MAIL FROM:<jörg@example.de>",
         "553 5.6.7 Bad sender address syntax: non-ASCII address needs SMTPUTF8"),
        ("MAIL FROM:<a@>", "501 5.1.7 Bad sender address syntax: the domain is missing"),
        ("MAIL FROM:<a@b@x.test>",
         "501 5.1.7 Bad sender address syntax: "
         "the address has more than one @ (quote the local part)"),
        ("MAIL FROM:<a@x.test", "553 5.1.3 Error: malformed address"),  # no closing >
        ("MAIL FROM:<a@x.test>junk", "553 5.1.3 Error: malformed address"),
    ],
)
async def test_bad_sender_syntax(serve: Serve, command: str, expected: str) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd(command)).text == expected
    await client.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("nodomain", "501 5.1.3 Bad recipient address syntax: the address has no @domain"),
        ("a@-bad.example",
         "501 5.1.3 Bad recipient address syntax: "
         "the domain is not a valid host name or address literal"),
        ("a@" + "b" * 250 + ".org",
         "501 5.1.3 Bad recipient address syntax: the address is longer than 254 octets"),
        ("a<b>@x.test",
         "501 5.1.3 Bad recipient address syntax: the local part has '<' outside quotes"),
        # aiosmtpd's RFC 5322 parser made these a@x.test, a@x.test and ab@x.test
        ("a(b)@x.test",
         "501 5.1.3 Bad recipient address syntax: the local part has '(' outside quotes"),
        ("a @x.test",
         "501 5.1.3 Bad recipient address syntax: "
         "the address contains spaces or control characters"),
        ("a@b@x.test", "501 5.1.3 Bad recipient address syntax: "
         "the address has more than one @ (quote the local part)"),
        ("a..b@x.test", "501 5.1.3 Bad recipient address syntax: "
         "the local part has a dot at its start or end or two in a row (quote it)"),
        ('"a"b@x.test', "501 5.1.3 Bad recipient address syntax: "
         "the quoted local part is not followed by @domain"),
    ],
)
async def test_bad_recipient_syntax(serve: Serve, address: str, expected: str) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd(f"RCPT TO:<{address}>")).text == expected
    await client.close()


async def test_paths_are_taken_as_written(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<@relay.test:=1+2@example.org> SIZE=10")).code == 250
    for path in ('"a>b"@example.org', "-a@example.org", '"a@b"@example.org'):
        assert (await client.cmd(f"RCPT TO:<{path}>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send(b"Subject: paths\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).code == 250
    await client.close()
    [(envelope, _)] = running.enqueue.calls
    assert envelope.sender == "=1+2@example.org"
    assert envelope.recipients == ('"a>b"@example.org', "-a@example.org", '"a@b"@example.org')


async def test_control_characters_in_address_refused(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd(b"MAIL FROM:<a\x01b@example.org>")).code == 501
    assert (await client.cmd(b"MAIL FROM:<a\xffb@example.org> SMTPUTF8")).code == 501
    await client.close()


async def test_smtputf8_and_body_recorded(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME")).code == 250
    assert (await client.cmd("RCPT TO:<ünïcode@example.org>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send("Subject: Grüße\r\n\r\nÄ\r\n.\r\n".encode())
    assert (await client.reply()).code == 250
    await client.close()
    [(envelope, data)] = running.enqueue.calls
    assert envelope.sender == "jörg@bücher.example"
    assert envelope.recipients == ("ünïcode@example.org",)
    assert envelope.smtputf8
    assert envelope.body_type == "8BITMIME"
    assert data == "Subject: Grüße\r\n\r\nÄ\r\n".encode()


async def test_too_many_recipients(serve: Serve) -> None:
    running = await serve(max_recipients=2)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<1@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<2@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<3@example.org>")).text == "452 4.5.3 Too many recipients"
    assert (await client.cmd("DATA")).code == 354
    await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).code == 250
    await client.close()
    [(envelope, _)] = running.enqueue.calls
    assert envelope.recipients == ("1@example.org", "2@example.org")


async def test_size_parameter_over_limit(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve(max_message_size=2000)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    reply = await client.cmd("MAIL FROM:<a@example.org> SIZE=2001")
    assert reply.text == "552 5.3.4 Message size exceeds fixed limit"
    assert (await client.cmd("MAIL FROM:<a@example.org> SIZE=2000")).code == 250
    await client.close()
    [rejected] = events(caplog, "rejected")
    assert rejected["stage"] == "MAIL"
    assert rejected["code"] == 552


async def test_data_over_limit(serve: Serve) -> None:
    running = await serve(max_message_size=2000)
    client = await running.connect()
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + b"y" * 998 + b"\r\n"
    reply = await client.transaction("a@example.org", ["b@example.org"], big + b".\r\n")
    assert reply.text == "552 5.3.4 Message size exceeds fixed limit"
    # the session goes on
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"Subject: small\r\n\r\nx\r\n.\r\n", ehlo="")
    assert reply.code == 250
    await client.close()
    assert len(running.enqueue.calls) == 1


async def test_header_too_large(serve: Serve) -> None:
    running = await serve(max_header_size=1024)
    client = await running.connect()
    header = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"z" * 80) for i in range(12))
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     header + b"\r\nbody\r\n.\r\n")
    assert reply.text == "552 5.3.4 Message header size exceeds limit"
    await client.close()
    assert running.enqueue.calls == []


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: a\rBcc: victim@example.org\r\n",
        b"Subject: a\r\r\n",
        b"Subject: a\nX: b\rBcc: victim@example.org\n",
        b"Subject: a\r",
    ],
)
async def test_bare_cr_in_header_refused(serve: Serve, header: bytes) -> None:
    running = await serve()
    client = await running.connect()
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     header + b"\r\nbody\r\n.\r\n")
    assert reply.text == "554 5.6.0 Bare CR or LF in message header not allowed"
    await client.close()
    assert running.enqueue.calls == []
    assert rejections("DATA", "554") >= 1


@pytest.mark.parametrize(
    ("header", "queued"),
    [
        (b"Subject: a\nBcc: victim@example.org\r\n\r\n",
         b"Subject: a\r\nBcc: victim@example.org\r\n\r\n"),
        (b"Subject: a\n\nbody-looking\r\n\r\n", b"Subject: a\r\n\r\nbody-looking\r\n\r\n"),
        (b"\nMessage-ID: <in-body@example.org>\r\n\r\n",
         b"\r\nMessage-ID: <in-body@example.org>\r\n\r\n"),
    ],
)
async def test_bare_lf_in_header_is_a_line_end(serve: Serve, header: bytes, queued: bytes) -> None:
    """One reading for every stage: the queued bytes are the ones the handler parsed."""
    running = await serve()
    client = await running.connect()
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     header + b"body\r\n.\r\n")
    assert reply.code == 250
    await client.close()
    [(envelope, data)] = running.enqueue.calls
    assert data == queued + b"body\r\n"
    assert envelope.message_id is None  # a Message-ID after the empty line is body


@pytest.mark.parametrize(
    ("smuggled", "queued"),
    [
        (b"\n.\n", b"\r\n"),  # a lone "." next to a bare LF: not the end, dropped
        (b"\n.\r\n", b"\r\n"),
        (b"\r\n.\n", b"\r\n"),
        (b"\r.\r", b"\r.\r"),
    ],
)
async def test_smuggled_end_of_data_is_not_the_end(
        serve: Serve, smuggled: bytes, queued: bytes) -> None:
    running = await serve()
    client = await running.connect()
    smuggled_message = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n"
                        b"Subject: smuggled\r\n\r\nx\r\n")
    data = b"Subject: s\r\n\r\nbody" + smuggled + smuggled_message + b".\r\n"
    reply = await client.transaction("a@example.org", ["b@example.org"], data)
    assert reply.code == 250
    assert (await client.cmd("NOOP")).code == 250  # in step: nothing was taken for a command
    await client.close()
    [(envelope, received)] = running.enqueue.calls  # one message, not two
    assert envelope.sender == "a@example.org"
    assert received == b"Subject: s\r\n\r\nbody" + queued + smuggled_message


async def test_enqueue_failure_answers_451_without_details(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve()
    running.enqueue.error = OSError(28, "No space left on device: /secret/spool/path")
    client = await running.connect()
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert reply.text == "451 4.3.0 Temporary failure, please try again later"
    assert (await client.cmd("NOOP")).code == 250  # the session survives
    await client.close()
    assert any(r.exc_info and "enqueue" in r.getMessage() for r in caplog.records)
    assert events(caplog, "received") == []
    [rejected] = events(caplog, "rejected")
    assert rejected["stage"] == "DATA"
    assert rejected["code"] == 451
    assert rejected["recipients"] == 1


async def test_unexpected_error_in_hook_answers_451(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object) -> bool:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(handler_module, "peer_ip", explode)  # RCPT's relay check
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    reply = await client.cmd("RCPT TO:<b@example.org>")
    assert reply.text == "451 4.3.0 Temporary failure, please try again later"
    await client.close()


async def test_handle_exception_answers_451() -> None:
    from beacon_proxy.config import SmtpConfig
    from tests.smtpd.conftest import FakeEnqueue

    handler = handler_module.SmtpHandler(SmtpConfig(), FakeEnqueue())
    status = await handler.handle_exception(ValueError("secret"))
    assert status == "451 4.3.0 Temporary failure, please try again later"


async def test_client_disconnecting_after_final_dot_still_enqueued(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve()
    running.enqueue.gate = asyncio.Event()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    # pipelined, then gone as soon as the server has the message
    await client.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    for code in (250, 250, 354):
        assert (await client.reply()).code == code
    await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    await asyncio.wait_for(running.enqueue.started.wait(), WAIT)
    await client.close()
    await asyncio.sleep(0.01)  # let the server notice the disconnect
    assert running.enqueue.calls == []
    running.enqueue.release()
    await asyncio.wait_for(running.enqueue.finished.wait(), WAIT)
    assert len(running.enqueue.calls) == 1
    for _ in range(10):  # the done-callback runs soon after
        if events(caplog, "received"):
            break
        await asyncio.sleep(0)
    [received] = events(caplog, "received")
    assert received["acknowledged"] is False


async def test_hook_signature_is_the_five_argument_ehlo() -> None:
    import inspect

    from beacon_proxy.config import SmtpConfig
    from tests.smtpd.conftest import FakeEnqueue

    handler = handler_module.SmtpHandler(SmtpConfig(), FakeEnqueue())
    assert len(inspect.signature(handler.handle_EHLO).parameters) == 5


@pytest.mark.parametrize("outside", [False, True])
async def test_a_connections_address_is_judged_once(
        serve: Serve, monkeypatch: pytest.MonkeyPatch, outside: bool) -> None:
    """The relay check by address runs when the connection is admitted; its RCPTs
    reuse that verdict (allowed or refused alike), AUTH still overrides it."""
    from beacon_proxy.smtpd.policy import relay_allowed as real

    calls: list[str] = []

    def counted(ip: str, authenticated: bool, networks: object) -> bool:
        calls.append(ip)
        return real(ip, authenticated, networks)  # type: ignore[arg-type]

    monkeypatch.setattr("beacon_proxy.smtpd.protocol.relay_allowed", counted)
    running = await serve(**({"allow_networks": OUTSIDE} if outside else {}))
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    for n in range(3):
        reply = await client.cmd(f"RCPT TO:<b{n}@example.org>")
        assert reply.code == (554 if outside else 250), reply
    await client.close()
    assert calls == ["127.0.0.1"]


def test_a_kept_verdict_is_for_its_address_and_networks_only() -> None:
    """Another address, or another networks object (even an equal one), is judged anew."""
    import ipaddress

    from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol

    loop = asyncio.new_event_loop()
    try:
        conn = SmtpProtocol(object(), Connections(1), hostname="h", loop=loop)
        nets = (ipaddress.ip_network("192.0.2.0/24"),)
        assert conn.allowed_by_address("192.0.2.7", nets)
        assert not conn.allowed_by_address("198.51.100.1", nets)
        assert conn.allowed_by_address("192.0.2.7", nets)
        assert not conn.allowed_by_address("192.0.2.7", (ipaddress.ip_network("10.0.0.0/8"),))
        assert not conn.allowed_by_address("192.0.2.7", ())
    finally:
        loop.close()


async def test_mail_from_waits_for_the_delivery_side_and_the_wait_is_logged(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """With an inflow gate (``[smtp] in_flow_delay``, deliver/inflow.py), MAIL FROM is
    answered only once the gate lets the transaction go on; the received event says how
    long it waited.  A sender refused for its syntax is answered without waiting."""
    asked: list[str] = []
    go = asyncio.Event()

    async def admit() -> float:
        asked.append("admit")
        await go.wait()
        return 0.25

    running = await serve(admit=admit)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    bad = await client.cmd("MAIL FROM:<no spaces@example.org>")
    assert bad.code == 501 and asked == []
    mail = asyncio.ensure_future(client.cmd("MAIL FROM:<alice@example.org>"))
    while not asked:
        await asyncio.sleep(0)
    assert not mail.done()
    go.set()
    assert (await mail).code == 250
    assert (await client.cmd("RCPT TO:<bob@example.net>")).code == 250
    assert (await client.cmd("DATA")).code == 354
    await client.send(MESSAGE + b".\r\n")
    assert (await client.reply()).code == 250
    [received] = events(caplog, "received")
    assert received["in_flow_delay"] == 0.25
    # The next transaction on the connection waits (and is logged) on its own.
    go.clear()
    asked.clear()
    second = asyncio.ensure_future(client.transaction("alice@example.org", ["c@example.net"],
                                                      MESSAGE + b".\r\n", ehlo=""))
    while not asked:
        await asyncio.sleep(0)
    go.set()
    assert (await second).code == 250
    assert [e["in_flow_delay"] for e in events(caplog, "received")] == [0.25, 0.25]


async def test_a_client_that_may_not_relay_never_waits_for_the_delivery_side(
        serve: Serve) -> None:
    """A stranger's transaction ends at RCPT (relay access denied): its MAIL FROM does not
    queue at the inflow gate, where it would hold up the senders that may relay."""
    asked: list[str] = []

    async def admit() -> float:
        asked.append("admit")
        await asyncio.Event().wait()  # (never: a client that waited would hang here)
        return 0.0

    running = await serve(admit=admit, allow_networks=OUTSIDE)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("MAIL FROM:<alice@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<bob@example.net>")).code == 554
    assert asked == []
