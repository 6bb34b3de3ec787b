"""CPU time of a callable, for the benchmarks that time one function in-process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["best_cpu"]


def best_cpu(run: Callable[[], object], rounds: int) -> float:
    """The least ``time.process_time`` seconds one call of ``run`` took in ``rounds``."""
    out = math.inf
    for _ in range(rounds):
        started = time.process_time()
        run()
        out = min(out, time.process_time() - started)
    return out
