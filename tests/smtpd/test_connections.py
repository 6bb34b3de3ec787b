"""Connection floods: a cap per client address and a short idle timeout, both for
clients outside ``allow_networks`` only.

Loopback has a whole /8: a client connecting from 127.0.0.2 is another client
address, so one test can have a trusted and an untrusted client side by side.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.clientkey import client_key
from beacon_proxy.smtpd import protocol
from beacon_proxy.smtpd.policy import relay_allowed
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol
from tests.smtpd.conftest import USER_HASH, WAIT, Running, Serve, Tls, events
from tests.smtpd.test_handler_auth import PLAIN_OK, tls_client

ONLY_10 = (ipaddress.ip_network("10.0.0.0/8"),)  # no loopback client is trusted
ONLY_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)  # 127.0.0.2 is not trusted
FROM_CLIENT = "421 4.7.0 Too many connections from your address"


async def released(running: Running, ip: str, count: int) -> bool:
    """Wait until the server counts ``count`` connections from ``ip`` (it has seen them go)."""
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    return await conns.wait_until(lambda: conns.from_client(ip) == count, loop.time() + WAIT)


async def test_untrusted_address_gets_421_past_its_cap(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    running = await serve(allow_networks=ONLY_10, max_connections_per_client=3)
    first, *_ = [await running.connect() for _ in range(3)]
    refused = await running.connect(greet=False)
    assert (await refused.reply()).text == FROM_CLIENT
    assert await refused.at_eof()
    [rejected] = events(caplog, "rejected")
    assert (rejected["stage"], rejected["code"], rejected["client_address"]) == (
        "CONNECT", 421, "127.0.0.1")
    other = await running.connect(source="127.0.0.2")  # another address has its own count
    assert (await other.cmd("NOOP")).code == 250
    assert (await first.cmd("QUIT")).code == 221
    assert await released(running, "127.0.0.1", 2)
    again = await running.connect()  # room again
    assert (await again.cmd("NOOP")).code == 250


async def test_trusted_network_keeps_the_global_limit(serve: Serve) -> None:
    """A newsletter tool in allow_networks with many parallel sessions is never refused."""
    running = await serve(max_connections_per_client=3)  # 127.0.0.0/8 is allowed
    clients = await asyncio.gather(*(running.connect() for _ in range(40)))
    replies = await asyncio.gather(*(client.cmd("NOOP") for client in clients))
    assert {reply.code for reply in replies} == {250}
    assert running.server.connections.from_client("127.0.0.1") == 0  # not counted at all


async def test_idle_untrusted_client_is_closed_first(serve: Serve) -> None:
    running = await serve(allow_networks=ONLY_127_0_0_1, idle_timeout_untrusted=0.2,
                          command_timeout=300)
    trusted = await running.connect()  # connected first: idle the longest
    in_transaction = await running.connect(source="127.0.0.2")
    assert (await in_transaction.cmd("EHLO busy.test")).code == 250
    assert (await in_transaction.cmd("MAIL FROM:<a@example.org>")).code == 250
    idle = await running.connect(source="127.0.0.2")
    assert (await idle.cmd("EHLO idle.test")).code == 250
    assert await idle.at_eof()  # closed by the server after idle_timeout_untrusted
    # Both others were idle for longer; a short timer of theirs would have fired first.
    assert (await trusted.cmd("NOOP")).code == 250
    assert (await in_transaction.cmd("NOOP")).code == 250


async def test_idle_timeout_comes_back_after_the_transaction(serve: Serve) -> None:
    running = await serve(allow_networks=ONLY_127_0_0_1, idle_timeout_untrusted=0.2,
                          command_timeout=300)
    client = await running.connect(source="127.0.0.2")
    assert (await client.cmd("EHLO c.test")).code == 250
    assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
    assert (await client.cmd("RSET")).code == 250
    assert await client.at_eof()


async def test_authenticated_client_keeps_the_command_timeout(serve: Serve, tls: Tls) -> None:
    running = await serve(tls_cert=tls.cert, tls_key=tls.key, allow_networks=ONLY_10,
                          auth_users={"alice": USER_HASH}, idle_timeout_untrusted=0.2,
                          command_timeout=300)
    authed = await tls_client(running, tls)
    assert (await authed.cmd("EHLO c.test")).code == 250
    assert (await authed.cmd(f"AUTH PLAIN {PLAIN_OK}")).code == 235
    idle = await running.connect(source="127.0.0.2")
    assert await idle.at_eof()
    assert (await authed.cmd("NOOP")).code == 250


def test_connections_count_per_client_group() -> None:
    conns = Connections(limit=10, per_client=2, trusted=ONLY_127_0_0_1)
    a, b, c, d = (object.__new__(SmtpProtocol) for _ in range(4))
    assert conns.admit(a, "2001:db8::1") is None
    assert conns.admit(b, "2001:db8::2") is None  # the same /64
    assert conns.admit(c, "2001:db8::3") == FROM_CLIENT
    assert conns.admit(c, "127.0.0.1") is None  # trusted: not counted
    assert (a.trusted, c.trusted) == (False, True)
    assert conns.from_client("2001:db8::9") == 2
    conns.release(a)
    assert conns.admit(d, "2001:db8::4") is None
    for conn in (b, c, d):
        conns.release(conn)
    assert len(conns) == 0 and conns.from_client("2001:db8::1") == 0


async def test_a_client_that_closes_its_side_frees_its_slot_at_once(serve: Serve) -> None:
    """A client that closes its side at once (a port probe): its EOF can come before
    aiosmtpd's session task first runs, which aiosmtpd then cancels without the
    task ever closing the transport; the relay closes it when the EOF arrives."""
    running = await serve(max_connections=1)
    conns = running.server.connections
    loop = asyncio.get_running_loop()
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), WAIT)  # the greeting or nothing, then EOF
        writer.close()
        assert await conns.wait_until(lambda: len(conns) == 0, loop.time() + WAIT)
    client = await running.connect()  # the one slot is free again
    assert (await client.cmd("NOOP")).code == 250


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_an_eof_before_the_session_task_runs_closes_the_transport() -> None:
    """The sequence a port probe causes (on uvloop every time): connection made,
    EOF, and only then would aiosmtpd's session task run.  aiosmtpd cancels the
    task before it starts, so the task never closes the transport; returning False
    from eof_received has the transport close itself."""
    conns = Connections(1)
    proto = SmtpProtocol(object(), conns, hostname="mx.test", loop=asyncio.get_running_loop())
    transport = _Transport()
    proto.connection_made(transport)
    assert len(conns) == 1
    assert proto.eof_received() is False  # asyncio and uvloop then close the transport
    await asyncio.sleep(0)
    assert proto._handler_coroutine is not None and proto._handler_coroutine.cancelled()
    assert not transport.closed  # the cancelled task did not close it: the False does
    transport.close()  # as the real transports do on that False
    proto.connection_lost(None)
    assert len(conns) == 0


_ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.sampled_from(["127.0.0.1", "127.0.0.2", "10.1.2.3", "::1", "2001:db8::1",
                     "2001:db8::2", "", "not an address", "::ffff:c633:6407"]))


@settings(max_examples=300, deadline=None)
@given(ips=st.lists(_ADDRESSES, max_size=40), bound=st.integers(min_value=1, max_value=5))
def test_kept_verdicts_are_the_computed_ones(ips: list[str], bound: int) -> None:
    """Differential: the kept (trusted, client group) of each admitted address is
    what relay_allowed and client_key give, whatever was kept before; the table
    never holds more than its bound."""
    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
               ipaddress.ip_network("2001:db8::1/128"))
    conns = Connections(limit=1000, per_client=1000, trusted=trusted)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "_VERDICTS", bound)
        for ip in ips:
            conn = object.__new__(SmtpProtocol)
            assert conns.admit(conn, ip) is None
            allowed = relay_allowed(ip, False, trusted)
            assert (conn.trusted, conn.client_group) == (
                allowed, None if allowed else client_key(ip))
            assert conn.allowed_by_address(ip, trusted) is allowed  # kept for its RCPTs
            assert len(conns._verdicts) <= bound
            conns.release(conn)


def test_kept_verdicts_are_for_the_trusted_networks_they_were_made_for() -> None:
    conns = Connections(limit=10, trusted=ONLY_127_0_0_1)
    a, b = object.__new__(SmtpProtocol), object.__new__(SmtpProtocol)
    assert conns.admit(a, "127.0.0.1") is None and a.trusted
    conns.release(a)
    conns.trusted = ONLY_10  # another networks object: the table starts again
    assert conns.admit(b, "127.0.0.1") is None and not b.trusted
    assert b.client_group == "127.0.0.1"
