"""bench/delivery_stages.py runs end to end on a tiny load (a smoke test: no timing is
judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_is_printed() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "delivery_stages.py"), "--messages", "3"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in ("to_json", "decisions", "prepare", "render", "wire", "total"):
        assert f"{stage} " in done.stdout, done.stdout
