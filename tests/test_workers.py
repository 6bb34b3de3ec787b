"""The supervisor's pieces that need no process: merged metrics, listening sockets,
when workers are told to take connections."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from beacon_proxy import workers
from beacon_proxy.config import Config
from beacon_proxy.workers import Supervisor, _Worker, bind_listeners, merge_metrics


def _page(received: int, sessions: int, delays: list[float]) -> str:
    registry = CollectorRegistry()
    Counter("bp_received", "Received.", registry=registry).inc(received)
    Gauge("bp_sessions", "Sessions.", registry=registry).set(sessions)
    hist = Histogram("bp_delay_seconds", "Delay.", registry=registry, buckets=(1.0, 5.0))
    for d in delays:
        hist.observe(d)
    return generate_latest(registry).decode()


def test_merged_metrics_are_sums() -> None:
    text = merge_metrics([_page(3, 2, [0.5]), _page(4, 1, [2.0, 9.0]), _page(0, 0, [])])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    assert samples[("bp_received_total", ())] == 7
    assert samples[("bp_sessions", ())] == 3
    assert samples[("bp_delay_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("bp_delay_seconds_bucket", (("le", "5.0"),))] == 2
    assert samples[("bp_delay_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("bp_delay_seconds_count", ())] == 3
    assert samples[("bp_delay_seconds_sum", ())] == 11.5
    assert b"# HELP bp_received_total Received." in text
    assert b"# TYPE bp_delay_seconds histogram" in text


def test_listeners_take_one_port_and_are_inheritable() -> None:
    socks = bind_listeners("127.0.0.1", 0)
    try:
        (sock,) = socks
        port = sock.getsockname()[1]
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the kernel queues it: the socket listens
        sock.set_inheritable(True)
    finally:
        for s in socks:
            s.close()


class _Channel:
    """A worker's channel as the supervisor writes to it: the frames sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    async def drain(self) -> None:
        return None


def _supervisor(count: int) -> tuple[Supervisor, list[_Channel]]:
    """A supervisor's bookkeeping of ``count`` spawned workers (no process, no socket)."""
    supervisor = object.__new__(Supervisor)
    supervisor.workers = [_Worker(i) for i in range(count)]
    supervisor._accepting = False
    channels = [_Channel() for _ in range(count)]
    for worker, channel in zip(supervisor.workers, channels, strict=True):
        worker.writer = channel  # type: ignore[assignment]  # write and drain suffice
    return supervisor, channels


async def _ready(supervisor: Supervisor, index: int) -> None:
    supervisor.workers[index].ready = True  # what _listen does with "ready", then:
    await supervisor._go()


async def test_workers_are_told_go_once_every_one_has_started() -> None:
    """No worker takes a connection while a sibling still starts (the first one up took
    every connection opened meanwhile); then all are told at once, and a worker started
    again after a death is told as soon as it has started."""
    supervisor, channels = _supervisor(3)
    await _ready(supervisor, 1)
    await _ready(supervisor, 0)
    assert [c.sent for c in channels] == [[], [], []]
    await _ready(supervisor, 2)
    assert [c.sent for c in channels] == [[b"go 0\n"]] * 3
    await supervisor._go()  # told once
    assert [len(c.sent) for c in channels] == [1, 1, 1]
    dead = supervisor.workers[1]
    dead.ready = dead.going = False  # what _keep does when it dies
    await _ready(supervisor, 1)  # started again: the others take connections already
    assert [len(c.sent) for c in channels] == [1, 2, 1]


class _Smtpd:
    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.calls = 0

    def accept(self) -> None:
        self.calls += 1
        self.accepted.set()


class _Relay:
    """What run_worker uses of a Relay."""

    made: ClassVar[list[_Relay]] = []

    def __init__(self, cfg: Config, role: object) -> None:
        self.smtpd = _Smtpd()
        _Relay.made.append(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def reload(self) -> None:
        return None


class _Records(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _run_worker(monkeypatch: pytest.MonkeyPatch, go: bool
                      ) -> tuple[_Relay, list[logging.LogRecord], list[bytes]]:
    """run_worker with a stand-in relay, this test as its supervisor: read "ready", say
    "go" (or not), wait until the worker takes connections, end the channel."""
    _Relay.made.clear()
    monkeypatch.setattr(workers, "Relay", _Relay)
    if not go:
        monkeypatch.setattr(workers, "GO_WAIT", 0.01)
    handler = _Records(logging.INFO)
    records = handler.records
    logger = logging.getLogger("beacon_proxy")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    ours, theirs = socket.socketpair()
    try:
        task = asyncio.create_task(workers.run_worker(
            Config(), 1, 2, (), theirs.detach()))
        reader, writer = await asyncio.open_connection(sock=ours)
        frames = [await asyncio.wait_for(reader.readline(), 30)]
        (relay,) = _Relay.made
        if go:
            writer.write(b"go 0\n")
        await asyncio.wait_for(relay.smtpd.accepted.wait(), 30)
        writer.close()  # the supervisor is gone: the worker stops
        await asyncio.wait_for(task, 30)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return relay, records, frames


def _accepting(records: list[logging.LogRecord]) -> list[tuple[int, dict[str, Any]]]:
    return [(r.levelno, getattr(r, "fields", {})) for r in records
            if r.getMessage() == "accepting"]


async def test_a_worker_takes_connections_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    relay, records, frames = await _run_worker(monkeypatch, go=True)
    assert frames == [b"ready 0\n"]
    assert relay.smtpd.calls == 1
    ((level, fields),) = _accepting(records)
    assert level == logging.INFO
    assert fields["worker_index"] == 1 and fields["alone"] is False


async def test_a_worker_not_told_takes_connections_alone_after_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sibling that never starts keeps no worker from taking connections for good."""
    relay, records, _ = await _run_worker(monkeypatch, go=False)
    assert relay.smtpd.calls == 1
    ((level, fields),) = _accepting(records)
    assert level == logging.WARNING and fields["alone"] is True
