"""Benchmarks that compare two trees in one run: the same script, in a child process
per tree (``PYTHONPATH`` picks the tree), base and branch alternating, each child
printing its result as JSON.  Shared by ``granted.py``, ``render.py``, ``personal.py``
and ``minified.py``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["BRANCH", "alternate", "child", "compare", "main_per_copy", "pair_parser"]

BRANCH = Path(__file__).resolve().parent.parent  # the tree this script is in


def pair_parser(doc: str | None, count: str = "messages", default: int = 400
                ) -> argparse.ArgumentParser:
    """``--<count>``, ``--rounds``, ``--pairs``, ``--base`` and the children's ``--json``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another tree to compare with (PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def child(script: str, tree: Path, *args: str) -> dict[str, float]:
    """``script --json args`` run with ``tree`` first on the path: its JSON result."""
    done = subprocess.run([sys.executable, str(Path(script).resolve()), "--json", *args],
                          env={**os.environ, "PYTHONPATH": str(tree)},
                          cwd=Path(script).resolve().parent, capture_output=True, text=True,
                          check=True, timeout=600)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def alternate(script: str, base: Path, args: Sequence[str], pairs: int
              ) -> Iterator[tuple[int, float, dict[str, float], dict[str, float]]]:
    """``pairs`` pairs of children, base then this tree: (pair number from 1, the load
    average before it, base's result, this tree's result)."""
    for pair in range(1, pairs + 1):
        load = os.getloadavg()[0]
        old = child(script, base, *args)
        new = child(script, BRANCH, *args)
        yield pair, load, old, new


def compare(script: str, base: Path, names: Sequence[str], args: Sequence[str], pairs: int,
            title: str) -> None:
    """``pairs`` pairs of children (base, then this tree), one line per pair: each name's
    value in both and their ratio."""
    print(f"{title}; base {base}, branch {BRANCH}")
    for pair, load, old, new in alternate(script, base, args, pairs):
        print(f"pair {pair} (load {load:.1f}): " + "; ".join(
            f"{n} base {old[n]:.4f} branch {new[n]:.4f} ({new[n] / old[n]:.2f}x)"
            for n in names))


def main_per_copy(script: str, doc: str | None, names: Sequence[str],
                  measure: Callable[[int, int], dict[str, float]], *,
                  count: str = "messages", default: int = 400, label: str = "CPU ms/copy",
                  digits: int = 4, what: str = "CPU ms per copy") -> None:
    """A script's ``main``: ``measure(<count>, rounds)`` in this tree (by name: CPU ms per
    copy, or what ``label`` says), or with ``--base`` pairs of children of both trees."""
    args = pair_parser(doc, count, default).parse_args()
    n = getattr(args, count)
    if args.base is None:
        result = measure(n, args.rounds)
        print(json.dumps(result) if args.json else
              f"{label}: " + ", ".join(f"{k} {v:.{digits}f}" for k, v in result.items()))
        return
    compare(script, args.base, names, (f"--{count}", str(n), "--rounds", str(args.rounds)),
            args.pairs, f"{what} (best of {args.rounds} x {n})")
