"""The two system-call helpers the spool's writers share."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["claim_name", "fsync_dir", "write_all"]


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


def claim_name(directory: Path, name: str, tag: str, create: Callable[[Path], None]) -> Path:
    """``create`` the first free one of ``name``, ``<stem>-<tag>1<.rest>``, ... in
    ``directory`` and return it: ``create`` must fail with ``FileExistsError`` on a
    name taken (``O_EXCL``, ``link``), so nothing kept there is ever replaced."""
    stem, dot, rest = name.partition(".")
    for n in range(1000):
        path = directory / (name if n == 0 else f"{stem}-{tag}{n}{dot}{rest}")
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{directory}: too many items named like {name}")
