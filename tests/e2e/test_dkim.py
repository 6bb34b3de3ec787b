"""End-to-end: the real relay signs every copy it delivers (issue 10's first "done when").

``beacon-proxy serve`` with a ``[dkim]`` key for the newsletter's ``From``
domain; the copy the harness Upstream receives verifies with dkimpy against
the key's published record, its ``h=`` covers From (over-signed),
List-Unsubscribe and List-Unsubscribe-Post, and the sender's signature, broken
by the rewrite, is gone.  Mail from a domain without a key leaves unsigned,
and a bad key file stops ``serve`` at start with one line naming the key.  Every
recipient's copy of one message verifies (the further copies take the body hash's
fast path).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from beacon_proxy.rewrite.dkim import SigningKey, dns_record
from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e

DOMAIN = "sender.example"  # the harness newsletter is From: news@sender.example
SELECTOR = "e2e2026"
SENDER_SIG = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example;\r\n"
              b"\ts=esp; h=From:To:Subject:Date:Message-ID:List-Id; bh=AAAA; b=BBBB\r\n")


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey(DOMAIN, SELECTOR, rsa.generate_private_key(public_exponent=65537,
                                                                 key_size=2048))


def _write_key(path: Path, key: SigningKey) -> None:
    path.write_bytes(key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream, key: SigningKey) -> Iterator[Proxy]:
    path = tmp_path / "dkim.pem"
    _write_key(path, key)
    p = Proxy(tmp_path, f"""
[dkim]
domain = "{DOMAIN}"
selector = "{SELECTOR}"
private_key_file = "{path}"
[web]
public_url = "https://prefs.relay.test"
""", upstream=upstream.port)
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _verify(data: bytes, key: SigningKey) -> bool:
    record = dns_record(key).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{key.selector}._domainkey.{key.domain}.".encode() else None

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


def _delivered(proxy: Proxy, upstream: Upstream, rcpt: str) -> tuple[bytes, dict[str, object]]:
    [copy] = wait_for(lambda: upstream.to(rcpt), what=f"a copy for {rcpt}")
    [event] = wait_for(lambda: [e for e in proxy.events("delivered") if e["recipient"] == rcpt],
                       what="the delivered event")
    return copy.data, event


def test_delivered_copy_verifies_and_covers_the_list_headers(
        proxy: Proxy, upstream: Upstream, key: SigningKey) -> None:
    message = SENDER_SIG + newsletter("Signed news")
    proxy.send("news@sender.example", ["ann@example.org"], message)
    data, event = _delivered(proxy, upstream, "ann@example.org")
    assert data.startswith(b"DKIM-Signature: ")
    assert _verify(data, key)
    d = dkim.DKIM(data)
    [sig] = [v for n, v in d.headers if n.lower() == b"dkim-signature"]  # the sender's is gone
    tags = dict(dkim.util.parse_tag_value(sig))
    assert (tags[b"d"], tags[b"s"], tags[b"a"]) == (DOMAIN.encode(), SELECTOR.encode(),
                                                    b"rsa-sha256")
    h = [n.strip().lower() for n in tags[b"h"].split(b":")]
    assert {b"from", b"list-unsubscribe", b"list-unsubscribe-post"} <= set(h)
    assert h.count(b"from") == 2
    assert b"s=esp" not in data
    assert event["dkim"] == f"signed d={DOMAIN} s={SELECTOR}; sender signature removed"
    assert event["outcome"] == "stripped"  # the refused copy lost its pixel: modified
    # What verifies is what the upstream got: one byte more and it fails.
    assert not _verify(data.replace(b"News", b"Newz", 1), key)


def test_every_copy_of_one_message_verifies(proxy: Proxy, upstream: Upstream,
                                            key: SigningKey) -> None:
    """Further copies of one message are checked and hashed against the last copy
    (rewrite/dkimbody.py): each recipient's copy, with its own footer link and
    List-Unsubscribe, verifies."""
    recipients = [f"r{k}@example.org" for k in range(5)]
    proxy.send("news@sender.example", recipients, newsletter("Many copies"))
    copies = [_delivered(proxy, upstream, rcpt)[0] for rcpt in recipients]
    assert len(set(copies)) == len(recipients)
    assert all(_verify(data, key) for data in copies)


def test_mail_from_another_domain_leaves_unsigned(proxy: Proxy, upstream: Upstream) -> None:
    message = newsletter("Other").replace(b"news@sender.example", b"news@other.example")
    proxy.send("news@other.example", ["bob@example.org"], message)
    data, event = _delivered(proxy, upstream, "bob@example.org")
    assert b"DKIM-Signature" not in data
    assert event["dkim"] == "no key for other.example"


def test_a_bad_key_file_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "dkim.pem"
    path.write_text("not a key\n")
    proxy = Proxy(tmp_path, f'[dkim]\ndomain = "{DOMAIN}"\nselector = "s"\n'
                  f'private_key_file = "{path}"\n')
    proxy.start(wait=False)
    assert proxy.proc is not None
    _, err = proxy.proc.communicate(timeout=30)
    assert proxy.proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "configuration error: dkim.private_key_file:" in lines[0]
    assert "not a PEM private key" in lines[0]


def test_sighup_rotates_the_key_without_a_restart(proxy: Proxy, upstream: Upstream,
                                                  tmp_path: Path, key: SigningKey) -> None:
    """A new selector and key file in the configuration, then SIGHUP: the next copy is
    signed with the new key, by the same process."""
    new = SigningKey(DOMAIN, "e2e2027", rsa.generate_private_key(public_exponent=65537,
                                                                 key_size=2048))
    new_file = tmp_path / "dkim-2027.pem"
    _write_key(new_file, new)
    proxy.config_path.write_text(proxy.config_path.read_text()
                                 .replace(SELECTOR, new.selector)
                                 .replace(str(tmp_path / "dkim.pem"), str(new_file)))
    assert proxy.proc is not None
    pid = proxy.proc.pid
    proxy.proc.send_signal(signal.SIGHUP)
    (reloaded,) = wait_for(lambda: proxy.events("reloaded"), 30, "the reload")
    assert "dkim" in reloaded["applied"] and "dkim" not in reloaded["restart_needed"]
    proxy.send("news@sender.example", ["ann@example.org"], newsletter("Rotated"))
    data, event = _delivered(proxy, upstream, "ann@example.org")
    assert event["dkim"] == f"signed d={DOMAIN} s={new.selector}"
    assert _verify(data, new) and not _verify(data, key)
    assert proxy.proc.pid == pid and proxy.proc.poll() is None
