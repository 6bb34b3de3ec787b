"""bench/loop_gil.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

from tests.bench.script import ROOT, run_script


def test_the_loop_gil_benchmark_compares_two_trees() -> None:
    done = run_script("loop_gil.py", "--lookups", "20", "--rounds", "1", "--base", str(ROOT),
                      "--pairs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    pair = [line for line in done.stdout.splitlines() if line.startswith("pair 1")]
    assert len(pair) == 1 and "alone base" in pair[0] and "beside base" in pair[0], done.stdout
