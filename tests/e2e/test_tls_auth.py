"""End-to-end: STARTTLS and AUTH on the real server (AUTH never in clear text), and
AUTH guessing cut off and logged for fail2ban."""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from beacon_proxy.smtpd.passwords import hash_password
from tests.e2e.harness import ROOT, Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[tuple[Proxy, Upstream, ssl.SSLContext]]:
    with _tls_proxy(tmp_path, "") as running:
        yield running


@contextlib.contextmanager
def _tls_proxy(tmp_path: Path, extra: str) -> Iterator[tuple[Proxy, Upstream, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    upstream = Upstream().start()
    hashed = hash_password("correct horse", n=2**12)
    proxy = Proxy(tmp_path, f"""
[smtp]
allow_networks = ["192.0.2.0/24"]
tls_cert = "{tmp_path / "cert.pem"}"
tls_key = "{tmp_path / "key.pem"}"
{extra}
[smtp.auth_users]
newsletter = "{hashed}"
""", upstream=upstream.port)
    proxy.start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        yield proxy, upstream, client_ctx
    finally:
        if proxy.proc is not None and proxy.proc.poll() is None:
            proxy.kill9()
        upstream.stop()


def test_auth_is_offered_only_after_starttls(
    tls_proxy: tuple[Proxy, Upstream, ssl.SSLContext]
) -> None:
    proxy, upstream, ctx = tls_proxy
    with proxy.smtp() as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AG5ld3NsZXR0ZXIAY29ycmVjdCBob3JzZQ==")
        assert code == 538
        client.mail("news@sender.example")
        assert client.rcpt("ann@example.net")[0] == 554  # not authenticated, not allowed
        client.rset()
        client.starttls(context=ctx)
        client.ehlo("client.test")
        assert client.has_extn("auth")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("newsletter", "wrong")
        assert info.value.smtp_code == 535
    with proxy.smtp() as client:
        client.starttls(context=ctx)
        client.login("newsletter", "correct horse")
        client.sendmail("news@sender.example", ["ann@example.net"], newsletter())
    (copy,) = wait_for(lambda: upstream.to("ann@example.net"), what="authenticated relay")
    assert b"with ESMTPSA id" in copy.data
    assert proxy.events("received")[0]["auth_user"] == "newsletter"


def _plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _documented_failregex() -> re.Pattern[str]:
    """The fail2ban ``failregex`` of docs/security-smtp.md, as a Python pattern."""
    doc = (ROOT / "docs" / "security-smtp.md").read_text()
    (line,) = re.findall(r"^failregex = (.+)$", doc, re.MULTILINE)
    return re.compile(line.replace("<ADDR>", r"(?P<addr>[0-9A-Fa-f:.]+)"))


def test_guessing_is_cut_off_after_three_and_logged_for_fail2ban(
    tls_proxy: tuple[Proxy, Upstream, ssl.SSLContext]
) -> None:
    """The relay's real clock: the waits it adds (0.5 s, then 1 s) are tested, not timed."""
    proxy, upstream, ctx = tls_proxy
    with proxy.smtp() as client:
        client.starttls(context=ctx)
        client.ehlo("guesser.test")
        assert client.docmd("AUTH", _plain("newsletter", "pw-first"))[0] == 535
        assert client.docmd("AUTH", _plain("admin@relay.test", "pw-second"))[0] == 535
        code, reply = client.docmd("AUTH", _plain("newsletter", "pw-third"))
        assert (code, reply) == (421, b"4.7.0 Too many failed authentication attempts, "
                                      b"closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):  # the right one: never checked
            client.docmd("AUTH", _plain("newsletter", "correct horse"))
    failures = proxy.events("auth_failed")
    assert [(e["client_address"], e["mechanism"], e["user"]) for e in failures] == [
        ("127.0.0.1", "PLAIN", "newsletter"), ("127.0.0.1", "PLAIN", "admin@relay.test"),
        ("127.0.0.1", "PLAIN", "newsletter")]
    assert proxy.metric('beacon_proxy_smtp_auth_total{result="failure"}') == 3
    # The documented fail2ban filter finds exactly these lines, with the right address.
    failregex = _documented_failregex()
    found = [m.group("addr") for line in proxy.log_path.read_text().splitlines()
             if (m := failregex.search(line))]
    assert found == ["127.0.0.1"] * 3
    assert "pw-" not in proxy.log_path.read_text()  # no password reaches the log

    # A new connection may still log in (3 failures are far from auth_failure_limit).
    with proxy.smtp() as client:
        client.starttls(context=ctx)
        client.login("newsletter", "correct horse")
        client.sendmail("news@sender.example", ["ann@example.net"], newsletter())
    wait_for(lambda: upstream.to("ann@example.net"), what="the authenticated message")
    assert proxy.metric('beacon_proxy_smtp_auth_total{result="success"}') == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_starttls_auth_and_relay_on_each_event_loop(tmp_path: Path, loop: str) -> None:
    """aiosmtpd's STARTTLS (an SSLProtocol spliced into the transport) on both loops."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with _tls_proxy(tmp_path, f'event_loop = "{loop}"') as (proxy, upstream, ctx):
        (started,) = proxy.events("started")
        assert started["event_loop"].split()[0] == loop
        with proxy.smtp() as client:
            client.starttls(context=ctx)
            client.login("newsletter", "correct horse")
            client.sendmail("news@sender.example", ["ann@example.net"], newsletter())
        (copy,) = wait_for(lambda: upstream.to("ann@example.net"), what=f"relay on {loop}")
        assert b"with ESMTPSA id" in copy.data
