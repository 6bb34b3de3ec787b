"""Instructions per ``Engine.analyse`` of the 70 KB newsletter, this tree against a base.

Three kinds of message: a campaign's further copy (one ``<p>`` differs from the last: the
rescan path, the checks of other readers taken from the last copy that passed), the
same with the recipient's token in a link as well (``links``: the first product link of
each copy carries its own; the checks taken from the last copy since session 19), and a
new message (each with another line count: no template).  Counted by valgrind's
callgrind, which counts instructions, not seconds: the same on a busy machine.  Each
count is (n=10 minus n=2 messages) / 8, so start-up and the first message drop out.

    python bench/analysis_cost.py --base /tmp/base      # a `git archive` of the base

(``--one KIND N`` is what each valgrind run executes.)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("personal", "links", "new")


def _one(kind: str, n: int) -> None:
    sys.path.insert(0, str(HERE))
    from newsletter import newsletter

    from beacon_proxy.rewrite.engine import Engine
    from beacon_proxy.rewrite.rules import load_rules

    engine, message = Engine(load_rules()), newsletter()
    copies = [message.replace(b"</body>", b"<p>%d</p></body>" % i, 1) for i in range(n + 1)]
    if kind == "links":  # a recipient's token in a link's query as well
        copies = [m.replace(b"/p/SKU100000?", b"/p/SKU100000?u=3Dr%05d&amp;" % i, 1)
                  for i, m in enumerate(copies)]
    if kind == "new":  # another line count each time: no template to rescan against
        copies = [m.replace(b"<html", b"<html data-x=%d" % i + b"\n" * i, 1)
                  for i, m in enumerate(copies)]
    for copy in copies:
        engine.analyse(copy)


def _count(tree: Path, kind: str, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--one", kind, str(n)], env=env, capture_output=True, text=True,
        check=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no count from valgrind:\n{out.stderr[-2000:]}")
    return int(found[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the base tree (a git archive)")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _one(args.one[0], int(args.one[1]))
        return 0
    trees = {"this tree": HERE.parent} | ({"base": args.base} if args.base else {})
    per: dict[tuple[str, str], float] = {}
    for kind in KINDS:
        for name, tree in trees.items():
            per[name, kind] = (_count(tree, kind, 10) - _count(tree, kind, 2)) / 8
            print(f"{kind:9} {name:10} {per[name, kind] / 1e6:7.2f} M instructions a message",
                  flush=True)
        if args.base:
            print(f"{kind:9} ratio      {per['this tree', kind] / per['base', kind]:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
