#!/usr/bin/env python3
"""Open pixel load test: ``GET /o/<token>`` at a fixed rate, SQLite and PostgreSQL.

    python bench/opens.py [--rate 500] [--seconds 10] [--postgres URL] [--no-postgres]

The web app (``build_app`` with the recipient routes, as ``beacon-proxy
serve`` builds it) runs in a process of its own on a free loopback port, on
a fresh store whose recipients all consent, so every request is recorded.
This process sends ``--rate`` requests a second for ``--seconds`` seconds,
each with a token of its own (so the per-token rate limit never applies),
open loop: each request's latency is measured from the moment it was due,
so a stalled server cannot hide its backlog (no coordinated omission).
Afterwards the server is stopped (its open queue is flushed) and the opens in
the store are counted: every one must have been recorded.

Goal (issue 7): p99 under 20 ms at 500 requests/s on both backends.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import secrets
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from beacon_proxy.consent.store import open_store  # noqa: E402
from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity  # noqa: E402
from beacon_proxy.web.recipient import RecipientSide  # noqa: E402
from beacon_proxy.web.server import build_app  # noqa: E402

GOAL_P99_MS = 20.0
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-0123456789abcdef"
RECIPIENTS = 1000
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Mobile/15E148")


async def _serve(url: str, ports: Any, stop: MpEvent) -> None:
    store = open_store(url)
    await store.open()
    for i in range(RECIPIENTS):
        await store.set_consent(f"reader{i}@example.org", "granted", source="bench")
    side = RecipientSide(Tokens([SECRET]), store)
    runner = web.AppRunner(build_app(lambda: {"status": "ok"}, recipient=side), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ports.put(runner.addresses[0][1])
    cpu0 = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    t0 = time.perf_counter()
    await runner.cleanup()  # flushes the open queue
    flush = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    opens = 0
    after = None
    for _ in range(10_000):
        page = await store.opens(after=after, limit=1000)
        opens += len(page.items)
        if page.next is None:
            break
        after = page.next
    await store.close()
    ports.put((opens, flush, cpu))


def serve(url: str, ports: Any, stop: MpEvent) -> None:
    asyncio.run(_serve(url, ports, stop))


def tokens(n: int) -> list[str]:
    t = Tokens([SECRET])
    pixel = url_identity("https://tracker.example/open.gif")
    return [t.mint(Claims(Purpose.OPEN, f"reader{i % RECIPIENTS}@example.org",
                          "news.example.org", f"Q{i:08d}", pixel)) for i in range(n)]


async def load(port: int, rate: int, seconds: float) -> tuple[list[float], int]:
    paths = [f"/o/{t}" for t in tokens(int(rate * seconds))]
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector,
                                     headers={"User-Agent": UA}) as session:
        async def one(path: str, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(path) as resp:
                    body = await resp.read()
                    if resp.status != 200 or len(body) != 43:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - due)

        async def warm(path: str) -> None:
            async with session.get(path) as resp:
                await resp.read()

        # Open some connections first with invalid tokens (answered, nothing recorded).
        await asyncio.gather(*(warm(f"/o/warm-up-{i}") for i in range(50)))
        start = time.perf_counter() + 0.1
        tasks = []
        for i, path in enumerate(paths):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(path, due)))
        await asyncio.gather(*tasks)
    return latencies, errors


def run(name: str, url: str, rate: int, seconds: float) -> bool:
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=serve, args=(url, ports, stop), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=120)
        t0 = time.perf_counter()
        latencies, errors = asyncio.run(load(port, rate, seconds))
        took = time.perf_counter() - t0
        stop.set()
        opens, flush, cpu = ports.get(timeout=120)
    finally:
        stop.set()
        proc.join(timeout=60)
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    sent = len(ms)
    ok = q[98] < GOAL_P99_MS and errors == 0 and opens == sent
    print(f"{name:<11} {sent} requests in {took:5.1f} s ({sent / took:5.0f}/s): "
          f"p50 {q[49]:5.2f} ms  p90 {q[89]:5.2f} ms  p99 {q[98]:5.2f} ms  max {ms[-1]:6.1f} ms  "
          f"errors {errors}  opens recorded {opens}/{sent} (flush at stop {flush:.2f} s)  "
          f"server CPU {cpu * 1000 / max(sent, 1):.2f} ms/request  "
          f"goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    return ok


async def admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="requests a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                        help="server to create the benchmark database on")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    if args.rate < 1 or not 0 < args.seconds <= 600:
        parser.error("--rate must be at least 1 and --seconds in (0, 600]")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        ok &= run("sqlite", f"sqlite:///{tmp}/store/bench.db", args.rate, args.seconds)
    if not args.no_postgres:
        name = f"beacon_bench_{secrets.token_hex(4)}"
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
        try:
            parts = urlsplit(args.postgres)
            url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
            ok &= run("postgresql", url, args.rate, args.seconds)
        finally:
            asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
