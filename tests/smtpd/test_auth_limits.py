"""AUTH guessing: a cap per connection, a growing wait and a limit per client address."""

from __future__ import annotations

import asyncio
import base64

import pytest

from beacon_proxy import metrics
from beacon_proxy.log import JsonFormatter, pseudonym, pseudonym_key, pseudonymize
from beacon_proxy.smtpd import handler as handler_module
from beacon_proxy.smtpd.limits import AuthLimiter, FakeClock
from beacon_proxy.smtpd.passwords import verify_password
from tests.smtpd.client import RawClient
from tests.smtpd.conftest import (
    OUTSIDE,
    PASSWORD,
    USER_HASH,
    WAIT,
    Running,
    Serve,
    Tls,
    events,
)
from tests.smtpd.test_handler_auth import PLAIN_BAD, PLAIN_OK, b64, tls_client

CUT_OFF = "421 4.7.0 Too many failed authentication attempts, closing connection"
BLOCKED = "454 4.7.0 Too many failed authentications from your address, try again later"


def auth_total(result: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "beacon_proxy_smtp_auth_total", {"result": result}) or 0.0


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[bytes | str]:
    """The passwords the handler checked, in order."""
    seen: list[bytes | str] = []

    def spy(password: str | bytes, hashed: str) -> bool:
        seen.append(password)
        return verify_password(password, hashed)

    monkeypatch.setattr(handler_module, "verify_password", spy)
    return seen


async def serve_auth(serve: Serve, tls: Tls, clock: FakeClock | None = None,
                     **overrides: object) -> Running:
    return await serve(tls_cert=tls.cert, tls_key=tls.key, allow_networks=OUTSIDE,
                       auth_users={"alice": USER_HASH}, clock=clock, **overrides)


async def authed_client(running: Running, tls: Tls) -> RawClient:
    client = await tls_client(running, tls)
    assert (await client.cmd("EHLO client.test")).code == 250
    return client


async def test_right_password_refused_after_the_cap_on_that_connection(
        serve: Serve, tls: Tls, checked: list[bytes | str]) -> None:
    running = await serve_auth(serve, tls)
    client = await authed_client(running, tls)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535
    assert (await client.cmd(f"AUTH LOGIN {b64('alice')}")).code == 334
    assert (await client.cmd(b64("wrong too"))).code == 535
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).text == CUT_OFF
    assert await client.at_eof()
    assert checked == [b"wrong", b"wrong too", b"wrong"]
    # A new connection may try again (the address is still far from its limit).
    again = await authed_client(running, tls)
    assert (await again.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235


async def test_pipelined_guesses_stop_at_the_cap_unchecked(
        serve: Serve, tls: Tls, checked: list[bytes | str]) -> None:
    running = await serve_auth(serve, tls)
    client = await authed_client(running, tls)
    await client.send(f"AUTH PLAIN {PLAIN_BAD}\r\n".encode() * 3
                      + f"AUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@example.org>\r\n"
                        "RCPT TO:<b@example.net>\r\n".encode())
    assert [(await client.reply()).code for _ in range(3)] == [535, 535, 421]
    await client.at_eof()  # whatever else is answered, the connection closes
    assert checked == [b"wrong"] * 3  # the right password was never even checked
    assert running.enqueue.calls == []


async def test_cap_is_configurable(serve: Serve, tls: Tls) -> None:
    running = await serve_auth(serve, tls, auth_max_failures=1)
    client = await authed_client(running, tls)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).text == CUT_OFF
    assert await client.at_eof()


