"""smtp-sink for the relay benchmarks: a fresh one per phase, counting what it receives."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from _proc import free_port, smtp_ready, stop_process, wait_until

__all__ = ["SMTP_SINK", "Sink", "sink"]

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class Sink:
    """smtp-sink on a free port; counts messages from its -c counters, recipients from -D.

    With ``dump`` smtp-sink appends every transaction to a file (-D); the
    recipients are its ``X-Rcpt-Args:`` lines, the signatures its
    ``DKIM-Signature:`` lines (the benchmark's message has neither in its
    body).  smtp-sink writes a transaction when it ends.
    """

    def __init__(self, workdir: Path, dump: bool = False) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        self.dump: Path | None = None
        self._fh = self.out.open("wb")
        self._rd = self.out.open("rb")
        self._count = 0
        self._tail = b""
        self._rcpts = self._transactions = self._signed = 0
        self._dump_offset = 0
        self._dump_tail = b""
        cmd = [SMTP_SINK, "-c", "-h", "sink.bench"]
        if dump:
            ddir = workdir / f"sink-{self.port}"
            ddir.mkdir()
            self.dump = ddir / "dump"
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.chown(ddir, nobody.pw_uid, nobody.pw_gid)
            cmd += ["-D", str(self.dump)]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        cmd += [f"127.0.0.1:{self.port}", "1024"]
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            cmd, stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self, timeout: float) -> None:
        wait_until(lambda: smtp_ready(self.port), timeout, "smtp-sink start", self.proc)
        # The probe connection above shows up in the counters but not as a message.

    def received(self) -> int:
        """Messages received so far (reads only the counter output not yet seen)."""
        chunk = self._rd.read()
        if chunk:
            data = self._tail + chunk
            found = re.findall(rb"mesg=(\d+)", data)
            if found:
                self._count = int(found[-1])
            self._tail = data[-64:]
        return self._count

    def _read_dump(self) -> None:
        if self.dump is None:
            return
        try:
            with self.dump.open("rb") as fh:
                fh.seek(self._dump_offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._dump_offset += len(chunk)
        data = self._dump_tail + chunk
        cut = data.rfind(b"\n") + 1
        self._dump_tail = data[cut:]
        lines = b"\n" + data[:cut]  # every complete line, each after a "\n"
        self._rcpts += lines.count(b"\nX-Rcpt-Args: ")
        self._transactions += lines.count(b"\nX-Client-Addr: ")
        self._signed += lines.count(b"\nDKIM-Signature:")

    def recipients(self) -> int:
        """Recipients received so far (with ``dump``)."""
        self._read_dump()
        return self._rcpts

    def transactions(self) -> int:
        self._read_dump()
        return self._transactions

    def signed(self) -> int:
        self._read_dump()
        return self._signed

    def close(self) -> None:
        stop_process(self.proc, grace=5)
        self._fh.close()
        self._rd.close()


@contextlib.contextmanager
def sink(workdir: Path, timeout: float, dump: bool = False) -> Iterator[Sink]:
    s = Sink(workdir, dump)
    try:
        s.start(timeout)
        yield s
    finally:
        s.close()
