#!/usr/bin/env python3
"""Where a header section ends: this checkout against a git ref, CPU per call.

    python bench/header_end.py [--baseline main] [--rounds 3]

Times ``headerfacts.header_block`` (the relay's header facts: ``List-Id``,
``Message-ID``, the one-click URL; the console's and ``queue show``'s header) and
``rewrite.known.body_start`` (the analysis cache's split) on the 70 KB newsletter
of ``bench/newsletter.py`` with CRLF and with LF line ends, and on three hostile
1 MB headers without an empty line (the longest search there is: ``MAX_HEADER``).
Each tree runs in a child process of its own (``PYTHONPATH``), alternately; the
best of five repetitions inside a child, ``time.process_time``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _baseline import add_arguments, baseline_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def child() -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from newsletter import newsletter

    from beacon_proxy.headerfacts import header_block
    from beacon_proxy.rewrite.known import body_start

    lf = newsletter()
    inputs = {
        "newsletter CRLF": (lf.replace(b"\n", b"\r\n"), 20_000),
        "newsletter LF": (lf, 2_000),
        "1 MB 'a' LF lines": (b"a\n" * 500_000, 20),
        "1 MB 'a' CRLF lines": (b"a\r\n" * 330_000, 20),
        "1 MB 60-byte lines": ((b"X" * 58 + b"\r\n") * 16_000, 20),
    }
    functions: dict[str, Callable[[bytes], object]] = {
        "header_block": header_block, "body_start": body_start}
    out = {}
    for label, (data, n) in inputs.items():
        for name, f in functions.items():
            best = float("inf")
            for _ in range(5):
                started = time.process_time()
                for _ in range(n):
                    f(data)
                best = min(best, time.process_time() - started)
            out[f"{label}|{name}"] = best / n * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "the tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base = args.baseline_tree or baseline_tree(args.baseline, Path(tmp))
        trees = {"base": base, "branch": REPO}
        runs: dict[str, list[dict[str, float]]] = {"base": [], "branch": []}
        for i in range(args.rounds):
            for name in (("base", "branch") if i % 2 == 0 else ("branch", "base")):
                env = {**os.environ, "PYTHONPATH": str(trees[name])}
                done = subprocess.run([sys.executable, __file__, "--child"], env=env,
                                      capture_output=True, text=True, check=True, timeout=300)
                runs[name].append(json.loads(done.stdout))
    print(f"header end: CPU us per call, best of {args.rounds} rounds (alternating)")
    print(f"{'input':22} {'function':13} {'base':>10} {'branch':>10}")
    for key in runs["base"][0]:
        label, function = key.split("|")
        best = {name: min(run[key] for run in runs[name]) for name in runs}
        print(f"{label:22} {function:13} {best['base']:10.2f} {best['branch']:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
