"""SmtpProtocol: what it adds to aiosmtpd's SMTP (logging of refusals, HELP, limits)."""

from __future__ import annotations

import importlib

import pytest

from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol, peer_ip
from tests.smtpd.conftest import Serve, events


async def test_library_refusals_are_logged_with_their_stage(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 503  # no EHLO yet
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 503  # no MAIL yet
    assert (await client.cmd("BOGUS")).code == 500
    stages = [(e["stage"], e["code"]) for e in events(caplog, "rejected")]
    assert stages == [("MAIL", 503), ("RCPT", 503), ("COMMAND", 500)]


async def test_help_still_works(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    reply = await client.cmd("HELP")
    assert reply.code == 250
    assert "MAIL" in reply.text and "DATA" in reply.text.split()
    assert (await client.cmd("HELP DATA")).text == "250 Syntax: DATA"
    assert (await client.cmd("HELP RCPT")).text.startswith("250 Syntax: RCPT TO: <address>")


async def test_pipelined_commands(serve: Serve) -> None:
    running = await serve()
    client = await running.connect()
    await client.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                      b"RCPT TO:<>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    codes = [(await client.reply()).code for _ in range(7)]
    assert codes == [250, 250, 250, 553, 354, 250, 221]
    assert await client.at_eof()
    [(envelope, data)] = running.enqueue.calls
    assert envelope.recipients == ("b@example.org",)
    assert data == b"Subject: p\r\n\r\nbody\r\n"


async def test_command_size_limits_are_per_connection(serve: Serve) -> None:
    running = await serve()
    other = await running.connect()
    assert (await other.cmd("EHLO other.test")).code == 250
    client = await running.connect()
    for _ in range(30):  # aiosmtpd grows the MAIL limit on every EHLO
        assert (await client.cmd("EHLO client.test")).code == 250
    long_mail = "MAIL FROM:<" + "a" * 60 + "@" + "b" * 500 + ".example>"
    assert (await other.cmd(long_mail)).text == "500 Command line too long"


def test_peer_ip() -> None:
    assert peer_ip(("127.0.0.1", 2525)) == "127.0.0.1"
    assert peer_ip(("::1", 2525, 0, 0)) == "::1"
    assert peer_ip(None) == ""


async def test_connections_admit_and_release() -> None:
    conns = Connections(limit=1)
    a, b = object.__new__(SmtpProtocol), object.__new__(SmtpProtocol)
    assert conns.admit(a) is None
    assert conns.admit(b) == "421 4.7.0 Too many connections"
    conns.release(b)  # never admitted: no effect
    assert len(conns) == 1
    conns.release(a)
    conns.release(a)
    assert len(conns) == 0
    conns.stopping = True
    assert conns.admit(a) == "421 4.3.2 Service shutting down"


@pytest.mark.parametrize(
    "module",
    ["data", "handler", "message", "passwords", "policy", "protocol", "replies", "server"],
)
def test_every_module_declares_its_api(module: str) -> None:
    mod = importlib.import_module(f"beacon_proxy.smtpd.{module}")
    assert mod.__all__
    for attr in mod.__all__:
        assert hasattr(mod, attr), attr


def test_the_package_imports_nothing_heavy() -> None:
    """``hash-password`` imports smtpd.passwords: the package must not pull in aiosmtpd."""
    import beacon_proxy.smtpd as smtpd

    assert not hasattr(smtpd, "SmtpServer") and smtpd.__doc__

