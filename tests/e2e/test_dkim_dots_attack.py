"""End-to-end: round 6's DKIM shortcut under attack (branch wt-attack4) -- the signed
copies' line-start periods carried from the last copy (``Copy.dots``), which the
courier stuffs without searching, through the real relay with DKIM on.

``beacon-proxy serve`` signs with an RSA and an Ed25519 key of the sender's domain and
a key of another domain.  A sender who controls the content sends a personalised
newsletter (one message per reader, the same body under its own header, so every
message after the first is a further copy of the last) full of lines that start with a
period -- a lone ``.`` followed by SMTP commands, ``..``, a period right after the
header and at the very end -- to several recipients each; then the same body from a
domain without a key (not signed: the periods come from the first search only), and a
body of more periods than are carried.  A period the relay failed to stuff would end
the DATA early at the upstream (a real aiosmtpd, which unstuffs), which would then
take the rest for commands: each copy must arrive whole (the message as sent with the
footer, under our fields), verify, and no smuggled recipient may be seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from beacon_proxy.rewrite.dkim import SigningKey, dns_record
from beacon_proxy.rewrite.lineends import MAX_DOTS
from tests.e2e.harness import Proxy, Upstream, strip_trace, wait_for, with_footer
from tests.e2e.test_shortcuts_attack import RCPTS, SENDER, SMUGGLED, _message

pytestmark = pytest.mark.e2e

KEYS = [
    SigningKey("sender.example", "r6rsa", rsa.generate_private_key(public_exponent=65537,
                                                                   key_size=1024)),
    SigningKey("sender.example", "r6ed", ed25519.Ed25519PrivateKey.generate()),
    SigningKey("shop.example", "r6shop", ed25519.Ed25519PrivateKey.generate()),
]


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    tables = []
    for n, key in enumerate(KEYS):
        path = tmp_path / f"dkim{n}.pem"
        path.write_bytes(key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        path.chmod(0o600)
        tables.append(f'{{ domain = "{key.domain}", selector = "{key.selector}", '
                      f'private_key_file = "{path}" }}')
    p = Proxy(tmp_path, "[dkim]\nkeys = [" + ", ".join(tables) + "]\n",
              upstream=upstream.port).start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _unsigned(data: bytes) -> bytes:
    """``data`` without the ``DKIM-Signature`` fields the relay put on top."""
    lines = data.split(b"\r\n")
    i = 0
    while lines[i].startswith(b"DKIM-Signature: ") or lines[i].startswith((b"\t", b" ")):
        i += 1
    return b"\r\n".join(lines[i:])


def _verifies(data: bytes) -> bool:
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): dns_record(k).encode()
               for k in KEYS}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    d = dkim.DKIM(data)
    sigs = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    return len(sigs) == 2 and all(d.verify(idx=i, dnsfunc=dnsfunc) for i in range(2))


def _edges(n: int, domain: bytes = b"sender.example") -> bytes:
    """A message whose body starts and ends with period lines, with a smuggling attempt
    between (text/plain, one part: the footer goes after the last line)."""
    return (b"From: Shop <news@" + domain + b">\r\nTo: reader%d@example.net\r\n"
            b"Subject: Edges\r\nMessage-ID: <edges-%d@" + domain + b">\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            b".\r\n.." + b"\r\n.\r\n" + SMUGGLED + b".\r\n" * 3 + b"x\r\n.\r\n") % (n, n)


def test_signed_copies_full_of_period_lines_arrive_whole(
    proxy: Proxy, upstream: Upstream
) -> None:
    signed = [_message(n) for n in range(4)] + [_edges(n) for n in range(4, 6)]
    many = (b"From: a@sender.example\r\nTo: r@example.net\r\nSubject: many\r\n"
            b"Message-ID: <many@sender.example>\r\nContent-Type: text/plain\r\n\r\n"
            + b".\r\n" * (MAX_DOTS + 5) + SMUGGLED + b".\r\n")
    unsigned = [_message(n).replace(b"news@sender.example", b"news@nokey.example")
                for n in range(6, 8)] + [_edges(8, b"nokey.example")]
    messages = [*signed, many, *unsigned]
    for data in messages:
        with proxy.smtp() as client:
            client.ehlo("client.test")
            assert client.sendmail(SENDER, RCPTS, data) == {}  # smtplib stuffs the periods
    total = len(messages) * len(RCPTS)
    wait_for(lambda: len(upstream.messages) >= total, what=f"{total} copies", timeout=60)
    copies = upstream.messages
    assert len(copies) == total and all(len(c.rcpt_tos) == 1 for c in copies)
    for rcpt in RCPTS:
        assert len(upstream.to(rcpt)) == len(messages)
    for copy in copies:
        (sent,) = [m for m in messages if m.split(b"\r\n\r\n")[0].split(b"Message-ID: ")[1]
                   .split(b"\r\n")[0] in copy.data]
        if b"nokey.example" in sent:
            assert not copy.data.startswith(b"DKIM-Signature: ")
        else:
            assert _verifies(copy.data), copy.rcpt_tos
        assert strip_trace(_unsigned(copy.data)) == with_footer(sent, copy.data)
    assert not [a for a in upstream.handler.attempts if "victim" in a]  # no smuggled RCPT
    wait_for(lambda: len(proxy.events("delivered")) == total, what="the delivered lines")
    reports = {e["dkim"] for e in proxy.events("delivered")}
    assert reports == {"signed d=sender.example s=r6rsa,r6ed", "no key for nokey.example"}
    assert proxy.stop() == 0


def test_bare_line_ends_next_to_periods_arrive_whole(proxy: Proxy, upstream: Upstream) -> None:
    """DATA written raw (no client stuffing or line-end fixing): bare CRs and LFs next to
    periods, which the relay's line ends make into period lines of the signed copy (a
    bare CR is no line end when received, but the signed copy has CRLF only), in one
    body sent twice under two headers (a further copy with a bare CR is not compared
    with the last one: its line ends are made and its periods searched whole).
    Every copy verifies -- its body hash covers every byte the upstream took as content
    -- and no command is taken from the content."""
    body = (b".\r\nx\r.\r\n" + SMUGGLED + b"y\r.\rQUIT\r\n\r.\r\r\n.\r\n" + b"z\r.\r\n" * 3
            + b"a\n.\nMAIL FROM:<evil@evil.example>\n.\r\n" + SMUGGLED + b"end\r.")
    for n in range(2):
        head = (b"From: Shop <news@sender.example>\r\nTo: reader%d@example.net\r\n"
                b"Subject: Bare\r\nMessage-ID: <bare-%d@sender.example>\r\n"
                b"Content-Type: text/plain\r\n\r\n") % (n, n)
        with proxy.smtp() as client:
            client.ehlo("client.test")
            assert client.mail(SENDER)[0] == 250
            for rcpt in RCPTS:
                assert client.rcpt(rcpt)[0] == 250
            assert client.docmd("DATA")[0] == 354
            # stuffed by hand (after a CRLF and after a bare LF, as the relay unstuffs);
            # the bare line ends left as they are
            client.send((head + body).replace(b"\n.", b"\n..") + b"\r\n.\r\n")
            assert client.getreply()[0] == 250
    total = 2 * len(RCPTS)
    wait_for(lambda: len(upstream.messages) >= total, what=f"{total} copies", timeout=60)
    copies = upstream.messages
    assert len(copies) == total and all(len(c.rcpt_tos) == 1 for c in copies)
    assert all(_verifies(copy.data) for copy in copies)
    assert all(copy.data.count(b"MAIL FROM:<evil@evil.example>") == 3 for copy in copies)
    assert not [a for a in upstream.handler.attempts if "victim" in a]  # no smuggled RCPT
    wait_for(lambda: len(proxy.events("delivered")) == total, what="the delivered lines")
    assert proxy.stop() == 0
