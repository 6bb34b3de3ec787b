#!/usr/bin/env python3
"""CPU per further copy of a known campaign, formatted against minified HTML (issue 12 item 5).

    python bench/minified.py [--copies 300] [--rounds 3] [--base DIR] [--pairs 3]

The ~60 KB HTML of ``bench/newsletter.py`` in three shapes: as generated
(``formatted``, ~300 lines), ``minified`` (line feeds and indentation removed:
one line, as MJML and many ESP pipelines send it) and ``one-line`` (every line
break a blank).  A campaign's copies differ in a few places (the open pixel's
id, the unsubscribe token, a recommended product's SKU in three URLs), so the
analysis cache (``rewrite/known.py``, keyed by body) misses every copy, and the
scan cache (``rewrite/rescan.py``) is what makes a further copy cheap.

Shown per shape, CPU ms per copy (``time.process_time``, best of ``--rounds``
rounds of ``--copies`` fresh copies after a warm-up):

* ``scan``: the scan of a further copy as ``Engine.analyse`` runs it
  (``ScanCache.rescan`` and ``finish_scan``; a copy it cannot rescan scanned in
  full and kept as the template), and ``rescanned``: how many of the copies
  were rescanned rather than scanned in full;
* ``full``: the same copies scanned in full (no template), for reference;
* ``analyse``: ``Engine.analyse`` of the whole message (MIME, quoted-printable,
  scan, classification) on an engine that knows the campaign.

``--base DIR``: the same in child processes with ``PYTHONPATH=DIR`` (e.g. a
``git archive`` of main) and this tree in turn, ``--pairs`` times.
``--scan-only SHAPE``: only the template's scan and ``--copies`` copies' ``scan``,
untimed, for an instruction count (``valgrind --tool=callgrind``: the difference
between two ``--copies`` is the copies' share).
"""

from __future__ import annotations

import json
import quopri
import re
import time
from collections.abc import Callable
from pathlib import Path

from _pairs import BRANCH, alternate, pair_parser
from newsletter import newsletter

from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.html import finish_scan, scan_entries
from beacon_proxy.rewrite.rescan import ScanCache
from beacon_proxy.rewrite.rules import load_rules


def _html() -> bytes:
    data = newsletter()
    body = data[data.index(b"<!DOCTYPE"):]
    return quopri.decodestring(body).split(b"\n--")[0]


SHAPES: dict[str, Callable[[bytes], bytes]] = {
    "formatted": lambda doc: doc,
    "minified": lambda doc: re.sub(rb"[\r\n]+[\t ]*", b"", doc),
    "one-line": lambda doc: re.sub(rb"\s*[\r\n]\s*", b" ", doc),
}


def _copy(doc: bytes, n: int) -> bytes:
    """Recipient ``n`` 's copy: its own pixel id, unsubscribe token and recommendation."""
    return (doc.replace(b"OGYzYjIx", b"%08d" % n)
            .replace(b"Zm9vYmFyYmF6cXV4", b"%016x" % (n * 7919))
            .replace(b"SKU100770", b"SKU%06d" % (n % 1000)))


def _message(html: bytes) -> bytes:
    body = quopri.encodestring(html).replace(b"\n", b"\r\n")
    return (b"From: news@shop.example\r\nTo: a@example.net\r\nSubject: Spring\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)


def _best(run: Callable[[list[bytes]], None], make: Callable[[int], bytes], first: int,
          copies: int, rounds: int) -> float:
    """Best CPU ms per copy over ``rounds`` rounds of fresh copies (numbered from ``first``)."""
    best = float("inf")
    for r in range(rounds):
        batch = [make(first + r * copies + i) for i in range(copies)]
        start = time.process_time()
        run(batch)
        best = min(best, (time.process_time() - start) / copies * 1e3)
    return best


def measure(copies: int, rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    html = _html()
    for name, shape in SHAPES.items():
        doc = shape(html)
        cache = ScanCache()
        scan_entries(doc, learner=cache)
        rescanned = 0

        def cached(batch: list[bytes], cache: ScanCache = cache) -> None:
            nonlocal rescanned
            for view in batch:
                scan = cache.rescan(view, "utf-8", 200_000)
                if scan is None:
                    scan_entries(view, learner=cache)
                else:
                    rescanned += 1
                    finish_scan(scan)

        def full(batch: list[bytes]) -> None:
            for view in batch:
                scan_entries(view)

        engine = Engine(load_rules())
        engine.analyse(_message(doc))

        def analyse(batch: list[bytes], engine: Engine = engine) -> None:
            for data in batch:
                engine.analyse(data)

        cached([_copy(doc, 10**6 + i) for i in range(20)])  # warm-up
        rescanned = 0

        def view(n: int, doc: bytes = doc) -> bytes:
            return _copy(doc, n)

        def message(n: int, doc: bytes = doc) -> bytes:
            return _message(_copy(doc, n))

        out[f"{name} scan"] = _best(cached, view, 0, copies, rounds)
        out[f"{name} rescanned"] = rescanned / rounds / copies
        out[f"{name} full"] = _best(full, view, 0, copies, rounds)
        out[f"{name} analyse"] = _best(analyse, message, 0, copies, rounds)
    return out


def scan_only(shape: str, copies: int) -> None:
    doc = SHAPES[shape](_html())
    cache = ScanCache()
    scan_entries(doc, learner=cache)
    for view in [_copy(doc, n) for n in range(copies)]:
        scan = cache.rescan(view, "utf-8", 200_000)
        if scan is None:
            scan_entries(view, learner=cache)
        else:
            finish_scan(scan)


def _table(result: dict[str, float]) -> str:
    rows = [f"{'shape':<10} {'scan ms':>8} {'rescanned':>9} {'full ms':>8} {'analyse ms':>10}"]
    for name in SHAPES:
        rows.append(f"{name:<10} {result[f'{name} scan']:>8.3f} "
                    f"{result[f'{name} rescanned']:>9.0%} {result[f'{name} full']:>8.3f} "
                    f"{result[f'{name} analyse']:>10.3f}")
    return "\n".join(rows)


def compare(base: Path, copies: int, rounds: int, pairs: int) -> None:
    """Base and this tree alternating in child processes."""
    print(f"CPU ms per further copy (best of {rounds} x {copies}); base {base}, "
          f"branch {BRANCH}")
    args = ("--copies", str(copies), "--rounds", str(rounds))
    for pair, load, old, new in alternate(__file__, base, args, pairs):
        print(f"pair {pair} (load {load:.1f})\n base:\n{_table(old)}\n branch:\n{_table(new)}")


def main() -> None:
    parser = pair_parser(__doc__, "copies", 300)
    parser.add_argument("--scan-only", choices=SHAPES, help="scan copies, untimed")
    args = parser.parse_args()
    if args.scan_only is not None:
        scan_only(args.scan_only, args.copies)
        return
    if args.base is not None:
        compare(args.base, args.copies, args.rounds, args.pairs)
        return
    result = measure(args.copies, args.rounds)
    print(json.dumps(result) if args.json else _table(result))


if __name__ == "__main__":
    main()
