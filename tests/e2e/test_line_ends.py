"""End-to-end: LF-only and mixed mail through the real relay, and smuggling kept out.

A client may end lines in a bare LF (``smtplib.SMTP.sendmail(..., msg.as_bytes())``,
many PHP mailers): the relay takes them as CRLF, as Postfix does, and the
upstream gets CRLF.  The end of DATA stays ``<CRLF>.<CRLF>`` only, and the
upstream (a real aiosmtpd) must see one whole message whatever ``.`` lines
the client sent.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.harness import PIXEL, Proxy, Upstream, strip_trace, wait_for, with_footer

pytestmark = pytest.mark.e2e

SENDER = "news@sender.example"
TEXT = "Our news.\n.a line starting with a dot\n.\n..two dots\nBye.\n"
HTML = ("<!DOCTYPE html><html><body><h1>News</h1><p>Caf\u00e9 &amp; more</p>\n"
        f".a dot line in the HTML\n<p>Bye.</p>{PIXEL}</body></html>\n")


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, upstream=upstream.port).start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _lf_newsletter() -> EmailMessage:
    msg = EmailMessage()  # email.policy.default: as_bytes() ends lines in a bare LF
    msg["From"] = f"Shop news <{SENDER}>"
    msg["To"] = "subscribers@sender.example"
    msg["Subject"] = "Our November news"
    msg["Message-ID"] = "<lf-news-1@sender.example>"
    # Longer than 78 characters: folded over two lines, the label on the second.
    msg["List-Id"] = ("The monthly deals of the shop, sent to everyone who asked "
                      "<deals.sender.example>")
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg.set_content(TEXT)
    msg.add_alternative(HTML, subtype="html")
    return msg


def _cli_ok(proxy: Proxy, *args: str) -> None:
    result = proxy.cli(*args)
    assert result.returncode == 0, result.stderr


def test_lf_only_newsletter_from_smtplib_arrives_with_crlf(
    proxy: Proxy, upstream: Upstream
) -> None:
    _cli_ok(proxy, "suppress", "add", "ann@example.net", "--list", "deals.sender.example")
    msg = _lf_newsletter()
    raw = msg.as_bytes()
    assert b"\r" not in raw and b"\nList-Id: The monthly" in raw
    assert b"\n <deals.sender.example>\n" in raw  # the folded header
    assert b"\n.a line starting with a dot\n" in raw and b"\n.\n" in raw
    with proxy.smtp() as client:
        client.ehlo("client.test")
        refused = client.sendmail(SENDER, ["ann@example.net", "bob@example.net"], raw)
    assert refused == {}

    (copy,) = wait_for(lambda: upstream.to("bob@example.net"), what="bob's copy")
    # smtplib puts a CRLF after the last LF-ended line, before the final ".": one empty line more
    queued = raw.replace(b"\n", b"\r\n") + b"\r\n"
    assert b"\n" not in copy.data.replace(b"\r\n", b"")  # CRLF line ends only
    relayed = with_footer(queued, copy.data)
    head = relayed[: relayed.index(b"Content-Type: text/html")]
    assert strip_trace(copy.data).startswith(head)  # headers and text part: byte for byte
    assert b"\r\n.a line starting with a dot\r\n.\r\n..two dots\r\n" in head
    parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["List-Id"] == msg["List-Id"] and parsed["Subject"] == "Our November news"
    html = parsed.get_body(("html",))
    assert html is not None  # the rewrite engine read the CRLF copy: the pixel is gone
    footer_html = email.message_from_bytes(relayed, policy=email.policy.default)
    assert isinstance(footer_html, EmailMessage)
    expected = footer_html.get_body(("html",))
    assert expected is not None
    assert html.get_content() == expected.get_content().replace(PIXEL, "")
    (delivered,) = wait_for(lambda: proxy.events("delivered"), what="the delivered log line")
    assert (delivered["beacons"], delivered["actions"]) == (1, {"strip": 1})

    # The List-Id was read from the LF-only, folded header: ann is off that list.
    (suppressed,) = wait_for(lambda: proxy.events("suppressed"), what="ann's suppression")
    (received,) = proxy.events("received")
    assert received["message_id"] == "<lf-news-1@sender.example>"
    assert received["size"] == len(queued)
    assert suppressed["recipient"] == "ann@example.net"
    assert suppressed["queue_id"] == received["queue_id"]
    assert upstream.to("ann@example.net") == []
    assert proxy.stop() == 0


def test_mixed_crlf_and_lf_message(proxy: Proxy, upstream: Upstream) -> None:
    data = (b"From: a@sender.example\r\nSubject: mixed\nMessage-ID:\r\n <mixed@sender.example>\n"
            b"\r\nfirst\n.dot\r\nlast\n")
    proxy.send(SENDER, ["bob@example.net"], data)
    (copy,) = wait_for(lambda: upstream.to("bob@example.net"), what="the copy")
    assert strip_trace(copy.data) == with_footer(
        b"From: a@sender.example\r\nSubject: mixed\r\nMessage-ID:\r\n <mixed@sender.example>\r\n"
        b"\r\nfirst\r\n.dot\r\nlast\r\n\r\n", copy.data)
    (received,) = proxy.events("received")
    assert received["message_id"] == "<mixed@sender.example>"


def test_bare_cr_in_header_is_refused_and_the_session_goes_on(
    proxy: Proxy, upstream: Upstream
) -> None:
    with proxy.smtp() as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        client.rcpt("bob@example.net")
        code, reply = client.data(b"Subject: a\rBcc: victim@example.net\r\n\r\nbody\r\n")
        assert (code, reply) == (554, b"5.6.0 Bare CR or LF in message header not allowed")
        client.mail(SENDER)
        client.rcpt("bob@example.net")
        assert client.data(b"Subject: b\nBcc: x@example.net\n\nbody\n")[0] == 250
    (copy,) = wait_for(lambda: upstream.to("bob@example.net"), what="the second message")
    assert strip_trace(copy.data) == with_footer(
        b"Subject: b\r\nBcc: x@example.net\r\n\r\nbody\r\n\r\n", copy.data)
    (rejected,) = proxy.events("rejected")
    assert (rejected["stage"], rejected["code"]) == ("DATA", 554)
    assert len(proxy.events("received")) == 1


# What the client puts before a smuggled transaction, and what the upstream then gets.
SMUGGLING = [
    (b"\n.\n", b"\r\n"),  # a lone "." next to a bare LF: not the end of data, dropped
    (b"\n.\r\n", b"\r\n"),
    (b"\r\n.\n", b"\r\n"),
    (b"\r.\r", b"\r\n.\r\n"),  # bare CRs in the body: queued as they are, sent as CRLF
    (b"\n..\n", b"\r\n.\r\n"),  # a stuffed "." line (smtplib's): queued as <CRLF>.<CRLF>
    (b"\r\n..\r\n", b"\r\n.\r\n"),
]


def _smuggled(i: int) -> bytes:
    return (b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim%d@example.net>\r\nDATA\r\n"
            b"Subject: smuggled %d\r\n\r\nx\r\n" % (i, i))


def test_smuggled_transactions_stay_content_all_the_way_to_the_upstream(
    proxy: Proxy, upstream: Upstream
) -> None:
    head = b"From: a@sender.example\r\nSubject: s\r\nMessage-ID: <s@sender.example>\r\n\r\n"
    sent = head + b"".join(b"part %d" % i + before + _smuggled(i)
                           for i, (before, _) in enumerate(SMUGGLING))
    expected = head + b"".join(b"part %d" % i + after + _smuggled(i)
                               for i, (_, after) in enumerate(SMUGGLING))
    with proxy.smtp() as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        client.rcpt("bob@example.net")
        assert client.docmd("DATA")[0] == 354
        client.send(sent + b".\r\n")  # as is: neither dot-stuffed nor line ends changed
        code, reply = client.getreply()
        assert code == 250, reply
        assert client.noop()[0] == 250  # nothing of the content was taken for a command

    (copy,) = wait_for(lambda: upstream.to("bob@example.net"), what="the copy")
    assert strip_trace(copy.data) == with_footer(expected, copy.data)  # not cut at any "." line
    wait_for(lambda: proxy.events("delivered"), what="the delivered log line")
    assert proxy.stop() == 0  # the courier says QUIT: the upstream has read all it was sent
    assert [m.rcpt_tos for m in upstream.messages] == [["bob@example.net"]]  # one message
    assert not [a for a in upstream.handler.attempts if "victim" in a]  # no smuggled RCPT
    assert len(proxy.events("received")) == 1


def test_long_lines_and_nul_are_refused_before_250_and_never_reach_the_upstream(
    proxy: Proxy, upstream: Upstream
) -> None:
    """RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: an upstream may refuse these after our 250."""
    head = b"From: a@sender.example\r\nSubject: lines\r\n"
    refused = [
        b"Subject: " + b"h" * 5000 + b"\r\n\r\nbody\r\n",  # a 5 000-octet header line
        head + b"\r\n" + b"b" * 20_000 + b"\r\n",  # a 20 000-octet body line
        head + b"\r\nNUL \x00 in the body\r\n",
        head + b"\r\nbody\r\n\x00.\r\nMAIL FROM:<evil@evil.example>\r\n",  # NUL before a dot
    ]
    fine = head + b"\r\n" + b"x" * 998 + b"\r\n"  # the longest line allowed
    with proxy.smtp() as client:
        client.ehlo("client.test")
        for data in refused:
            client.mail(SENDER)
            client.rcpt("bob@example.net")
            assert client.docmd("DATA")[0] == 354
            client.send(data + b".\r\n")
            code, reply = client.getreply()
            assert code == 554 and reply.startswith(b"5.6.0 "), reply
        client.mail(SENDER)
        client.rcpt("bob@example.net")
        assert client.data(fine)[0] == 250
    (copy,) = wait_for(lambda: upstream.to("bob@example.net"), what="the fine message")
    assert b"\r\n" + b"x" * 998 + b"\r\n" in copy.data
    assert len(upstream.messages) == 1
    reasons = [e["reason"] for e in proxy.events("rejected")]
    assert [r.split(" ")[0] for r in reasons] == ["Line", "Line", "NUL", "NUL"], reasons
    assert len(proxy.events("received")) == 1
