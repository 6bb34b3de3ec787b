"""bench/spool.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_spool_benchmark_runs_its_four_rows(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "spool.py"), "--messages", "12", "--rounds", "1",
         "--concurrency", "3", "--size", "2000", "--baseline-tree", str(ROOT),
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.endswith(" 0")]
    assert [" ".join(r[:-6]) for r in rows] == [
        "baseline, same calls", "new, same calls", "baseline, as relay", "new, as relay"], (
        done.stdout)
    for row in rows:
        assert 0 < float(row[-3]) <= 1.0  # a data sync per message at most (the log groups)
    assert "new, as relay / baseline, as relay:" in done.stdout
    assert "new, same calls / baseline, same calls:" in done.stdout
