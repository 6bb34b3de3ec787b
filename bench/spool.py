#!/usr/bin/env python3
"""Spool micro-benchmark: this checkout's spool against another git ref's, in one run.

    python bench/spool.py [--messages 2000] [--concurrency 8] [--baseline main]

Each message makes the spool calls of a one-recipient message that is
delivered at the first attempt: ``put`` (the SMTP side's ``250`` waits for
it), then either ``record(..., "delivered")`` and ``remove`` ("same calls", as
the first relays made them), or the removal alone as the scheduler makes it
("as relay": the delivery that ends a message is not journaled, the removal
protects it; ``remove_soon``, not waited for, when the spool has it, else
``remove``).  Four rows: both calls on the baseline's spool and on this
checkout's.  A run ends when every removal handed over is done
(``settled``), so its CPU includes them.  Each child first recovers its
(empty) spool, as the relay does before it serves: after that the spool knows
which journals can exist.
A spool with the log (``spool/log.py``, the default since it landed) makes one
data sync per batch of puts, so its file syncs per message fall below 1 with
more than one message in flight; the spool before it, one per message.
``--concurrency`` messages are in flight at once (SMTP sessions handing
messages over at the same time).  The message is ``--size`` bytes (70 KB,
the newsletter of ``bench/relay.py``).

Both spools run in child processes of their own (``PYTHONPATH`` = this
checkout, or the baseline's ``beacon_proxy`` taken with ``git archive``, or
the checkout ``--baseline-tree`` names),
alternately, ``--rounds`` times each; the table shows every run and the
median.  A child counts every ``os.fsync``/``os.fdatasync`` the spool makes
(wrapped before the spool is imported; a sync of a directory is counted
apart) and its own CPU time (utime+stime of all its threads, from
``/proc/self/stat``).  Compare the two columns of one run only: the machine
is shared and its disk's sync latency varies from minute to minute.

The spool directory is a temporary folder under ``--dir`` (default: the
system's temporary folder); it must be on a real disk (``tmpfs`` makes every
sync free and the comparison meaningless: the benchmark refuses it).

Bounded: at most 100 000 messages per child and a 600 s timeout per child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _baseline import add_arguments, baseline_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD_TIMEOUT = 600.0
MAX_MESSAGES = 100_000


def _cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads)


# -- the child: one spool, one load ---------------------------------------------


def child(messages: int, concurrency: int, size: int, root: Path, *, journal: bool
          ) -> dict[str, Any]:
    counts = {"file": 0, "dir": 0}
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def is_dir(fd: int) -> bool:
        import stat
        return stat.S_ISDIR(os.fstat(fd).st_mode)

    def fsync(fd: int) -> None:
        counts["dir" if is_dir(fd) else "file"] += 1
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        counts["dir" if is_dir(fd) else "file"] += 1
        real_fdatasync(fd)

    os.fsync = fsync  # type: ignore[assignment]  # the spool calls them through os
    os.fdatasync = fdatasync  # type: ignore[assignment]

    from beacon_proxy.spool.envelope import Envelope, new_queue_id
    from beacon_proxy.spool.queue import Spool

    data = (b"X" * 76 + b"\r\n") * (size // 78)
    spool = Spool(root)
    spool.open()

    remove_soon = None if journal else getattr(spool, "remove_soon", None)
    reply = "250 2.0.0 Ok: queued"

    async def one() -> None:
        env = Envelope(new_queue_id(), "sender@example.com", ("rcpt@example.net",),
                       client_address="127.0.0.1", size=len(data))
        await spool.put(env, data)
        if journal:
            await spool.record(env.queue_id, 0, "delivered", reply)
        if remove_soon is not None:
            remove_soon(env.queue_id, (0, reply))
        else:
            await spool.remove(env.queue_id)

    async def run() -> float:
        await spool.recover()  # as the relay does before it serves (an empty spool)
        left = messages

        async def session() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(session() for _ in range(concurrency))),
                               CHILD_TIMEOUT)
        if remove_soon is not None:
            await asyncio.wait_for(spool.settled(), CHILD_TIMEOUT)
        return time.perf_counter() - started

    cpu0 = _cpu_seconds()
    wall = asyncio.run(run())
    cpu = _cpu_seconds() - cpu0
    spool.close()
    leftovers = sum(1 for _ in (root / "active").iterdir()) + sum(
        1 for _ in (root / "journal").iterdir())
    if (root / "log").is_dir():  # a spool with the log: its segments must be gone too
        leftovers += sum(1 for _ in (root / "log").iterdir())
    return {"messages": messages, "wall": wall, "cpu": cpu, "file_syncs": counts["file"],
            "dir_syncs": counts["dir"], "leftovers": leftovers}


# -- the parent ------------------------------------------------------------------


def _run_child(tree: Path, journal: bool, args: argparse.Namespace, spool_dir: Path
               ) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--messages",
         str(args.messages), "--concurrency", str(args.concurrency), "--size", str(args.size),
         "--spool", str(spool_dir), *([] if journal else ["--no-journal"])],
        env=env, check=True, capture_output=True, text=True, timeout=CHILD_TIMEOUT + 60,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _on_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        if str(path).startswith(mount) and len(mount) > len(best):
            best, fstype = mount, parts[2]
    return fstype in ("tmpfs", "ramfs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=70_000)
    parser.add_argument("--rounds", type=int, default=3)
    add_arguments(parser, "the old spool")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spool", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-journal", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.messages <= MAX_MESSAGES or not 1 <= args.concurrency <= 256:
        parser.error(f"--messages 1..{MAX_MESSAGES}, --concurrency 1..256")
    if args.child:
        print(json.dumps(child(args.messages, args.concurrency, args.size, args.spool,
                               journal=not args.no_journal)))
        return 0
    if _on_tmpfs(args.dir.resolve()):
        print(f"{args.dir} is on tmpfs: syncs are free there; give --dir on a disk",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-spool-", dir=args.dir) as tmp:
        base = Path(tmp)
        (base / "baseline").mkdir()
        if args.baseline_tree is not None:
            baseline, args.baseline = args.baseline_tree.resolve(), "baseline"
        else:
            baseline = baseline_tree(args.baseline, base / "baseline")
        variants: dict[str, tuple[Path, bool]] = {
            f"{args.baseline}, same calls": (baseline, True),
            "new, same calls": (REPO, True),
            f"{args.baseline}, as relay": (baseline, False),
            "new, as relay": (REPO, False),
        }
        print(f"spool benchmark: {args.messages} messages of {args.size} bytes, "
              f"{args.concurrency} in flight; {args.rounds} rounds, the order rotating; "
              f"spool under {args.dir}")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        order = list(variants)
        for n in range(args.rounds):
            for name in order[n % len(order):] + order[:n % len(order)]:
                tree, journal = variants[name]
                spool_dir = base / f"spool-{n}-{order.index(name)}"
                results[name].append(_run_child(tree, journal, args, spool_dir))
        print()
        print(f"{'spool':<20} {'round':>5} {'msgs/s':>8} {'CPU ms/msg':>10} "
              f"{'file syncs/msg':>14} {'dir syncs/msg':>13} {'left':>5}")
        print("-" * 81)
        medians: dict[str, tuple[float, float, float, float]] = {}
        for name, runs in results.items():
            for i, r in enumerate(runs, 1):
                m = r["messages"]
                print(f"{name:<20} {i:>5} {m / r['wall']:>8.0f} {1000 * r['cpu'] / m:>10.3f} "
                      f"{r['file_syncs'] / m:>14.2f} {r['dir_syncs'] / m:>13.3f} "
                      f"{r['leftovers']:>5}")
            medians[name] = (
                statistics.median(r["messages"] / r["wall"] for r in runs),
                statistics.median(1000 * r["cpu"] / r["messages"] for r in runs),
                statistics.median(r["file_syncs"] / r["messages"] for r in runs),
                statistics.median(r["dir_syncs"] / r["messages"] for r in runs),
            )
        print("-" * 81)
        for name, (rate, cpu, fsyncs, dsyncs) in medians.items():
            print(f"{name:<20} {'med':>5} {rate:>8.0f} {cpu:>10.3f} {fsyncs:>14.2f} "
                  f"{dsyncs:>13.3f}")
        for old_name, name in ((order[0], order[1]), (order[2], order[3])):
            old, new = medians[old_name], medians[name]
            # a tiny run may read no CPU tick at all (the process clock counts in ticks)
            cpu_ratio = f"{new[1] / old[1]:.2f}x" if old[1] > 0 else "n/a (no CPU tick read)"
            print(f"{name} / {old_name}: {new[0] / old[0]:.2f}x messages/s, "
                  f"{cpu_ratio} CPU per message, syncs per message "
                  f"{old[2] + old[3]:.2f} -> {new[2] + new[3]:.2f}")
        bad = sum(r["leftovers"] for runs in results.values() for r in runs)
        if bad:
            print(f"FAIL: {bad} queue files or journals left behind", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
