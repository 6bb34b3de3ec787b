#!/usr/bin/env python3
"""Relay decision lookups with and without the decision cache, SQLite and PostgreSQL.

    python bench/decisions.py [--lookups 4000] [--seconds 15] [--postgres URL]
                              [--no-postgres]
    python bench/decisions.py --compare TREE [--rounds 3] [--lookups 4000]

For each backend: a fresh store (a SQLite file in a temporary folder; a new
``beacon_bench_<random>`` database on the PostgreSQL server given by
``--postgres``, dropped afterwards), seeded with 20 000 consent records
(granted, refused, unknown in turn) and 400 suppressions (half for every
list, half for the message's list).  Then ``decisions()`` -- what the relay
calls once per message attempt -- sequentially, in three shapes of message:

  1 rcpt     one recipient per message, cycling over a working set of 2000
  10 rcpts   ten per message, from the same working set
  1000 rcpts a thousand per message (one list send), 40 lookups

and four modes, side by side in one run:

  off        ``cache_size = 0``: every lookup reads the store (the old way)
  cold       the cache on, empty: the first pass over the working set
  warm       the cache on, every answer held (the steady state)
  churn      warm, while another store changes one recipient's consent
             every 50 lookups (every 4 of 1000 recipients; each change
             costs the next lookup the change log, and evicts only the
             recipient it touched)

Then campaign diffing's known pathology: the same ~70 KB newsletter
(bench/newsletter.py, 125 loaded references) to the same recipient, observed
``--repeats`` times (300) after its first copy was learned -- the campaign
never freezes -- three ways: ``none`` (no memory kept per node: every
repeat one store transaction that parses the stored memory, the behaviour
before this cache), ``r=0s`` (one transaction per repeat, but the memory is
not parsed again while unchanged) and ``r=10s`` (the default: judged from
the node's memory, one transaction per 10 s).

Each phase is bounded by ``--lookups`` (``--repeats``) and ``--seconds``.  Printed per
phase: lookups per second, this process's CPU per lookup (utime+stime from
/proc: the event loop plus aiosqlite's threads), and for PostgreSQL the
server backend's CPU per lookup too (/proc of the pool's only connection;
pool_size = 1); ``hit%`` is the share of recipients the cache answered.
Compare numbers within one run only: the machine is shared.

``--compare TREE`` (SQLite only) measures another tree of the repository
(``git archive main | tar -x -C /tmp/main``) against this one: each round
runs the phases in ``COMPARED`` in a child process per tree, which one goes
first alternating, and prints the CPU per lookup side by side with the ratio
(and the medians of all rounds at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
#: The tree whose beacon_proxy is measured (--compare runs a child per tree).
TREE = Path(os.environ.get("BENCH_DECISIONS_TREE", REPO))
sys.path.insert(0, str(TREE))

import asyncpg  # noqa: E402

from beacon_proxy.consent.cache import LOOKUPS  # noqa: E402
from beacon_proxy.consent.model import Beacons, ConsentInput, SuppressionInput  # noqa: E402
from beacon_proxy.consent.postgres import PostgresStore  # noqa: E402
from beacon_proxy.consent.sqlbase import addr  # noqa: E402
from beacon_proxy.consent.sqlstore import SqlStore  # noqa: E402
from beacon_proxy.consent.store import open_store  # noqa: E402
from beacon_proxy.rewrite.diffing import (  # noqa: E402
    CACHE_BYTES,
    DEFAULT_REFRESH,
    CampaignDiffing,
)
from beacon_proxy.rewrite.engine import Engine  # noqa: E402
from beacon_proxy.rewrite.rules import load_rules  # noqa: E402
from beacon_proxy.spool.envelope import Envelope  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from newsletter import newsletter  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
LIST = "news.example.org"
RECORDS, WORKING_SET, SUPPRESSED = 20_000, 2000, 400
SHAPES = (("1 rcpt", 1), ("10 rcpts", 10), ("1000 rcpts", 1000))
MODES = ("off", "cold", "warm", "churn")
TICK = os.sysconf("SC_CLK_TCK")


def address(i: int) -> str:
    return f"subscriber.{i:06d}@example-{i % 31}.org"


def cpu_of(pid: int | None = None) -> float:
    """utime+stime in seconds, of this process (all threads) or of another one."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def seed(store: SqlStore) -> None:
    states = (Beacons.GRANTED, Beacons.REFUSED, Beacons.UNKNOWN)

    async def consent() -> AsyncIterator[list[ConsentInput]]:
        for start in range(0, RECORDS, 1000):
            yield [ConsentInput(addr(address(i)), states[i % 3], "bench")
                   for i in range(start, start + 1000)]

    async def suppressions() -> AsyncIterator[list[SuppressionInput]]:
        yield [SuppressionInput(addr(address(i * 7)), LIST if i % 2 else None, "bench")
               for i in range(SUPPRESSED)]

    await store.import_consent(consent(), actor="bench")
    await store.import_suppressions(suppressions(), actor="bench")


