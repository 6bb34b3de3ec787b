#!/usr/bin/env python3
"""Main-thread CPU per message by function, from ``bench/cpusample`` dumps.

    python bench/cpusample_report.py /tmp/prof.*.json --messages 5000 [--top 60]

Inclusive (the function and what it called) and self (the function's own frame,
with the C work that ran before it: see ``bench/cpusample/sitecustomize.py``), in
microseconds per message and as a share of the sampled CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dumps", nargs="+", type=Path)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--top", type=int, default=60)
    a = ap.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0.0
    for path in a.dumps:
        for stack, used in json.loads(path.read_text()):
            frames = stack.split(";")
            total += used
            for name in set(frames):
                inclusive[name] += used
            own[frames[-1]] += used
    per = 1e6 / a.messages
    print(f"main-thread CPU sampled: {total:.2f} s, {total * per:.1f} us per message")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for name, used in table.most_common(a.top):
            print(f"{100 * used / total:5.1f} % {used * per:8.1f} us  {name[:120]}")


if __name__ == "__main__":
    main()
