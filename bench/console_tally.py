#!/usr/bin/env python3
"""What the console's event tap costs the relay: CPU per ``event()`` call, with and without it.

    python bench/console_tally.py [--events 200000] [--rounds 5]

The dashboard counts the relay's events through an event tap
(:class:`beacon_proxy.web.console.stats.EventTally`), called synchronously in
:func:`beacon_proxy.log.event` on the hot path.  This runs the same bounded
loop of ``delivered`` events (refused copies with two tracker vendors, the
tap's most expensive case) and ``received`` events with no tap and with the
tap, alternating, ``--rounds`` times each, and prints the CPU time (utime +
stime of this process, from /proc) per event of each, side by side.  The log
level is ``warning``, so neither side formats a line: the difference is the
tap alone.  Nothing is written to a store (the tally's flush is not run).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
from typing import Any

from beacon_proxy.log import add_event_tap, event, remove_event_tap
from beacon_proxy.web.console.stats import EventTally

MAX_EVENTS = 2_000_000


def _cpu() -> float:
    """utime + stime of this process, in seconds (/proc/self/stat)."""
    with open("/proc/self/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _loop(n: int) -> float:
    fields: dict[str, Any] = {"queue_id": "18C0A1B2C3D4E5F6", "policy": "refused",
                              "outcome": "stripped", "vendors": ["HubSpot", "Mailchimp"]}
    start = _cpu()
    for i in range(n):
        if i % 4 == 0:
            event("received", queue_id="18C0A1B2C3D4E5F6", size=2048)
        else:
            event("delivered", **fields)
    return _cpu() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = max(1000, min(args.events, MAX_EVENTS))
    logging.getLogger("beacon_proxy.relay").setLevel(logging.WARNING)
    tally = EventTally(store=None, every=3600)  # type: ignore[arg-type]  # never flushed
    without: list[float] = []
    with_tap: list[float] = []
    _loop(n // 10)  # warm-up
    for _ in range(max(1, min(args.rounds, 20))):
        without.append(_loop(n))
        add_event_tap(tally)
        try:
            with_tap.append(_loop(n))
        finally:
            remove_event_tap(tally)
    a, b = statistics.median(without), statistics.median(with_tap)
    print(f"events per round: {n}, rounds: {len(without)} (median CPU of each side)")
    print(f"no tap:   {a / n * 1e6:8.3f} us CPU per event")
    print(f"with tap: {b / n * 1e6:8.3f} us CPU per event  (+{(b - a) / n * 1e6:.3f} us)")
    counted = sum(tally.pending().values())
    received = (n + 3) // 4  # i % 4 == 0; each other event is a delivered copy with 2 vendors
    expected = len(with_tap) * (received + 3 * (n - received))
    print(f"counted by the tap: {counted} (expected {expected})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
