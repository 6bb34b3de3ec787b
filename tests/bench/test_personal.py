"""bench/personal.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

from tests.bench.script import ROOT, run_script


def test_the_personalised_benchmark_compares_two_trees() -> None:
    done = run_script("personal.py", "--messages", "3", "--rounds", "1", "--base", str(ROOT),
                      "--pairs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split()[0:2] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert rows == [["refused", "base"], ["granted", "base"], ["refused", "links"],
                    ["footer", "refused"], ["footer", "granted"]], done.stdout
