"""``beacon-proxy report`` on a generated day of logs: how long, and how many events a second.

A day of ``--events`` relay events (default 100 000, written once by
``tests/logday.py`` through the relay's own formatter, not timed) is
summarised ``--rounds`` times by ``python -m beacon_proxy report FILE`` as a
subprocess (the whole command: interpreter, imports, reading, the text
report), plain and gzip-compressed; the medians are printed with events per
second.

Goal (issue 13): a day of 100 000 events in under 5 s.
Run: ``python bench/report.py [--events N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.logday import write_day  # noqa: E402

GOAL = 5.0


def timed(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beacon_proxy", "report", str(path)], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "beacon-proxy.log"
        write_day(plain, args.events)
        packed = Path(tmp) / "beacon-proxy.log.1.gz"
        with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
            shutil.copyfileobj(src, dst)
        times: dict[str, list[float]] = {"plain": [], "gzip": []}
        for _ in range(args.rounds):
            times["plain"].append(timed(plain))
            times["gzip"].append(timed(packed))
        size = plain.stat().st_size
    print(f"python {sys.version.split()[0]}, {args.events} events ({size / 1e6:.1f} MB), "
          f"{args.rounds} rounds, medians of the whole command\n")
    print(f"{'input':8} {'seconds':>8} {'events/s':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:8} {median:8.2f} {args.events / median:10.0f}")
    worst = max(statistics.median(v) for v in times.values())
    ok = worst < GOAL
    print(f"\nreport on {args.events} events: {worst:.2f} s   goal < {GOAL} s   "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
