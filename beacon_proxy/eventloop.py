"""Which event loop ``serve`` runs on: asyncio's own, or uvloop when installed.

``[smtp] event_loop``: ``"auto"`` (the default) takes uvloop when it can be
imported (``pip install 'beacon-proxy[fast]'``) and asyncio's loop otherwise;
``"asyncio"`` and ``"uvloop"`` force one, and ``"uvloop"`` without uvloop
installed stops start-up.  The ``started`` log line names the loop that runs
(:func:`running_loop_name`).

    >>> factory, name = loop_factory("asyncio")
    >>> factory is None, name
    (True, 'asyncio')
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

__all__ = ["EventLoopError", "loop_factory", "running_loop_name"]

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
