"""The two system-call helpers the spool's writers share."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_all"]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the names created or renamed in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order with as few system calls as the kernel allows."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX on Linux
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
