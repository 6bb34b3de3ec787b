"""[smtp] event_loop: which loop serve runs on, and the relay's SMTP side on uvloop."""

from __future__ import annotations

import asyncio
import sys

import pytest

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.eventloop import EventLoopError, LagMonitor, loop_factory, running_loop_name
from beacon_proxy.smtpd.server import SmtpServer
from beacon_proxy.spool.envelope import Envelope


def test_asyncio_is_asyncios_own_loop() -> None:
    assert loop_factory("asyncio") == (None, "asyncio")


def test_auto_without_uvloop_is_asyncio_and_forcing_it_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") == (None, "asyncio")
    with pytest.raises(EventLoopError, match=r"beacon-proxy\[fast\]"):
        loop_factory("uvloop")


def test_auto_takes_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    for choice in ("auto", "uvloop"):
        factory, name = loop_factory(choice)
        assert factory is uvloop.new_event_loop and name == f"uvloop {uvloop.__version__}"


def test_serve_refuses_a_uvloop_it_does_not_have(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from beacon_proxy.cli.main import main

    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setenv("BEACON_PROXY_SMTP_EVENT_LOOP", "uvloop")
    assert main(["serve"]) == 1
    assert "uvloop is not installed" in capsys.readouterr().err


async def _refused_and_stopped() -> tuple[str, list[bytes], str]:
    async def enqueue(envelope: Envelope, data: bytes) -> None:
        return None

    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0), max_connections=1),
                       enqueue, hostname="mx.test")
    await server.start()
    first_r, first_w = await asyncio.open_connection("127.0.0.1", server.port)
    await first_r.readline()  # 220: admitted
    second_r, second_w = await asyncio.open_connection("127.0.0.1", server.port)
    refused = (await second_r.read()).decode()
    await server.stop(1)
    lines = [line async for line in first_r]
    for w in (first_w, second_w):
        w.close()
    return refused, lines, running_loop_name()


def test_refusals_and_shutdown_replies_reach_the_client_on_uvloop() -> None:
    """uvloop's transports are not asyncio.WriteTransport instances: the 421s are
    written all the same (they were silently dropped once)."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        refused, lines, name = runner.run(_refused_and_stopped())
    assert name.startswith("uvloop ")
    assert refused == "421 4.7.0 Too many connections\r\n"
    assert lines == [b"421 4.3.2 Service shutting down\r\n"]


async def _observed(hold: float, after: float, interval: float = 0.01) -> list[float]:
    """A LagMonitor's observations around one callback that holds the loop for ``hold``
    seconds, then ``after`` seconds of an idle loop; stopped at the end."""
    import time

    seen: list[float] = []
    monitor = LagMonitor(seen.append, interval=interval)
    monitor.start()
    monitor.start()  # a second start changes nothing
    time.sleep(hold)  # the loop is held: the timer due after `interval` waits
    await asyncio.sleep(after)
    monitor.stop()
    return seen


def test_the_lag_monitor_sees_a_held_loop() -> None:
    seen = asyncio.run(_observed(hold=0.3, after=0.05))
    # the first run came about 0.3 - 0.01 s late (later on a busy machine, never less than
    # that but for the clock's resolution: uvloop's is a millisecond)
    assert seen and seen[0] >= 0.25
    assert all(lag >= 0 for lag in seen)


def test_the_lag_monitor_stops() -> None:
    async def scenario() -> tuple[int, int]:
        seen: list[float] = []
        monitor = LagMonitor(seen.append, interval=0.01)
        monitor.start()
        while not seen:  # the first observation (whenever the machine lets it run)
            await asyncio.sleep(0.01)
        monitor.stop()
        stopped_at = len(seen)
        await asyncio.sleep(0.1)  # ten intervals: a timer still set would have run
        monitor.stop()  # twice: no error
        return stopped_at, len(seen)

    stopped_at, later = asyncio.run(scenario())
    assert later == stopped_at


def test_the_lag_monitor_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    seen = uvloop.run(_observed(hold=0.3, after=0.05))
    assert seen and seen[0] >= 0.25  # (0.29 to the millisecond libuv counts in)
