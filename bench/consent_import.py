#!/usr/bin/env python3
"""Consent CSV import benchmark: SQLite and PostgreSQL, side by side in one run.

    python bench/consent_import.py [--rows 100000] [--postgres URL] [--no-postgres]

Writes a CSV file of ``--rows`` rows (``address,beacons,source``), then times
``consent import`` -- exactly what the command does: read and validate the
file in batches in a thread, upsert each batch and its audit entries, all in
one transaction -- into

  (a) a new SQLite store (WAL, synchronous=FULL) in a temporary folder;
  (b) a new PostgreSQL database (created on the server given by --postgres,
      default the machine's postgresql://postgres@127.0.0.1:5432/test, and
      dropped afterwards).

Each import runs twice: into the empty store, and again over the same rows
(every row an update).  It also times the validation alone (``--dry-run``)
and one relay lookup of 1000 recipients afterwards.  Goals (issue 4): 100 000
rows in at most 10 s on SQLite and 20 s on PostgreSQL.  Peak memory (max RSS)
is printed so a larger --rows shows that the import streams.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from beacon_proxy.consent.csvio import import_file  # noqa: E402
from beacon_proxy.consent.store import Store, open_store  # noqa: E402

GOALS = {"sqlite": 10.0, "postgresql": 20.0}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def write_csv(path: Path, rows: int) -> None:
    states = ("granted", "refused", "unknown")
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("address,beacons,source\r\n")
        for i in range(rows):
            fh.write(f"Subscriber.{i:07d}@Example-{i % 97}.org,{states[i % 3]},bench\r\n")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_store(name: str, url: str, csv: Path, rows: int) -> bool:
    store: Store = open_store(url)
    await store.open()
    try:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            n = (await import_file(store, csv, "consent", actor="bench", source="bench")).rows
            times.append(time.perf_counter() - t0)
            assert n == rows, n
        recipients = [f"subscriber.{i:07d}@example-{i % 97}.org" for i in range(0, rows, max(
            1, rows // 1000))][:1000]
        t0 = time.perf_counter()
        found = await store.decisions(recipients, "news.example.org")
        lookup = time.perf_counter() - t0
        assert len(found) == len(recipients)
    finally:
        await store.close()
    goal = GOALS[name] * rows / 100_000
    ok = times[0] <= goal
    print(f"{name:<11} import {rows} rows: {times[0]:6.2f} s ({rows / times[0]:8.0f} rows/s)   "
          f"again (updates): {times[1]:6.2f} s   lookup of {len(recipients)} recipients: "
          f"{lookup * 1000:6.1f} ms   goal <= {goal:.0f} s: {'met' if ok else 'MISSED'}")
    return ok


async def admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                        help="server to create the benchmark database on")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        csv = Path(tmp) / "consent.csv"
        t0 = time.perf_counter()
        write_csv(csv, args.rows)
        print(f"wrote {args.rows} rows ({csv.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        n = (await import_file(None, csv, "consent", dry_run=True)).rows
        dry = time.perf_counter() - t0
        print(f"validate only (--dry-run): {dry:6.2f} s ({n / dry:8.0f} rows/s)")
        ok &= await run_store("sqlite", f"sqlite:///{tmp}/store/bench.db", csv, args.rows)
        if not args.no_postgres:
            name = f"beacon_bench_{secrets.token_hex(4)}"
            await admin(args.postgres, f'CREATE DATABASE "{name}"')
            try:
                parts = urlsplit(args.postgres)
                url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
                ok &= await run_store("postgresql", url, csv, args.rows)
            finally:
                await admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"peak memory (max RSS of this process): {max_rss_mb():.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
