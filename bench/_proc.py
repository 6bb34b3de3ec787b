"""Process helpers shared by the relay benchmarks: ports, waiting, stopping, /proc accounting.

CPU and memory are read from ``/proc`` for a whole process *tree* (a relay
and every process below it: analysis workers, a forkserver, several worker
processes, Postfix's daemons under its ``master``):

* :func:`tree_cpu` is the sum over the live tree of ``utime + stime +
  cutime + cstime``.  A child that exits is reaped by its parent, which adds
  the child's whole CPU (its own and its reaped children's) to its own
  ``cutime``/``cstime``; so the sum counts every process of the tree once,
  live or gone, and the difference of two samples is the CPU the tree spent
  in between.  (Only a process re-parented out of the tree, a double fork,
  escapes; the relays measured here do not do that below their root.)
  :func:`tree_cpu_split` gives the same as (user, system).
* :func:`tree_memory` is the sum of ``VmRSS`` (``/proc/<pid>/status``) and of
  ``Pss`` (``/proc/<pid>/smaps_rollup``) over the live tree.  RSS counts a
  page shared by two processes (a forkserver's children) twice, PSS splits it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "BenchError",
    "cpu_seconds",
    "descendants",
    "free_port",
    "machine_busy",
    "proc_alive",
    "proc_start_time",
    "smtp_ready",
    "stop_process",
    "tree_cpu",
    "tree_cpu_split",
    "tree_memory",
    "tree_runqueue_wait",
    "wait_until",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
_MAX_TREE = 2000  # processes; a bound on the walk, far above any relay's tree


class BenchError(Exception):
    """A phase could not be run or did not complete."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, in seconds (0.0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_start_time(pid: int) -> int | None:
    """The process's start time (field 22, clock ticks since boot): tells a reused pid apart."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def proc_alive(pid: int, start_time: int | None = None) -> bool:
    """True while pid runs (not a zombie) and, if given, is still the process started then."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    seen: set[int] = set()
    while todo and len(found) < _MAX_TREE:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in task.read_text().split()]
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds the tree under root has used so far, exited children included."""
    return sum(tree_cpu_split(root))


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the tree under root so far, exited children included."""
    user = system = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime: fields 14-17.
            utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
            user += utime + cutime
            system += stime + cstime
    return user / CLK_TCK, system / CLK_TCK


def tree_runqueue_wait(root: int) -> float:
    """Seconds the live threads of the tree under root have spent runnable but waiting
    for a CPU (the second field of /proc/<pid>/task/<tid>/schedstat; 0 without it).

    Why: a relay can be short of CPU while its own CPU time leaves cores "free" on
    paper: the sink, the source and anything else on the machine take them.  Its
    event loops then wait in the kernel's run queue, which looks like idle waiting
    from inside (issue 12's "not CPU-bound" relay was this)."""
    waited = 0
    for pid in descendants(root):
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                waited += int(stat.read_text().split()[1])
    return waited / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, every core summed
    (/proc/stat; idle and iowait are not busy): the difference of two readings is
    how much of the cores anything at all used in between."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already counted in user and nice
    idle = fields[3] + fields[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _status_kib(pid: int, key: str, name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def tree_memory(root: int) -> tuple[int, int]:
    """(RSS, PSS) of the live tree under root, in KiB."""
    pids = descendants(root)
    rss = sum(_status_kib(p, "VmRSS:", "status") for p in pids)
    pss = sum(_status_kib(p, "Pss:", "smaps_rollup") for p in pids)
    return rss, pss


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen[bytes] | None = None, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def smtp_ready(port: int) -> bool:
    """True once something on 127.0.0.1:port answers with an SMTP 220 greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False
