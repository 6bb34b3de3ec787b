"""bench/log_event.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import log_event


def test_both_ways_are_priced_with_and_without_pseudonyms(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert log_event.main(["--events", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["plain", "pseudonymized"], lines
    assert all("straight / ordinary = " in line for line in lines), lines