async def test_each_failure_is_logged_and_counted(
        serve: Serve, tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve_auth(serve, tls)
    failures, successes = auth_total("failure"), auth_total("success")
    client = await authed_client(running, tls)
    mallory = base64.b64encode(b"\0mallory@example.org\0guess").decode()
    assert (await client.cmd(f"AUTH PLAIN {mallory}")).code == 535
    assert (await client.cmd(f"AUTH LOGIN {b64('alice')}")).code == 334
    assert (await client.cmd(b64("nope"))).code == 535
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    first, second = events(caplog, "auth_failed")
    assert first == {"client_address": "127.0.0.1", "mechanism": "PLAIN",
                     "user": "mallory@example.org", "connection_failures": 1,
                     "address_failures": 1}
    assert second == {"client_address": "127.0.0.1", "mechanism": "LOGIN", "user": "alice",
                      "connection_failures": 2, "address_failures": 2}
    assert [r.levelname for r in caplog.records if r.getMessage() == "auth_failed"] == [
        "WARNING", "WARNING"]
    assert auth_total("failure") == failures + 2
    assert auth_total("success") == successes + 1
    assert all("guess" not in str(getattr(r, "fields", "")) for r in caplog.records)


async def test_pseudonymised_line_keeps_the_client_address_where_fail2ban_looks(
        serve: Serve, tls: Tls, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve_auth(serve, tls)
    client = await authed_client(running, tls)
    ann = base64.b64encode(b"\0ann@example.org\0nope").decode()
    assert (await client.cmd(f"AUTH PLAIN {ann}")).code == 535
    [record] = [r for r in caplog.records if r.getMessage() == "auth_failed"]
    key = pseudonym_key("0123456789abcdef0123")
    pseudonymize(key)
    try:
        line = JsonFormatter().format(record)
    finally:
        pseudonymize(None)
    assert '"level":"warning","event":"auth_failed","client_address":"127.0.0.1",' in line
    assert f'"user":"{pseudonym("ann@example.org", key)}"' in line and "@" not in line


async def test_replies_to_an_address_with_failures_wait_longer_each_time(
        serve: Serve, tls: Tls) -> None:
    clock = FakeClock()
    running = await serve_auth(serve, tls, clock, auth_delay_max=1.5)
    client = await authed_client(running, tls)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535  # no failure yet: no wait
    assert clock.slept == []
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535
    assert clock.slept == [0.5]
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).text == CUT_OFF
    assert clock.slept == [0.5, 1.0]
    # The next connection from the address waits too, before any answer, even the right one.
    other = await authed_client(running, tls)
    assert (await other.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    assert clock.slept == [0.5, 1.0, 1.5]  # at most auth_delay_max


async def test_address_over_its_limit_is_refused_unchecked_for_the_window(
        serve: Serve, tls: Tls, checked: list[bytes | str],
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    running = await serve_auth(serve, tls, clock, auth_failure_limit=4,
                               auth_failure_window=600)
    for _ in range(2):
        client = await authed_client(running, tls)
        assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535
        assert (await client.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535
    blocked = auth_total("blocked")
    client = await authed_client(running, tls)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).text == BLOCKED
    assert (await client.cmd(f"AUTH LOGIN {b64('alice')}")).text == BLOCKED
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).text == CUT_OFF  # counts on the cap
    assert await client.at_eof()
    assert len(checked) == 4 and PASSWORD.encode() not in checked
    assert auth_total("blocked") == blocked + 3
    rejected = [(e["stage"], e["code"]) for e in events(caplog, "rejected")]
    assert rejected[-3:] == [("AUTH", 454), ("AUTH", 454), ("AUTH", 421)]
    clock.now_value += 601  # the failures leave the window
    client = await authed_client(running, tls)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235


class GatedClock(FakeClock):
    """A fake clock whose first sleep waits for :attr:`gate` (and says it started)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        first = not self.slept
        await super().sleep(seconds)
        if first:
            self.entered.set()
            await self.gate.wait()


async def test_limit_checked_again_after_the_wait(serve: Serve, tls: Tls) -> None:
    """Failures on parallel connections during one's wait count for it too."""
    clock = GatedClock()
    running = await serve_auth(serve, tls, clock, auth_failure_limit=2)
    first = await authed_client(running, tls)
    assert (await first.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535  # 1 failure: waits now
    waiting = await authed_client(running, tls)
    await waiting.send(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    await asyncio.wait_for(clock.entered.wait(), WAIT)
    parallel = await authed_client(running, tls)
    assert (await parallel.cmd(f"AUTH PLAIN {PLAIN_BAD}")).code == 535  # the 2nd: the limit
    clock.gate.set()
    assert (await waiting.reply()).text == BLOCKED


# -- the limiter on its own -----------------------------------------------------


def test_failures_slide_out_of_the_window() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(window=100, limit=3, delay_max=8, clock=clock)
    assert [limiter.record_failure("192.0.2.1") for _ in range(2)] == [1, 2]
    clock.now_value += 60
    assert limiter.record_failure("192.0.2.1") == 3
    assert limiter.blocked("192.0.2.1")
    assert not limiter.blocked("192.0.2.2")
    clock.now_value += 41  # the first two are older than the window now
    assert limiter.failures("192.0.2.1") == 1
    assert not limiter.blocked("192.0.2.1")
    assert limiter.delay("192.0.2.1") == 0.5


def test_delay_doubles_up_to_its_maximum() -> None:
    limiter = AuthLimiter(window=100, limit=1000, delay_max=8, clock=FakeClock())
    delays = []
    for _ in range(8):
        limiter.record_failure("192.0.2.1")
        delays.append(limiter.delay("192.0.2.1"))
    assert delays == [0.5, 1, 2, 4, 8, 8, 8, 8]
    for _ in range(1000):  # no overflow however many
        limiter.record_failure("192.0.2.1")
    assert limiter.delay("192.0.2.1") == 8
    assert AuthLimiter(window=100, limit=5, delay_max=0, clock=FakeClock()).delay("x") == 0


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(window=100, limit=3, delay_max=8, clock=clock, max_clients=50)
    for i in range(200):
        for _ in range(5):  # each address keeps at most `limit` times
            limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 50
    assert limiter.failures("10.0.0.199") == 3  # the most recent stay
    assert limiter.failures("10.0.0.0") == 0  # the least recent went first
    clock.now_value += 101
    assert limiter.failures("10.0.0.199") == 0
    assert len(limiter) == 0  # expired addresses are forgotten


def test_ipv6_addresses_count_per_64() -> None:
    limiter = AuthLimiter(window=100, limit=2, delay_max=8, clock=FakeClock())
    limiter.record_failure("2001:db8:0:1::1")
    limiter.record_failure("2001:db8:0:1:ffff::2")
    assert limiter.blocked("2001:db8:0:1::77")
    assert not limiter.blocked("2001:db8:0:2::1")
    limiter.record_failure("::ffff:192.0.2.9")
    assert limiter.failures("192.0.2.9") == 1
