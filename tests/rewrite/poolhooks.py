"""Analysers for the pool tests, imported by the worker processes.

``hooked_engine`` builds the real engine, except that a message starting with
``HOOK <command> <argument>`` makes the worker misbehave on purpose:

* ``sleep PATH``: write the worker's pid to PATH (the test waits for it), sleep ten minutes;
* ``spin SECONDS``: burn CPU in Python for that long, then answer normally;
* ``burn PATH``: write the worker's pid to PATH, then burn CPU for ten minutes;
* ``nap SECONDS``: sleep that long (no CPU), then answer normally;
* ``hog MIB``: allocate that many MiB, then answer normally;
* ``kill``: SIGKILL itself; ``exit CODE``: ``os._exit(CODE)``;
* ``raise``: raise ``ValueError``; ``memory``: raise ``MemoryError``;
* ``pid``: answer with an analysis whose only problem is ``pid <worker pid>``;
* ``copy``: analyse a copy of the message (so the result holds other bytes objects);
* ``unpicklable``: answer with an analysis that cannot be pickled.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.rules import load_rules

__all__ = ["HookedEngine", "broken_engine", "hooked_engine"]


class HookedEngine:
    def __init__(self) -> None:
        self.engine = Engine(load_rules())

    def analyse(self, data: bytes) -> Analysis:
        if not data.startswith(b"HOOK "):
            return self.engine.analyse(data)
        command, _, arg = data[5:].decode().partition(" ")
        if command == "sleep":
            Path(arg + ".tmp").write_text(str(os.getpid()))
            Path(arg + ".tmp").rename(arg)  # appears complete
            time.sleep(600)
        elif command == "burn":
            Path(arg + ".tmp").write_text(str(os.getpid()))
            Path(arg + ".tmp").rename(arg)
            end = time.monotonic() + 600
            while time.monotonic() < end:
                pass
        elif command == "hog":
            hog = bytearray(int(arg) << 20)
            del hog
        elif command == "nap":
            time.sleep(float(arg))
        elif command == "spin":
            end = time.monotonic() + float(arg)
            while time.monotonic() < end:
                pass
        elif command == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif command == "exit":
            os._exit(int(arg))
        elif command == "raise":
            raise ValueError("boom \u2603")
        elif command == "memory":
            raise MemoryError
        elif command == "pid":
            return replace(self.engine.analyse(data), problems=(f"pid {os.getpid()}",))
        elif command == "copy":
            return self.engine.analyse(bytes(bytearray(data)))
        elif command == "unpicklable":
            analysis = self.engine.analyse(data)
            broken = [cast(str, lambda: None)]
            return replace(analysis, tree=replace(analysis.tree, problems=broken))
        return self.engine.analyse(data)


def hooked_engine() -> HookedEngine:
    return HookedEngine()


def broken_engine() -> HookedEngine:
    raise RuntimeError("no engine today")
