"""End-to-end: STARTTLS and AUTH on the real server (AUTH never in clear text)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from beacon_proxy.smtpd.passwords import hash_password
from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[tuple[Proxy, Upstream, ssl.SSLContext]]:
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
[smtp.auth_users]
newsletter = "{hashed}"
""", upstream=upstream.port)
    proxy.start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield proxy, upstream, client_ctx
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
