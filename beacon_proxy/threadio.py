"""Open files in a thread without losing them to a cancellation.

``await asyncio.to_thread(path.open)`` leaks the file when the awaiting task is
cancelled meanwhile (a client that hangs up mid-upload, an import job stopped
with the relay): the thread still opens it, and nobody is left to close it (a
``ResourceWarning``, an open descriptor, a temporary file never removed).
:func:`acquired` runs the opening in a thread and, when its caller is
cancelled first, hands the result to ``release`` as soon as it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

__all__ = ["acquired", "open_binary", "temp_file"]

T = TypeVar("T")


async def acquired(make: Callable[[], T], release: Callable[[T], None]) -> T:
    """``make()`` in a thread; if the caller is cancelled before it returns, its result
    is ``release``-d when it comes (and the cancellation goes on)."""
    job = asyncio.ensure_future(asyncio.to_thread(make))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        def tidy(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                release(done.result())

        job.add_done_callback(tidy)
        raise


async def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, in a thread (closed if the caller is cancelled)."""
    return await acquired(lambda: cast(BinaryIO, path.open("rb")), lambda fh: fh.close())


def _discard(made: tuple[int, str]) -> None:
    os.close(made[0])
    with contextlib.suppress(OSError):
        os.unlink(made[1])


async def temp_file(prefix: str, suffix: str) -> tuple[int, Path]:
    """A new temporary file (``mkstemp``), in a thread: its descriptor and path (closed
    and removed if the caller is cancelled)."""
    fd, name = await acquired(lambda: tempfile.mkstemp(prefix=prefix, suffix=suffix), _discard)
    return fd, Path(name)
