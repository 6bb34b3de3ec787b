#!/usr/bin/env python3
"""One message to many recipients: its copies over one connection, and over lanes.

    python bench/lanes.py [--recipients 500] [--rounds 3] [--upstream postfix|sink]

Every recipient gets a copy of their own, one SMTP transaction each, so a list
server's message to 500 members is 500 transactions upstream.  Over one
connection each waits for the one before it (its ``250``: the upstream's queue
file written and fsynced, when the upstream is an MTA).  With ``[delivery] lanes``
the attempt spreads them over several connections (``docs/flow.md``).

Each run starts a fresh ``beacon-proxy serve`` (``workers = 1``, so the one message
meets the one scheduler) whose upstream is a temporary Postfix instance relaying on
to ``smtp-sink`` (``--upstream postfix``, the default: a real MTA that fsyncs each
transaction, ``bench/_postfix.py``; needs root) or ``smtp-sink`` itself
(``--upstream sink``: an upstream that answers at once, the bound of the relay's own
CPU).  It sends one generated ~70 KB newsletter to ``--recipients`` numbered
recipients with ``smtp-source -r`` and times from the start of smtp-source until the
relay's ``/metrics`` count every recipient delivered (so what Postfix does with the
copies afterwards is not in the time).  Runs alternate ``lanes = 0`` and ``lanes =
--lanes`` (default 4) for ``--rounds`` rounds on the same upstream; the medians and
their ratio are printed.  Exit status: 0 done, 2 the benchmark failed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _beacon import metric
from _postfix import PostfixHop, postfix_available
from _proc import BenchError, tree_cpu_split, wait_until
from _sink import sink
from newsletter import newsletter
from relay import SMTP_SOURCE, Settings, beacon_proxy, source_cmd


def _one(st: Settings, tag: str, upstream: int, recipients: int) -> tuple[float, float, int]:
    """Seconds until every copy was delivered, the relay's CPU seconds meanwhile, and
    the upstream connections it opened."""
    with beacon_proxy(st, tag, upstream, dkim=False) as bp:
        cpu0 = sum(tree_cpu_split(bp.proc.pid))
        t0 = time.perf_counter()
        done = subprocess.run(
            source_cmd(st, bp.smtp_port, 1, recipients), capture_output=True, timeout=60,
            check=False)
        if done.returncode != 0:
            raise BenchError(f"smtp-source exited {done.returncode}: {done.stdout[-300:]!r}")
        wait_until(lambda: bp.delivered() >= recipients, st.timeout,
                   f"{tag}: {recipients} copies delivered", bp.proc, interval=0.002)
        seconds = time.perf_counter() - t0
        cpu = sum(tree_cpu_split(bp.proc.pid)) - cpu0
        opened = int(sum(metric(bp.web_port, "beacon_proxy_upstream_connections_total",
                                f'{{pipelining="{p}"}}') for p in ("yes", "no")))
    return seconds, cpu, opened


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipients", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--upstream", choices=("postfix", "sink"), default="postfix")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args(argv)
    if a.upstream == "postfix" and (why := postfix_available()) is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-lanes-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # smtp-sink (nobody) and Postfix's daemons reach their dirs below
        message = work / "newsletter.eml"
        message.write_bytes(newsletter())
        message.chmod(0o644)
        st = Settings(messages=1, sessions=1, message_file=message, workdir=work,
                      timeout=a.timeout, reuse=False, profile=None, workers="1",
                      recipients=a.recipients)
        runs: dict[int, list[tuple[float, float, int]]] = {0: [], a.lanes: []}
        try:
            with sink(work, 30) as snk:
                if a.upstream == "postfix":
                    with PostfixHop(work / "postfix", snk.port) as hop:
                        upstream = hop.port
                        _rounds(st, a, upstream, runs)
                else:
                    _rounds(st, a, snk.port, runs)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
    print(f"one ~70 KB newsletter to {a.recipients} recipients, upstream {a.upstream}, "
          f"beacon-proxy with one worker process, {SMTP_SOURCE} -r {a.recipients}")
    print(f"{'lanes':>5} {'run s':>24} {'median s':>9} {'copies/s':>9} "
          f"{'CPU ms/copy':>11} {'connections':>11}")
    medians = {}
    for lanes, rows in runs.items():
        median = statistics.median(r[0] for r in rows)
        medians[lanes] = median
        cpu = statistics.median(r[1] for r in rows) * 1000 / a.recipients
        print(f"{lanes:>5} {' '.join(f'{r[0]:.2f}' for r in rows):>24} {median:>9.2f} "
              f"{a.recipients / median:>9.0f} {cpu:>11.3f} "
              f"{'/'.join(str(r[2]) for r in rows):>11}")
    print(f"lanes = {a.lanes} against lanes = 0: {medians[0] / medians[a.lanes]:.2f}x "
          "the copies a second")
    return 0


def _rounds(st: Settings, a: argparse.Namespace, upstream: int,
            runs: dict[int, list[tuple[float, float, int]]]) -> None:
    for n in range(a.rounds):
        for lanes in runs:
            print(f"round {n + 1}: lanes = {lanes} ...", flush=True)
            runs[lanes].append(_one(replace(st, lanes=lanes), f"lanes{lanes}-{n}", upstream,
                                    a.recipients))


if __name__ == "__main__":
    sys.exit(main())
