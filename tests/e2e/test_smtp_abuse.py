"""End-to-end: AUTH guessing and connection floods against the real ``beacon-proxy serve``.

The guessing scenario runs over STARTTLS with the relay's real clock: the
waits it adds (0.5 s, then 1 s) are part of what is tested, not timed.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from beacon_proxy.smtpd.passwords import hash_password
from tests.e2e.harness import ROOT, Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse"


def _plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _documented_failregex() -> re.Pattern[str]:
    """The fail2ban ``failregex`` of docs/security-smtp.md, as a Python pattern."""
    doc = (ROOT / "docs" / "security-smtp.md").read_text()
    (line,) = re.findall(r"^failregex = (.+)$", doc, re.MULTILINE)
    return re.compile(line.replace("<ADDR>", r"(?P<addr>[0-9A-Fa-f:.]+)"))


@pytest.fixture
def tls_proxy(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[Proxy, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    proxy = Proxy(tmp_path, f"""
[smtp]
allow_networks = ["192.0.2.0/24"]
tls_cert = "{tmp_path / "cert.pem"}"
tls_key = "{tmp_path / "key.pem"}"
[smtp.auth_users]
newsletter = "{hash_password(PASSWORD, n=2**12)}"
""", upstream=upstream.port)
    proxy.start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield proxy, client_ctx
    if proxy.proc is not None and proxy.proc.poll() is None:
        proxy.kill9()


def test_guessing_is_cut_off_after_three_and_logged_for_fail2ban(
    tls_proxy: tuple[Proxy, ssl.SSLContext], upstream: Upstream
) -> None:
    proxy, ctx = tls_proxy
    with proxy.smtp() as client:
        client.starttls(context=ctx)
        client.ehlo("guesser.test")
        assert client.docmd("AUTH", _plain("newsletter", "pw-first"))[0] == 535
        assert client.docmd("AUTH", _plain("admin@relay.test", "pw-second"))[0] == 535
        code, reply = client.docmd("AUTH", _plain("newsletter", "pw-third"))
        assert (code, reply) == (421, b"4.7.0 Too many failed authentication attempts, "
                                      b"closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):  # the right one: never checked
            client.docmd("AUTH", _plain("newsletter", PASSWORD))
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
        client.login("newsletter", PASSWORD)
        client.sendmail("news@sender.example", ["ann@example.net"], newsletter())
    wait_for(lambda: upstream.to("ann@example.net"), what="the authenticated message")
    assert proxy.metric('beacon_proxy_smtp_auth_total{result="success"}') == 1


def _greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(1024).startswith(b"220 ")
    return sock


def test_one_untrusted_address_cannot_take_every_slot(tmp_path: Path, upstream: Upstream
                                                      ) -> None:
    proxy = Proxy(tmp_path, """
[smtp]
allow_networks = ["10.0.0.0/8"]
max_connections_per_client = 5
idle_timeout_untrusted = 1
auth_delay_max = 0.5
""", upstream=upstream.port).start()
    try:
        held = [_greeted(proxy.smtp_port) for _ in range(5)]
        with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=30) as sixth:
            assert sixth.recv(1024) == b"421 4.7.0 Too many connections from your address\r\n"
            assert sixth.recv(1024) == b""
        for sock in held:  # idle strangers: closed by the relay after idle_timeout_untrusted
            assert sock.recv(1024) == b""
            sock.close()
        # Their slots are free again once the relay has seen them go.
        wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0,
                 what="the sessions to close")
        with _greeted(proxy.smtp_port) as again:
            again.sendall(b"NOOP\r\n")
            assert again.recv(1024).startswith(b"250")
        rejected = proxy.events("rejected")
        assert [(e["stage"], e["code"]) for e in rejected] == [("CONNECT", 421)]
    finally:
        proxy.stop()