def sql_store(url: str, *, cache_size: int, pool_size: int = 10) -> SqlStore:
    store = open_store(url, cache_size=cache_size, pool_size=pool_size)
    assert isinstance(store, SqlStore)
    return store


def batches(size: int) -> Callable[[int], list[str]]:
    def batch(n: int) -> list[str]:
        if size >= WORKING_SET:
            return [address(i) for i in range(size)]
        start = (n * size) % WORKING_SET
        return [address((start + j) % WORKING_SET) for j in range(size)]
    return batch


@dataclass
class Result:
    lookups: int
    wall: float
    cpu: float
    server_cpu: float | None
    hits: float
    recipients: int


def _hits() -> float:
    return float(LOOKUPS["hit"])


async def backend_pid(store: SqlStore) -> int | None:
    if not isinstance(store, PostgresStore):
        return None
    async with store._read() as c:
        wrapped: Any = c  # postgres._Conn: the pool's only connection
        pid: int = wrapped._c.get_server_pid()
        return pid


async def phase(store: SqlStore, other: SqlStore, size: int, mode: str, lookups: int,
                seconds: float) -> Result:
    batch = batches(size)
    churn = 4 if size >= 1000 else 50  # lookups between two changes
    n_lookups = max(1, min(lookups, 40 if size >= 1000 else lookups))
    if mode == "cold":  # one pass over the working set, each address first seen
        assert store.cache is not None
        store.cache.invalidate()
        n_lookups = max(1, min(n_lookups, WORKING_SET // size))
    elif mode in ("warm", "churn"):
        for n in range(max(1, WORKING_SET // size)):  # fill the cache, unmeasured
            await store.decisions(batch(n), LIST)
    pid = await backend_pid(store)
    hits0, cpu0 = _hits(), cpu_of()
    server0 = cpu_of(pid) if pid is not None else None
    t0 = time.perf_counter()
    done = recipients = 0
    while done < n_lookups and time.perf_counter() - t0 < seconds:
        if mode == "churn" and done % churn == churn - 1:
            await other.set_consent(address(done % WORKING_SET),
                                    Beacons.GRANTED if done % 100 else Beacons.REFUSED)
        rcpts = batch(done)
        found = await store.decisions(rcpts, LIST)
        assert len(found) == len(rcpts)
        done += 1
        recipients += len(rcpts)
    wall = time.perf_counter() - t0
    cpu = cpu_of() - cpu0
    server = cpu_of(pid) - server0 if pid is not None and server0 is not None else None
    return Result(done, wall, cpu, server, _hits() - hits0, recipients)


async def measured(url: str, other: SqlStore, size: int, mode: str,
                   args: argparse.Namespace) -> Result:
    """One phase on a store of its own (the relay's: one connection, a cache unless
    ``off``)."""
    store = sql_store(url, pool_size=1, cache_size=0 if mode == "off" else 100_000)
    await store.open()
    try:
        if isinstance(store, PostgresStore) and store.cache is not None:
            await store.wait_listener(lambda s: s.listener_pid is not None)
        return await phase(store, other, size, mode, args.lookups, args.seconds)
    finally:
        await store.close()


async def run_backend(name: str, url: str, args: argparse.Namespace) -> None:
    other = sql_store(url, cache_size=0)
    await other.open()
    try:
        await seed(other)
        for label, size in SHAPES:
            for mode in MODES:
                r = await measured(url, other, size, mode, args)
                per = 1000 / r.lookups
                server = (f"{r.server_cpu * per:8.3f}" if r.server_cpu is not None
                          else "       -")
                hit = 100 * r.hits / r.recipients if r.recipients else 0.0
                print(f"{name:<10} {label:<10} {mode:<6} {r.lookups:6d} "
                      f"{r.lookups / r.wall:9.0f} {r.cpu * per:9.3f} {server} {hit:6.1f}",
                      flush=True)
    finally:
        await other.close()


async def run_campaign(name: str, url: str, args: argparse.Namespace) -> None:
    engine = Engine(load_rules())
    data = newsletter()
    analysis = engine.analyse(data)
    envelope = Envelope("Q0001", "news@shop.example", ("ann@example.org",))
    store = sql_store(url, cache_size=0, pool_size=1)
    await store.open()
    try:
        for label, refresh, cache_bytes in (("none", 0.0, 0), ("r=0s", 0.0, CACHE_BYTES),
                                            ("r=10s", DEFAULT_REFRESH, CACHE_BYTES)):
            diffing = CampaignDiffing(store, hold=0, refresh=refresh, cache_bytes=cache_bytes)
            await diffing.observe(envelope, data, analysis)  # learned (or known) once
            pid = await backend_pid(store)
            cpu0, t0 = cpu_of(), time.perf_counter()
            server0 = cpu_of(pid) if pid is not None else None
            done = 0
            while done < args.repeats and time.perf_counter() - t0 < args.seconds:
                seen = await diffing.observe(envelope, data, analysis)
                assert seen.campaign is not None and seen.copies == 1
                done += 1
            wall, cpu = time.perf_counter() - t0, cpu_of() - cpu0
            server = (f"{(cpu_of(pid) - server0) * 1000 / done:8.3f}"
                      if pid is not None and server0 is not None else "       -")
            print(f"{name:<10} {'repeat':<10} {label:<6} {done:6d} "
                  f"{done / wall:9.0f} {cpu * 1000 / done:9.3f} {server}      -", flush=True)
    finally:
        await store.close()


#: --compare's phases (SQLite): a miss (``cold``: every recipient new, as in the relay
#: bench, where unknown recipients each get one message), a hit, no cache, churn, and
#: the larger messages (10 on the loop; 1000 on the reader's thread in both trees).
COMPARED = (("1 rcpt", 1, "cold"), ("1 rcpt", 1, "warm"), ("1 rcpt", 1, "off"),
            ("1 rcpt", 1, "churn"), ("10 rcpts", 10, "cold"), ("10 rcpts", 10, "warm"),
            ("1000 rcpts", 1000, "off"))


async def cpu_json(args: argparse.Namespace) -> int:
    """The child of --compare: CPU ms per lookup of each COMPARED phase, as JSON."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        url = f"sqlite:///{tmp}/store/bench.db"
        other = sql_store(url, cache_size=0)
        await other.open()
        try:
            await seed(other)
            for label, size, mode in COMPARED:
                r = await measured(url, other, size, mode, args)
                out[f"{label} {mode}"] = r.cpu * 1000 / r.lookups
        finally:
            await other.close()
    print(json.dumps(out))
    return 0


def compare(base: Path, args: argparse.Namespace) -> int:
    """Each round runs a child per tree (which first alternates), prints both side by
    side; then the medians."""
    trees = {"base": base.resolve(), "this": TREE}
    rows: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
    cmd = [sys.executable, __file__, "--cpu-json", "--lookups", str(args.lookups),
           "--seconds", str(args.seconds)]
    print(f"base {trees['base']}\nthis {trees['this']}")
    for n in range(args.rounds):
        order = ("base", "this") if n % 2 == 0 else ("this", "base")
        got: dict[str, dict[str, float]] = {}
        for which in order:
            env = {**os.environ, "BENCH_DECISIONS_TREE": str(trees[which])}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                                  timeout=60 + 20 * args.seconds * len(COMPARED))
            got[which] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"round {n + 1} (first: {order[0]}, load average "
              f"{os.getloadavg()[0]:.2f})")
        for key in got["base"]:
            b, t = got["base"][key], got["this"][key]
            rows["base"].setdefault(key, []).append(b)
            rows["this"].setdefault(key, []).append(t)
            print(f"  {key:<18} cpu ms/lookup base {b:7.4f}  this {t:7.4f}  "
                  f"this/base {t / b:5.2f}")
    print("median")
    for key, bs in rows["base"].items():
        b, t = statistics.median(bs), statistics.median(rows["this"][key])
        print(f"  {key:<18} cpu ms/lookup base {b:7.4f}  this {t:7.4f}  this/base {t / b:5.2f}")
    return 0


async def admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(server: str) -> AsyncIterator[str]:
    name = f"beacon_bench_{secrets.token_hex(4)}"
    await admin(server, f'CREATE DATABASE "{name}"')
    try:
        parts = urlsplit(server)
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=4000, help="per phase, at most")
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase, at most")
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                        help="server to create the benchmark database on")
    parser.add_argument("--repeats", type=int, default=300,
                        help="campaign repeats per phase, at most")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--compare", type=Path, metavar="TREE",
                        help="SQLite only: CPU per lookup (miss, hit, ...) of another "
                             "tree of the repo (e.g. main's) against this one, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare")
    parser.add_argument("--cpu-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_json:
        return await cpu_json(args)
    if args.compare is not None:
        return compare(args.compare, args)
    print(f"{'backend':<10} {'message':<10} {'cache':<6} {'lookups':>6} {'per s':>9} "
          f"{'cpu ms':>9} {'srv ms':>8} {'hit%':>6}")
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        await run_backend("sqlite", f"sqlite:///{tmp}/store/bench.db", args)
        await run_campaign("sqlite", f"sqlite:///{tmp}/store/bench.db", args)
    if not args.no_postgres:
        async with pg_database(args.postgres) as url:
            await run_backend("postgresql", url, args)
            await run_campaign("postgresql", url, args)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
