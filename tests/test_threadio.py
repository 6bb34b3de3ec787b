from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from beacon_proxy.threadio import acquired, open_binary, temp_file


async def test_a_cancelled_caller_releases_what_the_thread_made() -> None:
    started, go_on = threading.Event(), threading.Event()
    released: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def make() -> str:
        started.set()
        go_on.wait(60)
        return "the file"

    task = asyncio.ensure_future(acquired(make, released.set_result))
    await asyncio.to_thread(started.wait, 60)  # the thread is inside make()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not released.done()
    go_on.set()
    assert await asyncio.wait_for(released, 60) == "the file"


async def test_a_failed_make_releases_nothing_and_raises() -> None:
    def make() -> str:
        raise OSError("no space")

    with pytest.raises(OSError, match="no space"):
        await acquired(make, lambda _: pytest.fail("nothing to release"))


async def test_open_binary_and_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n")
    with await open_binary(path) as fh:
        assert fh.read() == b"a,b\n"
    fd, made = await temp_file("beacon-proxy-test-", ".csv")
    try:
        assert made.exists() and made.name.startswith("beacon-proxy-test-")
        os.write(fd, b"x")
    finally:
        os.close(fd)
        made.unlink()
