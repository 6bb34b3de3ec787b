"""bench/delivery_stages.py runs end to end on a tiny load (a smoke test: no timing is
judged)."""

from __future__ import annotations

from tests.bench.script import run_script


def test_every_stage_is_printed() -> None:
    done = run_script("delivery_stages.py", "--messages", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in ("to_json", "decisions", "prepare", "render", "wire", "total"):
        assert f"{stage} " in done.stdout, done.stdout
