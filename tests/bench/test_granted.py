"""bench/granted.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

from tests.bench.script import ROOT, run_script


def test_the_granted_benchmark_compares_two_trees() -> None:
    done = run_script("granted.py", "--messages", "3", "--rounds", "1", "--base", str(ROOT),
                      "--pairs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    pair = next(line for line in done.stdout.splitlines() if line.startswith("pair 1"))
    for name in ("render granted", "footer granted", "footer refused"):
        assert f"{name} base " in pair, done.stdout
