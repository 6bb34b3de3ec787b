#!/usr/bin/env python3
"""Decision lookups on the event loop while another thread of the process runs Python.

    python bench/loop_gil.py [--lookups 3000] [--rounds 3]
    python bench/loop_gil.py --base TREE [--pairs 3]

The relay reads consent on its event loop (SQLite: ``consent/sqlite.py``), once per
message attempt, a keyed hash of each recipient's address among it.  Beside the loop,
other threads of the same process run Python at times: a copy of a message over 1 MB is
rendered in a thread, the spool's log thread answers its batches.  A call on the loop
that lets go of the GIL then waits until such a thread hands it back (up to the switch
interval, 5 ms), and every session of the process waits with it.

Measured here, in one process per tree: ``decisions()`` for one recipient at a time,
each a miss (``cache_size = 0``, a recipient of its own each time), on the relay's event
loop (uvloop when installed), for ``--lookups`` lookups or 3 s, the best of ``--rounds``
rounds: ``alone`` (lookups a second, nothing else running), ``beside`` (the same while
a thread runs pure Python).  With ``--base``: ``--pairs`` pairs of child processes,
base then this tree, each line with both trees' rates and their ratio.

``beside`` times a race between the two threads for the GIL and the cores, and spreads
widely from one run to the next (the same tree twice: 104 and 914 lookups a second):
give ``--rounds 5`` and several pairs.

SQLite's own statements let go of the GIL as well (the ``sqlite3`` module does, for
every step), so ``beside`` stays far below ``alone`` either way: what a change to the
loop's calls can do is let go of it fewer times a lookup.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

from _pairs import main_per_copy

from beacon_proxy.consent.store import open_store
from beacon_proxy.eventloop import loop_factory

SECONDS = 3.0  # each round's bound
NAMES = ("alone", "beside")


async def _rate(store: object, first: int, lookups: int) -> float:
    decisions = store.decisions  # type: ignore[attr-defined]
    start = time.perf_counter()
    done = 0
    while done < lookups and time.perf_counter() - start < SECONDS:
        await decisions([f"reader{first + done}@example.org"], None)
        done += 1
    return done / (time.perf_counter() - start)


def _spin(stop: threading.Event) -> None:
    """Python, and nothing that lets go of the GIL, until ``stop``."""
    spun = 0
    while not stop.is_set():
        spun += 1


async def _measure(lookups: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_store(f"sqlite:///{Path(tmp) / 'bench.db'}", cache_size=0) as store:
            await _rate(store, 0, 200)  # warm-up: statements prepared, pages read
            first = 200
            best = dict.fromkeys(NAMES, 0.0)
            for _ in range(rounds):
                best["alone"] = max(best["alone"], await _rate(store, first, lookups))
                first += lookups
                stop = threading.Event()
                thread = threading.Thread(target=_spin, args=(stop,), daemon=True)
                thread.start()
                try:
                    best["beside"] = max(best["beside"], await _rate(store, first, lookups))
                finally:
                    stop.set()
                    thread.join()
                first += lookups
            return best


def measure(lookups: int, rounds: int) -> dict[str, float]:
    """Lookups a second, alone and beside a Python thread (this tree)."""
    factory, _ = loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_measure(lookups, rounds))


def main() -> None:
    main_per_copy(__file__, __doc__, NAMES, measure, count="lookups", default=3000,
                  label="decision lookups/s", digits=0,
                  what=f"decision lookups a second on the event loop (each round {SECONDS:.0f} s "
                       "at most)")

if __name__ == "__main__":
    main()
