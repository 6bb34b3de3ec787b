"""A CPU-weighted sampler of the main thread's Python stack, for ``serve`` workers.

    BEACON_CPUSAMPLE=/tmp/prof PYTHONPATH=bench/cpusample:$PWD python bench/relay.py ...
    python bench/cpusample_report.py /tmp/prof.*.json --messages N

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
