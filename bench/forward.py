#!/usr/bin/env python3
"""Server-side forwarding benchmark: the web side's cost and the workers' rate.

    python bench/forward.py [--jobs 500] [--postgres URL] [--no-postgres]

On a loopback HTTP sink (aiohttp, answering 200 to everything) it times:

  * ``OneClickForwarder.suspended`` -- what the one-click endpoint waits for:
    the durable insert into the forward queue (SQLite with synchronous=FULL,
    and a new PostgreSQL database, dropped afterwards);
  * the worker draining ``--jobs`` queued forwards (one POST each) until the
    queue holds nothing pending;
  * ``OpenForwarder.opened`` (must not block the pixel) and the GETs it sends.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.consent.store import open_store
from beacon_proxy.deliver.forward import OneClickForwarder, OpenForwarder
from beacon_proxy.tokens import Claims, Purpose

PG = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def sink() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering 200; yields its base URL and a hit counter."""
    hits = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        hits[0] += 1
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


async def one_click(url: str, label: str, jobs: int) -> None:
    async with sink() as (base, hits), open_store(url) as store:
        fwd = OneClickForwarder(store, allow_http=True, allow_private=True, poll=3600)
        waits: list[float] = []
        for i in range(jobs):
            claims = Claims(Purpose.UNSUBSCRIBE, f"r{i}@example.org", "news.example.org", "Q",
                            forward=f"{base}/u/{i}")
            start = time.perf_counter()
            await fwd.suspended(claims)
            waits.append(time.perf_counter() - start)
        waits.sort()
        start = time.perf_counter()
        await fwd.start()
        for _ in range(100_000):  # bounded: about 10 minutes at most
            if not (await store.list_forwards(state="pending", limit=1)).items:
                break
            await asyncio.sleep(0.005)
        took = time.perf_counter() - start
        await fwd.stop()
        print(f"{label}: suspended() p50 {statistics.median(waits) * 1e3:.2f} ms, "
              f"p99 {waits[int(len(waits) * 0.99)] * 1e3:.2f} ms; worker sent {hits[0]} "
              f"one-click POSTs in {took:.2f} s ({hits[0] / took:.0f}/s)")


async def opens(count: int) -> None:
    async with sink() as (base, hits):
        fwd = OpenForwarder(allow_private=True, max_pending=count)
        claims = Claims(Purpose.OPEN, "a@example.org", None, "Q", forward=f"{base}/p.gif")
        start = time.perf_counter()
        for _ in range(count):
            fwd.opened(claims)
        each = (time.perf_counter() - start) / count
        start = time.perf_counter()
        async with fwd:
            await fwd.join()
        took = time.perf_counter() - start
        print(f"open: opened() {each * 1e6:.1f} us each; {hits[0]} GETs in {took:.2f} s "
              f"({hits[0] / took:.0f}/s)")


async def postgres(server: str, jobs: int) -> None:
    name = f"beacon_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(server)
        try:
            await one_click(urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", "")),
                            "postgresql", jobs)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--postgres", default=PG, metavar="URL")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(one_click(f"sqlite:///{folder}/consent.db", "sqlite", args.jobs))
    if not args.no_postgres:
        asyncio.run(postgres(args.postgres, args.jobs))
    asyncio.run(opens(args.jobs * 2))


if __name__ == "__main__":
    main()
