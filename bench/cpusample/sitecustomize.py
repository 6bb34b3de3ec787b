"""A CPU-weighted sampler of the main thread's Python stack, for ``serve`` workers.

    BEACON_CPUSAMPLE=/tmp/prof PYTHONPATH=$PWD/bench/cpusample:$PWD python bench/relay.py ...
    python bench/cpusample_report.py /tmp/prof.*.json --messages N

(``PYTHONPATH`` absolute: the relay runs in its temporary directory, where a relative
one finds nothing, and nothing is sampled.)

py-spy counts wall time while a thread is runnable (or holds the GIL), so on a
busy 2-core machine a reply's ``write`` that wakes the client and is preempted
looks like CPU.  This samples on ``ITIMER_PROF`` (every 0.5 ms of the process's
CPU) and weights each sample by the main thread's own CPU (``time.thread_time``)
since the sample before, so the stacks add up to the main thread's CPU.  A
signal is handled between bytecodes: CPU spent in C outside any Python frame
(uvloop's callbacks, socket reads) lands on the next Python frame that runs
(``data_received``, ``run``).  Only processes started with ``--worker`` sample
(the bench's own process and the supervisor do not); each writes
``<BEACON_CPUSAMPLE>.<pid>.json`` every 2000 samples and at exit.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("BEACON_CPUSAMPLE") and "--worker" in sys.argv:
    import atexit
    import collections
    import json
    import signal
    import time
    from types import FrameType

    _out = f"{os.environ['BEACON_CPUSAMPLE']}.{os.getpid()}.json"
    _stacks: collections.defaultdict[str, float] = collections.defaultdict(float)
    _last = [time.thread_time(), 0.0]  # main thread CPU at the last sample, samples

    def _dump() -> None:
        with open(_out, "w") as f:
            json.dump(sorted(_stacks.items()), f)

    def _name(frame: FrameType) -> str:
        code = frame.f_code
        where = code.co_filename.rsplit("site-packages/", 1)[-1]
        return f"{code.co_name} ({where}:{code.co_firstlineno})"

    def _sample(signum: int, frame: FrameType | None) -> None:
        now = time.thread_time()
        used, _last[0] = now - _last[0], now
        if used <= 0 or frame is None:
            return
        names = []
        f: FrameType | None = frame
        while f is not None:
            names.append(_name(f))
            f = f.f_back
        _stacks[";".join(reversed(names))] += used
        _last[1] += 1
        if _last[1] % 2000 == 0:
            _dump()

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
    atexit.register(_dump)

# The cyclic garbage collector's time, for ``serve`` workers (independent of the sampler
# above; either or both):
#
#     BEACON_GCSTAT=/tmp/gc PYTHONPATH=$PWD/bench/cpusample:$PWD python bench/relay.py ...
#     python bench/gcstat_report.py /tmp/gc.*.json --messages N
#
# Each collection's generation, thread CPU (``time.thread_time`` around it, from
# ``gc.callbacks``) and objects collected, with its wall-clock time; written to
# ``<BEACON_GCSTAT>.<pid>.json`` every 100 collections and at exit.
if os.environ.get("BEACON_GCSTAT") and "--worker" in sys.argv:
    import atexit as _atexit
    import gc as _gc
    import json as _json
    import time as _time
    from typing import Any as _Any

    _gc_out = f"{os.environ['BEACON_GCSTAT']}.{os.getpid()}.json"
    _gc_started = [0.0]
    _gc_log: list[tuple[float, int, float, int]] = []

    def _gc_dump() -> None:
        with open(_gc_out, "w") as f:
            _json.dump({"log": _gc_log, "threshold": _gc.get_threshold(),
                        "frozen": _gc.get_freeze_count()}, f)

    def _gc_timed(phase: str, info: dict[str, _Any]) -> None:
        if phase == "start":
            _gc_started[0] = _time.thread_time()
            return
        _gc_log.append((round(_time.time(), 3), info["generation"],
                        _time.thread_time() - _gc_started[0], info["collected"]))
        if len(_gc_log) % 100 == 0:
            _gc_dump()

    _gc.callbacks.append(_gc_timed)
    _atexit.register(_gc_dump)
