"""bench/rescan_attacks.py's rows on tiny shapes (a smoke test: no timing is judged)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _cpu
import rescan_attacks


def test_each_row_runs_and_says_what_it_measured() -> None:
    assert rescan_attacks.hidden(20, 1).startswith("hidden x20 ")
    row = rescan_attacks.learned("meta", b"<p>" + b"<meta " * 3 + b"charset" + b" " * 9 + b"x>", 1)
    assert row.startswith("meta") and " plain " in row and " learned " in row


def test_best_cpu_is_the_least_of_its_rounds() -> None:
    calls: list[int] = []
    assert _cpu.best_cpu(lambda: calls.append(1), 3) >= 0.0
    assert len(calls) == 3
