#!/usr/bin/env python3
"""The cyclic garbage collector's CPU per message, from ``BEACON_GCSTAT`` dumps.

    BEACON_GCSTAT=/tmp/gc PYTHONPATH=$PWD/bench/cpusample:$PWD python bench/relay.py \\
        --phases c --messages 20000
    python bench/gcstat_report.py /tmp/gc.*.json --messages 20000

Counts the collections from the first one that collected 1000 objects or more (the
load has started: start-up's own collections find next to nothing) to the last, per
worker and generation: how many, their CPU (the collecting thread's, ``gc.callbacks``),
the longest one (the event loop waits that long when it is the loop's thread), and the
objects they freed; then the total in microseconds per message of ``--messages`` (the
messages of the run: start-up's collections are left out, the load's first few
hundred milliseconds too, so the figure is a slight under-count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dumps", nargs="+", type=Path)
    ap.add_argument("--messages", type=int, required=True)
    a = ap.parse_args()
    total = 0.0
    for path in a.dumps:
        dump = json.loads(path.read_text())
        log = dump["log"]
        start = next((i for i, e in enumerate(log) if e[3] >= 1000), len(log))
        count, cpu, longest, freed = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0
        for _, gen, used, collected in log[start:]:
            count[gen] += 1
            cpu[gen] += used
            longest[gen] = max(longest[gen], used)
            freed += collected
        total += sum(cpu)
        print(f"{path.name}: threshold {dump['threshold']}, frozen {dump['frozen']}; "
              f"collections {count}, CPU ms {[round(c * 1e3, 1) for c in cpu]}, "
              f"longest ms {[round(c * 1e3, 1) for c in longest]}, objects freed {freed}")
    print(f"collector CPU under load: {total * 1e3:.1f} ms, "
          f"{total * 1e6 / a.messages:.1f} us per message")


if __name__ == "__main__":
    main()
