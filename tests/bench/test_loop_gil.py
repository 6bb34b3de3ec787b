"""bench/loop_gil.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_loop_gil_benchmark_compares_two_trees() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loop_gil.py"), "--lookups", "20",
         "--rounds", "1", "--base", str(ROOT), "--pairs", "1"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    pair = [line for line in done.stdout.splitlines() if line.startswith("pair 1")]
    assert len(pair) == 1 and "alone base" in pair[0] and "beside base" in pair[0], done.stdout
