#!/usr/bin/env python3
"""The rescan machinery on a sender's costliest shapes (branch wt-attack3).

    cd TREE && PYTHONPATH=TREE python bench/rescan_attacks.py [--rounds 3]

CPU seconds (``time.process_time``, best of ``--rounds``) of the shapes that
``tests/rewrite/test_rescan_under_attack.py`` holds to a full scan's cost:

* ``hidden``: a template of N hidden elements with text between them, and a copy
  changing the text after every sixth one: the copy's full scan against its rescan
  (``ScanCache.rescan`` + ``finish_scan``);
* ``cond``: D conditional comments never closed, then M constructs: a plain full
  scan against one kept as a template (marks recorded);
* ``meta``: a hundred ``<meta`` before one ``charset`` and a run of blanks: plain
  against kept as a template.

Run it in the base tree and the branch in turn (the script is plain: copy it into
the base's bench/ when it is not there).
"""

from __future__ import annotations

import argparse

from _cpu import best_cpu

from beacon_proxy.rewrite.html import finish_scan, scan_entries
from beacon_proxy.rewrite.rescan import ScanCache


def hidden(units: int, rounds: int) -> str:
    unit = b'<div style="display:none">x</div><p>A%05d</p>\n'
    template = b"".join(unit % i for i in range(units))
    copy = b"".join((unit % i).replace(b">A", b">B") if i % 6 == 0 else unit % i
                    for i in range(units))
    cache = ScanCache()
    scan_entries(template, learner=cache)

    def rescanned() -> None:
        scan = cache.rescan(copy, "utf-8", 200_000)
        assert scan is not None
        finish_scan(scan)

    return (f"hidden x{units:<13d}({len(copy) // 1000:4d} KB): full "
            f"{best_cpu(lambda: scan_entries(copy), rounds):.3f} s  rescan "
            f"{best_cpu(rescanned, rounds):.3f} s")


def learned(name: str, doc: bytes, rounds: int) -> str:
    return (f"{name:<21s}({len(doc) // 1000:4d} KB): plain "
            f"{best_cpu(lambda: scan_entries(doc), rounds):.3f} s  learned "
            f"{best_cpu(lambda: scan_entries(doc, learner=ScanCache()), rounds):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    for units in (4000, 8000):
        print(hidden(units, rounds), flush=True)
    for depth, constructs in ((2000, 10_000), (4000, 20_000)):
        doc = b"<!--[if mso]>" * depth + b'<!x><img src="x">' * constructs
        print(learned(f"cond {depth} x {constructs}", doc, rounds), flush=True)
    for blanks in (1_000_000, 4_000_000):
        doc = b"<p>" + b"<meta " * 100 + b"charset" + b" " * blanks + b"x>"
        print(learned("meta x100 + blanks", doc, rounds), flush=True)


if __name__ == "__main__":
    main()
