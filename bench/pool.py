"""Pool benchmark: one message through the analysis pool against analysing it locally.

For each message, the medians over ``--rounds`` alternating calls of

* local: ``Engine.analyse(data)`` in this process, which holds the event loop
  (or, in a thread, the GIL) for its whole duration;
* pool: ``await AnalysisPool.analyse(data, budget=...)``, the round trip:
  message to a worker, analysis there, pickled result back, unpickled here;

their ratio and difference (the pool's overhead), and the loop stall: the
longest gap between turns of a 1 ms ticker task while a pool call is awaited
(median over the rounds; the idle loop's own figure is printed as the floor);
then, in this process, the analysis of a message of a new template (``cold``:
no scan cache, what analysing a cache miss in the event loop would stall it
for), the lookup of known bytes in the analysis cache (``hit``,
rewrite/known.py) and of the same body under another header (``header``: the
body's digest, the comparison and ``Engine.rebase``'s parse and proof).
Messages: a 2 KB plain-text message, the benchmark newsletter (bench/newsletter.py)
with 1, 20, 40 and 120 products (~7, 18, 30 and 70 KB), the same
template grown to 10 MB of HTML, and the 70 KB newsletter with a 10 MB
attachment (little to analyse, everything to transfer).
Run: ``python bench/pool.py [--rounds N] [--workers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import statistics
import sys
import time
from pathlib import Path

from newsletter import newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.known import AnalysisCache, body_start
from beacon_proxy.rewrite.pool import AnalysisPool
from beacon_proxy.rewrite.rules import load_rules

BUDGET = 60.0


def with_attachment(message: bytes, size: int) -> bytes:
    """The newsletter wrapped in multipart/mixed with a ``size``-byte PDF attachment."""
    blob = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (
        b"From: Shop Example <news@shop.example>\r\nTo: rcpt@example.net\r\n"
        b"Subject: Your catalogue\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="MIXED"\r\n\r\n'
        b"--MIXED\r\n" + message.split(b"MIME-Version: 1.0\r\n", 1)[1] + b"\r\n"
        b"--MIXED\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="catalogue.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--MIXED--\r\n"
    )


def plain_text(size: int) -> bytes:
    """A plain-text message of about ``size`` bytes (a notification, a receipt)."""
    line = b"Your order 4711 has shipped; it should arrive within three working days.\r\n"
    return (b"From: Shop Example <orders@shop.example>\r\nTo: rcpt@example.net\r\n"
            b"Subject: Your order\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line * (size // len(line)))


def messages() -> dict[str, bytes]:
    small = newsletter().replace(b"\n", b"\r\n")
    return {
        "plain text ~2 KB": plain_text(1900),
        "newsletter ~7 KB": newsletter(products=1).replace(b"\n", b"\r\n"),
        "newsletter ~18 KB": newsletter(products=20).replace(b"\n", b"\r\n"),
        "newsletter ~30 KB": newsletter(products=40).replace(b"\n", b"\r\n"),
        "newsletter ~70 KB": small,
        "newsletter 10 MB HTML": newsletter(products=18_500).replace(b"\n", b"\r\n"),
        "70 KB + 10 MB attachment": with_attachment(small, 7_500_000),
    }


def local_costs(data: bytes, rounds: int) -> tuple[float, float, float]:
    """Medians over ``rounds``, in ms: analysing ``data`` on an engine that keeps no scan
    (``templates=0``: a message of a template not seen before, a cache miss at its
    dearest), finding it in an :class:`AnalysisCache` that knows it (the hit), and
    deriving the analysis of the same body under another header from it (the header
    path: the digest of the body, the kept analysis, :meth:`Engine.rebase`)."""
    cold = Engine(load_rules(), templates=0)
    cache = AnalysisCache(cold.fingerprint, max_bytes=1 << 40, max_message=1 << 40)
    cache.put(data, cold.analyse(data))
    other = b"X-Bench-Id: 7\r\n" + data  # a personalised header, the same body
    misses: list[float] = []
    hits: list[float] = []
    headers: list[float] = []
    gc.collect()
    for _ in range(rounds):
        start = time.perf_counter()
        cold.analyse(data)
        misses.append(time.perf_counter() - start)
        start = time.perf_counter()
        found = cache.get(data)
        hits.append(time.perf_counter() - start)
        assert found is not None
        start = time.perf_counter()
        split = body_start(other)
        kept = cache.kept(cache.key(other, split))
        derived = None if kept is None else cold.rebase(kept, other, split)
        headers.append(time.perf_counter() - start)
        assert derived is not None
    return (statistics.median(misses) * 1000, statistics.median(hits) * 1000,
            statistics.median(headers) * 1000)


async def measure(engine: Engine, pool: AnalysisPool, data: bytes,
                  rounds: int) -> tuple[float, float, float]:
    """Medians over ``rounds``: local ms, pool ms, and the loop's longest stall (ms).

    Local and pool calls alternate, so both see the same machine load.  Then,
    in as many more pool calls, a ticker task awaiting ``asyncio.sleep(0.001)``
    records the longest gap between its turns while the call is awaited; the
    median of those maxima is reported (one descheduling of this process on a
    busy machine would dominate a plain maximum).
    """
    local: list[float] = []
    remote: list[float] = []
    stalls: list[float] = []
    gc.collect()
    for _ in range(rounds):
        start = time.perf_counter()
        engine.analyse(data)
        local.append(time.perf_counter() - start)
        start = time.perf_counter()
        await pool.analyse(data, budget=BUDGET)
        remote.append(time.perf_counter() - start)
    for _ in range(rounds):
        gaps: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(gaps, stop))
        await asyncio.sleep(0)
        await pool.analyse(data, budget=BUDGET)
        stop.set()
        await task
        stalls.append(max(gaps))
    return (statistics.median(local) * 1000, statistics.median(remote) * 1000,
            statistics.median(stalls) * 1000)


async def ticker(gaps: list[float], stop: asyncio.Event) -> None:
    """Every millisecond until ``stop``: record the time since the previous turn."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def idle_stall(rounds: int) -> float:
    """The ticker's median longest gap over 50 ms spans of an idle loop."""
    stalls = []
    for _ in range(max(5, rounds // 30)):
        gaps: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(gaps, stop))
        await asyncio.sleep(0.05)
        stop.set()
        await task
        stalls.append(max(gaps))
    return statistics.median(stalls) * 1000


async def run(rounds: int, workers: int) -> None:
    engine = Engine(load_rules())
    async with AnalysisPool(workers) as pool:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, pool of {pool.size} "
              f"workers (forkserver); median of sequential calls")
        print()
        print(f"{'message':<26} {'bytes':>11} {'local ms':>9} {'pool ms':>9} {'ratio':>6} "
              f"{'overhead ms':>11} {'loop stall ms':>13} {'cold ms':>8} {'hit ms':>7} "
              f"{'header ms':>9}")
        for name, data in messages().items():
            n = rounds if len(data) < 1 << 20 else max(3, rounds // 100)
            assert await pool.analyse(data, budget=BUDGET) == engine.analyse(data)

            local_ms, pool_ms, stall = await measure(engine, pool, data, n)
            cold_ms, hit_ms, header_ms = local_costs(data, n)
            print(f"{name:<26} {len(data):>11,} {local_ms:>9.2f} {pool_ms:>9.2f} "
                  f"{pool_ms / local_ms:>5.1f}x {pool_ms - local_ms:>11.2f} {stall:>13.2f} "
                  f"{cold_ms:>8.2f} {hit_ms:>7.3f} {header_ms:>9.3f}")
        print()
        print(f"loop stall floor (idle loop, same ticker): {await idle_stall(rounds):.2f} ms; "
              "local analysis stalls the loop for the whole 'local ms'")
        print("local: a further copy of a known template (the engine's scan cache); cold: a "
              "new template, analysed in full; hit: known bytes (rewrite/known.py: hash + "
              "compare); header: the same body under another header (rewrite/known.py: hash + "
              "compare + Engine.rebase)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
