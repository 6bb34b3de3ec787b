"""CLI start-up benchmark: how long a store command takes, beside the interpreter alone.

Side by side, in one run, the medians over ``--rounds`` alternating runs of

* baseline: ``python -c pass`` (the interpreter's own start-up, the floor);
* ``python -m beacon_proxy consent get ADDR`` on a SQLite store that exists
  (what an operator types most; the store is opened and its schema checked);
* ``python -m beacon_proxy --help`` (the parser alone).

Goal (issue 10): ``consent get`` under 0.3 s.  The CLI keeps it there by
importing only what a command needs (``tests/cli/test_main.py`` checks no
command but ``serve``/``scan`` imports aiohttp, aiosmtpd or the engine).
Run: ``python bench/cli.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.3


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(f'[store]\nurl = "sqlite:///{Path(tmp) / "c.db"}"\n')
        py = sys.executable
        cases = {
            "python -c pass (baseline)": [py, "-c", "pass"],
            "beacon-proxy consent get": [py, "-m", "beacon_proxy", "consent", "get",
                                         "a@example.org", "--config", str(config)],
            "beacon-proxy --help": [py, "-m", "beacon_proxy", "--help"],
        }
        timed([*cases["beacon-proxy consent get"], "--create-store"])  # creates it: not timed
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, argv in cases.items():
                times[name].append(timed(argv))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"python {sys.version.split()[0]}, {rounds} rounds, medians\n")
    print(f"{'command':32} {'seconds':>8} {'x baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32} {median:8.3f} {median / base:11.1f}")
    get = statistics.median(times["beacon-proxy consent get"])
    verdict = "PASS" if get < GOAL else "FAIL"
    print(f"\nconsent get: {get:.3f} s   goal < {GOAL} s   {verdict}")
    return 0 if get < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
