"""The inflow gate: a new transaction waits while delivery is behind, first come first
served, never longer than its delay, and a transaction that gave up frees its place."""

from __future__ import annotations

import asyncio

import pytest

from beacon_proxy.deliver.inflow import InFlow
from beacon_proxy.metrics import REGISTRY


class Backlog:
    """A scheduler's ready queue, as the gate sees it: a number that deliveries lower."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self) -> int:
        return self.n


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("beacon_proxy_smtp_in_flow_delays_total",
                                     {"outcome": outcome}) or 0.0


def _seconds() -> float:
    return REGISTRY.get_sample_value("beacon_proxy_smtp_in_flow_delay_seconds_total") or 0.0


def _gate(backlog: Backlog, limit: int = 3, delay: float = 60.0) -> InFlow:
    return InFlow(limit=limit, delay=delay, backlog=backlog)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_below_the_limit_nothing_waits() -> None:
    backlog = Backlog(2)
    gate = _gate(backlog)
    assert not gate.behind()
    assert await gate.admit() == 0.0
    assert gate.delayed == 0 and gate.waiting == 0


async def test_at_the_limit_a_transaction_waits_until_a_worker_takes_a_message() -> None:
    backlog = Backlog(3)
    gate = _gate(backlog)
    caught_up = _count("caught_up")
    waiter = asyncio.ensure_future(gate.admit())
    await _settle()
    assert not waiter.done() and gate.waiting == 1
    gate.taken()  # a worker took one, but the backlog is still at the limit (more came)
    await _settle()
    assert not waiter.done()
    backlog.n = 2
    gate.taken()
    waited = await waiter
    assert waited >= 0 and gate.waiting == 0 and gate.delayed == 1 and gate.timed_out == 0
    assert _count("caught_up") == caught_up + 1


async def test_first_come_first_served_and_newcomers_queue_behind() -> None:
    backlog = Backlog(3)
    gate = _gate(backlog)
    order: list[str] = []

    async def transaction(name: str) -> None:
        await gate.admit()
        order.append(name)

    first = asyncio.ensure_future(transaction("first"))
    await _settle()
    backlog.n = 0  # delivery caught up, but nobody said so yet ...
    assert gate.behind()  # ... and one waits: a newcomer queues behind it
    second = asyncio.ensure_future(transaction("second"))
    await _settle()
    assert order == [] and gate.waiting == 2
    backlog.n = 2  # room for one
    gate.taken()
    await first
    await _settle()
    assert order == ["first"] and not second.done()
    backlog.n = 0  # room for all
    gate.taken()
    await second
    assert order == ["first", "second"]


async def test_a_wait_ends_at_the_delay_and_the_transaction_goes_on() -> None:
    backlog = Backlog(10)
    gate = _gate(backlog, delay=0.05)
    passed = _count("delay_passed")
    seconds = _seconds()
    waited = await gate.admit()  # nobody takes anything: the delay is what ends it
    assert waited >= 0.04 and gate.timed_out == 1 and gate.waiting == 0
    assert _count("delay_passed") == passed + 1
    assert _seconds() >= seconds + 0.04


async def test_a_transaction_that_gave_up_passes_its_turn_to_the_next() -> None:
    backlog = Backlog(3)
    gate = _gate(backlog)
    gone = asyncio.ensure_future(gate.admit())  # its client hangs up while it waits
    await _settle()
    stays = asyncio.ensure_future(gate.admit())
    await _settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert gate.waiting == 1
    backlog.n = 2
    gate.taken()  # one place: the live one gets it, not the cancelled one
    assert await stays >= 0
    assert gate.waiting == 0


async def test_no_delay_never_waits_and_close_lets_everyone_go() -> None:
    assert await _gate(Backlog(100), delay=0).admit() == 0.0
    gate = _gate(Backlog(100))
    waiters = [asyncio.ensure_future(gate.admit()) for _ in range(3)]
    await _settle()
    gate.close()
    assert all(w >= 0 for w in await asyncio.gather(*waiters))
    assert gate.waiting == 0


async def test_once_closed_nothing_waits() -> None:
    """The relay stops: the waiting transactions go on at once, and no new one waits
    (they end within the shutdown's timeout instead of after a wait)."""
    gate = _gate(Backlog(100))
    waiting = asyncio.ensure_future(gate.admit())
    await _settle()
    gate.close()
    assert await waiting >= 0
    assert not gate.behind() and await gate.admit() == 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        InFlow(limit=0, delay=1, backlog=lambda: 0)
    with pytest.raises(ValueError, match="delay"):
        InFlow(limit=1, delay=-1, backlog=lambda: 0)
    with pytest.raises(ValueError, match="delay"):
        InFlow(limit=1, delay=float("nan"), backlog=lambda: 0)
