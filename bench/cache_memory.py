#!/usr/bin/env python3
"""What the decision cache costs in memory when every message has a new recipient.

    python bench/cache_memory.py [--lookups 120000] [--sizes 0,20000,100000]
                                 [--seconds 120]

The soak's (and a newsletter's) traffic: one recipient per message, each a new
address.  For each ``[store] cache_size`` in ``--sizes``, a child process opens
a fresh SQLite store (a temporary folder) and calls ``decisions()`` -- what
the relay calls once per message attempt -- for ``--lookups`` distinct
recipients, sequentially, bounded by ``--seconds``.  Printed per size: the
memory Python still holds afterwards (tracemalloc, after a collection: the
cache's entries, nothing else lives on), per lookup, and the process's RSS
growth from before the first lookup (VmRSS from /proc: what the soak's RSS
line sees, allocator slack included).  A cache simply filling up grows until
``cache_size`` answers and then stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from beacon_proxy.consent.store import open_store


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _child(size: int, lookups: int, seconds: float) -> str:
    with tempfile.TemporaryDirectory(prefix="beacon-cachemem-") as tmp:
        async with open_store(f"sqlite:///{tmp}/store.db", cache_size=size) as store:
            await store.decisions(["warm-up@example.net"], "news.example.org")
            gc.collect()
            rss0 = _rss_kb()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            deadline = time.monotonic() + seconds
            done = 0
            while done < lookups and time.monotonic() < deadline:
                batch = [f"subscriber-{i:07d}@example.net"
                         for i in range(done, min(done + 100, lookups))]
                for r in batch:  # one recipient per message, as in the soak
                    await store.decisions([r], "news.example.org")
                done += len(batch)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            rss = _rss_kb() - rss0
    return (f"cache_size {size:>7}: {done} lookups, held {held / 1e6:6.1f} MB "
            f"({held / max(done, 1):5.0f} B/lookup, "
            f"{held / max(min(done, size), 1) if size else 0:5.0f} B/entry), "
            f"RSS +{rss / 1e3:6.1f} MB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lookups", type=int, default=120_000)
    p.add_argument("--sizes", default="0,20000,100000")
    p.add_argument("--seconds", type=float, default=120.0, help="per size, at most")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.lookups < 1 or a.seconds <= 0:
        p.error("--lookups must be >= 1 and --seconds > 0")
    if a.child is not None:
        print(asyncio.run(_child(a.child, a.lookups, a.seconds)), flush=True)
        return 0
    for size in (int(s) for s in a.sizes.split(",")):
        subprocess.run([sys.executable, __file__, "--child", str(size),
                        "--lookups", str(a.lookups), "--seconds", str(a.seconds)],
                       check=True, timeout=a.seconds + 120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
