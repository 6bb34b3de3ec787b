"""AUTH: only after STARTTLS, only with users, scrypt checked off the event loop."""

from __future__ import annotations

import base64
import logging
import threading

import aiosmtplib
import pytest

from beacon_proxy.smtpd import handler as handler_module
from beacon_proxy.smtpd.passwords import hash_password, verify_password
from tests.smtpd.client import RawClient
from tests.smtpd.conftest import OUTSIDE, PASSWORD, USER_HASH, WAIT, Running, Serve, Tls, events

PLAIN_OK = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
PLAIN_BAD = base64.b64encode(b"\0alice\0wrong").decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def serve_tls(serve: Serve, tls: Tls, *, users: bool = True) -> Running:
    return await serve(tls_cert=tls.cert, tls_key=tls.key, allow_networks=OUTSIDE,
                       auth_users={"alice": USER_HASH} if users else {})


async def tls_client(running: Running, tls: Tls) -> RawClient:
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    await client.starttls(tls.client)
    return client


async def test_auth_offered_only_after_starttls(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await running.connect()
    before = await client.cmd("EHLO client.test")
    assert before.lines == ["mx.test.example", "SIZE 26214400", "8BITMIME", "PIPELINING",
                            "SMTPUTF8", "STARTTLS"]
    await client.starttls(tls.client)
    after = await client.cmd("EHLO client.test")
    assert after.lines == ["mx.test.example", "SIZE 26214400", "8BITMIME", "PIPELINING",
                           "SMTPUTF8", "AUTH PLAIN LOGIN"]


async def test_no_auth_without_users(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls, users=False)
    client = await tls_client(running, tls)
    after = await client.cmd("EHLO client.test")
    assert after.lines == ["mx.test.example", "SIZE 26214400", "8BITMIME", "PIPELINING", "SMTPUTF8"]
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 504


async def test_auth_before_tls_refused(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await running.connect()
    assert (await client.cmd("EHLO client.test")).code == 250
    reply = await client.cmd(f"AUTH PLAIN {PLAIN_OK}")
    assert reply.code == 538  # 5.7.11 Encryption required
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 554  # still not relaying


async def test_authenticated_client_may_relay_from_outside(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=running.port, start_tls=False,
                               tls_context=tls.client, timeout=WAIT) as smtp:
        await smtp.starttls(tls_context=tls.client)
        await smtp.login("alice", PASSWORD)
        errors, reply = await smtp.sendmail("alice@example.org", ["bob@example.net"],
                                            b"Subject: hi\r\n\r\nhello\r\n")
    assert errors == {}
    [(envelope, _)] = running.enqueue.calls
    assert reply.endswith(envelope.queue_id)
    assert envelope.protocol == "ESMTPSA"
    assert envelope.auth_user == "alice"


async def test_tls_without_auth_is_esmtps_and_not_a_relay(serve: Serve, tls: Tls) -> None:
    running = await serve(tls_cert=tls.cert, tls_key=tls.key)  # 127.0.0.1 allowed
    client = await tls_client(running, tls)
    reply = await client.transaction("a@example.org", ["b@example.org"],
                                     b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert reply.code == 250
    [(envelope, _)] = running.enqueue.calls
    assert envelope.protocol == "ESMTPS"
    assert envelope.auth_user is None


async def test_wrong_password(serve: Serve, tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    reply = await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")
    assert reply.text == "535 5.7.8 Authentication credentials invalid"
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.org>")).code == 554
    [failed, _] = events(caplog, "rejected")
    assert failed["stage"] == "AUTH"
    assert failed["code"] == 535
    assert failed["user"] == "alice"
    assert failed["client_address"] == "127.0.0.1"
    assert all("wrong" not in r.getMessage() and "wrong" not in str(getattr(r, "fields", ""))
               for r in caplog.records)


async def test_unknown_user_is_checked_against_a_dummy_hash(
        serve: Serve, tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[tuple[bytes | str, str, str]] = []

    def spy(password: str | bytes, hashed: str) -> bool:
        checked.append((password, hashed, threading.current_thread().name))
        return verify_password(password, hashed)

    monkeypatch.setattr(handler_module, "verify_password", spy)
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    plain = base64.b64encode(b"\0mallory\0" + PASSWORD.encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {plain}")).code == 535
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    [(_, dummy, thread1), (_, real, thread2)] = checked
    assert real == USER_HASH
    assert dummy != USER_HASH
    assert dummy.split("$")[:4] == USER_HASH.split("$")[:4]  # same cost parameters
    main = threading.main_thread().name
    assert thread1 != main  # scrypt never runs on the event loop's thread
    assert thread2 != main


async def test_auth_plain_with_challenge(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    challenge = await client.cmd("AUTH PLAIN")
    assert challenge.text == "334 "
    assert (await client.cmd(PLAIN_OK)).text == "235 2.7.0 Authentication successful"
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 503  # already authenticated


async def test_auth_login(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("AUTH LOGIN")).text == "334 " + b64("Username:")
    assert (await client.cmd(b64("alice"))).text == "334 " + b64("Password:")
    assert (await client.cmd(b64(PASSWORD))).code == 235
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.net>")).code == 250


async def test_auth_login_with_initial_response_and_wrong_password(
        serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd(f"AUTH LOGIN {b64('alice')}")).text == "334 " + b64("Password:")
    assert (await client.cmd(b64("nope"))).code == 535


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("AUTH PLAIN not*base64", 501),
        (f"AUTH PLAIN {b64('no separators')}", 501),
        ("AUTH PLAIN =", 501),
        (f"AUTH PLAIN {base64.b64encode(b'bob' + bytes([0]) + b'alice' + bytes([0])).decode()}",
         535),
        ("AUTH CRAM-MD5", 504),
    ],
)
async def test_malformed_auth(serve: Serve, tls: Tls, command: str, code: int) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd(command)).code == code


async def test_authzid_other_than_the_user_refused(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    as_bob = base64.b64encode(b"bob\0alice\0" + PASSWORD.encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {as_bob}")).code == 535
    as_self = base64.b64encode(b"alice\0alice\0" + PASSWORD.encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {as_self}")).code == 235


async def test_auth_aborted_by_client(serve: Serve, tls: Tls) -> None:
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd("AUTH LOGIN")).code == 334
    assert (await client.cmd("*")).code == 501
    assert (await client.cmd("NOOP")).code == 250


async def test_password_check_error_is_temporary(
        serve: Serve, tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(password: str | bytes, hashed: str) -> bool:
        raise ValueError("memory limit exceeded")

    monkeypatch.setattr(handler_module, "verify_password", broken)
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    reply = await client.cmd(f"AUTH PLAIN {PLAIN_OK}")
    assert reply.text == "454 4.7.0 Temporary authentication failure"


def test_users_with_other_hash_costs() -> None:
    from beacon_proxy.config import SmtpConfig
    from tests.smtpd.conftest import FakeEnqueue

    strong = hash_password("x", n=2**11, r=4)
    handler = handler_module.SmtpHandler(SmtpConfig(auth_users={"u": strong}), FakeEnqueue())
    assert handler._dummy.split("$")[1:4] == ["2048", "4", "1"]
    assert not verify_password("x", handler._dummy)


async def test_successful_auth_logs_no_deprecation_warning(
        serve: Serve, tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mail.log")
    running = await serve_tls(serve, tls)
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
