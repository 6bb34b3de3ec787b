#!/usr/bin/env python3
"""The soak's load side alone: this checkout's sender and capture against another ref's.

    python bench/soak_load.py [--rate 300] [--seconds 10] [--rounds 3] [--baseline main]

The soak of ``bench/relay.py`` shares the machine with the relay it
measures, so its sender (``bench/_relaysoak.py``) and its upstream
(``bench/_capture.py``) must cost little CPU.  Here they run without a
relay: the sender's ``run_soak`` sends straight to the capture, at
``--rate`` messages a second for ``--seconds`` over ``--connections``
connections (the soak's open-loop schedule and 70 KB personalised
messages), then waits until the capture has them all.  Printed per run: the
sender's CPU (its ``time.process_time()``, as the soak reports it) and the
capture's (utime+stime from ``/proc``), in ms per message; then the medians
and the ratio this checkout / baseline.

Each side runs from its own tree (the baseline's ``bench`` taken with ``git
archive``, or ``--baseline-tree``): a fresh capture process from that tree
and a child process for the sender, alternately, ``--rounds`` times each.
The machine is shared: compare the sides of one run, round by round.

Bounded: at most 100 000 messages per run, each child killed after
``seconds`` + 300 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import cpu_seconds, free_port, smtp_ready, stop_process, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAX_MESSAGES = 100_000


def _child(args: argparse.Namespace) -> None:
    """Run the tree's soak sender against the capture on ``--port``; print a JSON line."""
    sys.path.insert(0, str(Path(args.tree) / "bench"))
    import _relaysoak  # the tree's own, chosen at run time
    from newsletter import newsletter

    body = newsletter().replace(b"\n", b"\r\n")
    spec = _relaysoak.SoakSpec(args.seconds, args.rate, args.connections, 60.0,
                               drain_timeout=120.0)
    log = _relaysoak.CaptureLog(Path(args.arrivals))
    res = _relaysoak.run_soak(spec, args.port, args.capture_pid, log, body)
    lags = sorted(res.lags)
    print(json.dumps({"scheduled": res.scheduled, "accepted": len(res.accepted),
                      "delivered": sum(1 for n in res.accepted if n in res.arrivals),
                      "sender_cpu_s": res.sender_cpu_s,
                      "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0}))


def _baseline_tree(ref: str, into: Path) -> Path:
    """``bench`` of git ``ref`` (``git archive``), unpacked under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "bench"],
                             check=True, capture_output=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=120)
    return into


def _run(tree: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One run: a capture from ``tree``, the sender from ``tree`` in a child process."""
    port = free_port()
    arrivals = workdir / f"arrivals-{port}.txt"
    capture = subprocess.Popen(
        [sys.executable, str(tree / "bench" / "_capture.py"), "--port", str(port),
         "--out", str(arrivals)], stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: smtp_ready(port), 30, "capture start", capture)
        cpu0 = cpu_seconds(capture.pid)
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree),
             "--port", str(port), "--arrivals", str(arrivals), "--capture-pid",
             str(capture.pid), "--rate", str(args.rate), "--seconds", str(args.seconds),
             "--connections", str(args.connections)],
            check=True, capture_output=True, text=True, timeout=args.seconds + 300).stdout
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result["capture_cpu_s"] = cpu_seconds(capture.pid) - cpu0
    finally:
        stop_process(capture)
    return result


def _ratio(new: float, old: float) -> str:
    """``new / old`` as ``"0.42x"``; ``"-"`` when ``old`` is 0 (a run too short for a tick).

    >>> _ratio(1.0, 4.0), _ratio(1.0, 0.0)
    ('0.25x', '-')
    """
    return f"{new / old:.2f}x" if old else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=300.0, help="messages/s (default 300)")
    p.add_argument("--seconds", type=float, default=10.0, help="per run (default 10)")
    p.add_argument("--connections", type=int, default=8, help="sender connections (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    p.add_argument("--baseline-tree", type=Path, default=None,
                   help="a checkout to compare with instead of --baseline")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--arrivals", help=argparse.SUPPRESS)
    p.add_argument("--capture-pid", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a)
        return 0
    if a.rate <= 0 or a.seconds <= 0 or not 1 <= a.rounds <= 20 or a.connections < 1:
        p.error("--rate and --seconds must be > 0, --rounds 1..20, --connections >= 1")
    if a.rate * a.seconds > MAX_MESSAGES:
        p.error(f"at most {MAX_MESSAGES} messages per run")
    with tempfile.TemporaryDirectory(prefix="bench-soakload-") as tmp:
        workdir = Path(tmp)
        if a.baseline_tree is not None:
            base, base_name = a.baseline_tree.resolve(), str(a.baseline_tree)
        else:
            base = _baseline_tree(a.baseline, workdir / "baseline")
            base_name = a.baseline
        print(f"soak load side: {a.rate:g} msg/s for {a.seconds:g} s over {a.connections} "
              f"connections, 70 KB personalised messages; CPU ms per message")
        print(f"{'round':<6}{'side':<12}{'accepted':>9}{'delivered':>10}{'lag p99 ms':>11}"
              f"{'sender':>8}{'capture':>9}")
        rows: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
        for r in range(1, a.rounds + 1):
            for side, tree in (("baseline", base), ("this", REPO)):
                res = _run(tree, a, workdir)
                n = max(1, res["accepted"])
                sender, capture = 1000 * res["sender_cpu_s"] / n, 1000 * res["capture_cpu_s"] / n
                rows[side].append((sender, capture))
                print(f"{r:<6}{side:<12}{res['accepted']:>9}{res['delivered']:>10}"
                      f"{res['lag_p99_ms']:>11.0f}{sender:>8.2f}{capture:>9.2f}", flush=True)
                time.sleep(1)
        med = {side: (statistics.median(s for s, _ in v), statistics.median(c for _, c in v))
               for side, v in rows.items()}
        print(f"median  baseline ({base_name}) sender {med['baseline'][0]:.2f}, capture "
              f"{med['baseline'][1]:.2f}; this checkout sender {med['this'][0]:.2f}, capture "
              f"{med['this'][1]:.2f}")
        print(f"this / baseline: sender {_ratio(med['this'][0], med['baseline'][0])}, capture "
              f"{_ratio(med['this'][1], med['baseline'][1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
