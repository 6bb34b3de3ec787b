"""bench/receive.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _receive(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "receive.py"), "--messages", "5", "--rounds", "1",
         *args], capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("floor", [False, True], ids=["server", "floor"])
def test_the_thread_client(floor: bool) -> None:
    out = _receive("--client", "thread", "--size", "2000", *(["--floor"] if floor else []))
    assert "client: thread" in out and "receive CPU ms/msg (server thread):" in out, out


@pytest.mark.skipif(shutil.which("smtp-source") is None
                    and not Path("/usr/sbin/smtp-source").exists(),
                    reason="needs Postfix's smtp-source")
def test_smtp_source_with_the_newsletter() -> None:
    out = _receive("--client", "source", "--newsletter")
    assert "client: source" in out and "best" in out, out


def test_two_trees_alternate() -> None:
    out = _receive("--client", "thread", "--size", "2000", "--base", str(ROOT), "--pairs", "1")
    assert "pair 1 (load" in out and "branch" in out, out
