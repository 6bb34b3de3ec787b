"""bench/copies.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _beacon

from tests.bench.script import ROOT, run_script

pytestmark = pytest.mark.skipif(
    shutil.which("smtp-sink") is None and not Path("/usr/sbin/smtp-sink").exists(),
    reason="smtp-sink (postfix) is not installed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("copies.py", *args, cwd=ROOT / "bench")


def test_the_copies_benchmark_delivers_every_copy_and_reports_each_message() -> None:
    done = _run("--json", "--recipients", "6", "--messages", "2", "--granted-share", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    per_copy = json.loads(done.stdout)
    assert len(per_copy) == 2 and all(v > 0 for v in per_copy)


def test_the_copies_benchmark_compares_two_trees() -> None:
    done = _run("--recipients", "4", "--messages", "1", "--base", str(ROOT), "--pairs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pair 1 (load" in done.stdout and "branch" in done.stdout


def test_the_copies_benchmark_signs_with_a_given_key(tmp_path: Path) -> None:
    pem = _beacon.dkim_key(tmp_path)  # the relay benchmark's own key maker
    done = _run("--json", "--recipients", "3", "--messages", "1", "--dkim", "--dkim-key",
                str(pem))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(json.loads(done.stdout)) == 1
