"""bench/soak_load.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_load_side_benchmark_runs_both_sides() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak_load.py"), "--rate", "20", "--seconds",
         "0.25", "--rounds", "1", "--connections", "2", "--baseline-tree", str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("1 ")]
    assert [r[1:4] for r in rows] == [["baseline", "5", "5"], ["this", "5", "5"]], done.stdout
    assert "this / baseline: sender" in done.stdout


def test_the_docstring_examples_hold() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import soak_load
    assert doctest.testmod(soak_load).failed == 0
