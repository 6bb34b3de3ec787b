"""bench/log_event.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_ways_are_priced_with_and_without_pseudonyms() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "log_event.py"), "--events", "5"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["plain", "pseudonymized"], done.stdout
    assert all("straight / ordinary = " in line for line in lines), done.stdout
