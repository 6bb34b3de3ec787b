"""A benchmark script run as a person runs it, for the smoke tests of ``bench/`` (no
timing is judged): ``python bench/<name> ...`` in a child process, this checkout first
on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "run_script"]

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``bench/<name> args`` run from ``cwd`` (5 minutes at most); its output as text."""
    return subprocess.run([sys.executable, str(ROOT / "bench" / name), *args],
                          capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
