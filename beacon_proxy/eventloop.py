"""Which event loop ``serve`` runs on: asyncio's own, or uvloop when installed.

``[smtp] event_loop``: ``"auto"`` (the default) takes uvloop when it can be
imported (``pip install 'beacon-proxy[fast]'``) and asyncio's loop otherwise;
``"asyncio"`` and ``"uvloop"`` force one, and ``"uvloop"`` without uvloop
installed stops start-up.  The ``started`` log line names the loop that runs
(:func:`running_loop_name`).

Whatever the loop, every session of a process waits while a callback holds it (a long
computation on the loop, a wait for the GIL held by another thread, a machine short of
CPU).  :class:`LagMonitor` makes that visible: a timer due every
:data:`LAG_INTERVAL` seconds, each run's lateness observed
(``beacon_proxy_event_loop_lag_seconds``, every process of the relay).

    >>> factory, name = loop_factory("asyncio")
    >>> factory is None, name
    (True, 'asyncio')
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

__all__ = ["LAG_INTERVAL", "EventLoopError", "LagMonitor", "loop_factory", "running_loop_name"]

#: Seconds between two runs of :class:`LagMonitor`'s timer (4 observations a second: a
#: few microseconds of the loop's time).
LAG_INTERVAL = 0.25

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopError(RuntimeError):
    """The configured event loop cannot be used."""


def loop_factory(choice: Literal["auto", "asyncio", "uvloop"] | str
                 ) -> tuple[LoopFactory | None, str]:
    """``(factory for asyncio.Runner, or None for asyncio's loop; its name)``."""
    if choice == "asyncio":
        return None, "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise EventLoopError("[smtp] event_loop is \"uvloop\" but uvloop is not installed "
                                 "(pip install 'beacon-proxy[fast]')") from None
        return None, "asyncio"
    factory: LoopFactory = uvloop.new_event_loop
    return factory, f"uvloop {uvloop.__version__}"


def running_loop_name() -> str:
    """``"asyncio"`` or ``"uvloop <version>"``: the loop this coroutine runs on."""
    loop = asyncio.get_running_loop()
    if type(loop).__module__.split(".")[0] == "uvloop":
        uvloop = importlib.import_module("uvloop")
        return f"uvloop {uvloop.__version__}"
    return "asyncio"


class LagMonitor:
    """How late the running event loop runs what is due: a timer every ``interval``
    seconds, and at each run ``observe(seconds late)`` (0 when on time; the loop's own
    clock, ``loop.time()``).  A loop held for 2 s by one callback shows one observation
    of about 2 s; one that keeps up shows milliseconds.

    >>> async def held() -> list[float]:
    ...     seen: list[float] = []
    ...     monitor = LagMonitor(seen.append, interval=0.01)
    ...     monitor.start()
    ...     import time; time.sleep(0.1)  # a callback that holds the loop
    ...     await asyncio.sleep(0.05)
    ...     monitor.stop()
    ...     return seen
    >>> max(asyncio.run(held())) >= 0.05
    True
    """

    __slots__ = ("_due", "_handle", "_loop", "interval", "observe")

    def __init__(self, observe: Callable[[float], None], interval: float = LAG_INTERVAL) -> None:
        self.observe = observe
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start on the running loop (again after :meth:`stop`; a second start is a no-op)."""
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._next()

    def stop(self) -> None:
        """No more observations."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _next(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self.observe(max(0.0, self._loop.time() - self._due))
        self._next()
