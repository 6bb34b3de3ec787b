"""End-to-end: round 3's shortcuts (a known body under another header, the footer's
rebased and slotted plans, the line ends and line-start periods proven from the last
copy) through the real relay, against copies worked out here without them.

A personalised newsletter (its own ``To`` and ``Message-ID`` per message) whose text
and HTML are full of lines that start with a period -- a lone ``.``, ``..``, a period
before a soft line break's continuation, an SMTP command after a ``.`` line -- goes to
several recipients per message: every message after the first is a rebase, every copy
after a message's first a further copy (its periods mapped from the last copy, not
searched).  The upstream (a real aiosmtpd, which unstuffs) must get each copy whole:
the message as sent with the footer, nothing cut at a ``.`` line, no extra period, no
command taken from the content.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, strip_trace, wait_for, with_footer

pytestmark = pytest.mark.e2e

SENDER = "news@sender.example"
RCPTS = ["bob@example.net", "carol@example.net", "dave@example.net"]
SMUGGLED = b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
TEXT = (b".\r\n..\r\n.starts with a dot\r\nmiddle\r\n.\r\n" + SMUGGLED + b".\r\n"
        b"QUIT\r\nend of text.\r\n")
#: quoted-printable written by hand (quopri would encode a lone "." as =2E): a soft line
#: break whose continuation starts with a period, and "." lines
QP_HTML = (b"<html><body>\r\n.\r\n<p>" + b"x" * 70 + b"=\r\n.period after a soft break</p>\r\n"
           b".\r\n" + SMUGGLED + b"<p>Bye.</p>\r\n</body></html>\r\n")


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, upstream=upstream.port).start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _message(n: int) -> bytes:
    """Message ``n``: the same body, a header of its own."""
    return (b"From: Shop <news@sender.example>\r\nTo: reader%d@example.net\r\n"
            b"Subject: Dots\r\nMessage-ID: <dots-%d@sender.example>\r\n"
            b"List-Id: Dots <dots.sender.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain\r\n\r\n" + TEXT +
            b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + QP_HTML +
            b"--b1--\r\n") % (n, n)


def test_personalised_copies_full_of_period_lines_arrive_whole(
    proxy: Proxy, upstream: Upstream
) -> None:
    messages = [_message(n) for n in range(4)]
    for data in messages:
        with proxy.smtp() as client:
            client.ehlo("client.test")
            assert client.sendmail(SENDER, RCPTS, data) == {}  # smtplib stuffs the periods
    wait_for(lambda: len(upstream.messages) >= 12, what="twelve copies")
    copies = upstream.messages
    assert len(copies) == 12 and all(len(c.rcpt_tos) == 1 for c in copies)
    for copy in copies:
        (n,) = [n for n, data in enumerate(messages)
                if b"<dots-%d@" % n in copy.data]
        assert strip_trace(copy.data) == with_footer(messages[n], copy.data), copy.rcpt_tos
    assert not [a for a in upstream.handler.attempts if "victim" in a]  # no smuggled RCPT
    wait_for(lambda: len(proxy.events("delivered")) == 12, what="the delivered log lines")
    # the shortcut ran: messages 2-4 were rebased, not analysed
    assert proxy.metric('beacon_proxy_analyses_total{source="header"}') == 3
    assert proxy.stop() == 0
