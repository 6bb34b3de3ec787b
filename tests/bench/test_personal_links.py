"""bench/personal_links.py runs end to end on a tiny load (a smoke test: no timing is
judged)."""

from __future__ import annotations

from tests.bench.script import ROOT, run_script


def test_the_personal_links_benchmark_compares_two_trees() -> None:
    done = run_script("personal_links.py", "--messages", "2", "--rounds", "1", "--base",
                      str(ROOT), "--pairs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    pair = [line for line in done.stdout.splitlines() if line.startswith("pair 1")]
    assert len(pair) == 1 and all(f"links={n} base" in pair[0] for n in (0, 1, 5, 30)), (
        done.stdout)
