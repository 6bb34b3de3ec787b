"""bench/minified.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import json
import subprocess

from tests.bench.script import ROOT, run_script


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("minified.py", *args)


def test_every_shape_is_measured_and_its_copies_rescanned() -> None:
    done = _run("--copies", "3", "--rounds", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    for shape in ("formatted", "minified", "one-line"):
        assert {f"{shape} {k}" for k in ("scan", "rescanned", "full", "analyse")} <= set(result)
        assert result[f"{shape} rescanned"] == 1.0, result  # each further copy rescanned


def test_the_two_tree_comparison_prints_both_tables() -> None:
    done = _run("--copies", "2", "--rounds", "1", "--pairs", "1", "--base", str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pair 1" in done.stdout and " base:" in done.stdout and " branch:" in done.stdout
