"""A temporary Postfix instance as a plain relay hop, for ``bench/relay.py``.

Everything lives under one directory of the benchmark's temp dir: its own
``config_directory`` (``etc/``: a main.cf written here, the system's
master.cf copied), ``queue_directory`` (``queue/``), ``data_directory``
(``data/``) and log (``maillog``, through postlogd).  The system's Postfix
(``/etc/postfix``, ``/var/spool/postfix``) is neither read for settings nor
touched: ``postfix -c DIR start`` runs as root, which may name any
configuration directory (``alternate_config_directories`` only restricts the
set-gid commands ``postdrop`` and ``postqueue``, which the hop never runs).

The instance is a relay hop as a mail team runs it, defaults otherwise:

* smtpd on ``127.0.0.1:<free port>`` only (``inet_interfaces = 127.0.0.1``),
  relaying for ``mynetworks = 127.0.0.0/8``;
* everything to ``relayhost = [127.0.0.1]:<sink port>``, no TLS either way;
* no local delivery (``mydestination`` empty, ``local_transport`` an error);
* the queue fsynced as always; process limits, concurrency
  (``default_destination_concurrency_limit = 20``), connection caching and
  ``smtp_destination_recipient_limit`` (50 recipients per transaction)
  left at their defaults;
* no chroot (a chroot would need copies of /etc files under the queue).

:class:`PostfixHop` is a context manager: ``postfix stop`` on the way out
(also on errors and Ctrl-C), then SIGKILL for any of its processes still
running, then the directory is removed with the benchmark's temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from _proc import BenchError, descendants, free_port, proc_alive, proc_start_time, smtp_ready

__all__ = ["POSTFIX", "PostfixHop", "postfix_available"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")


def postfix_available() -> str | None:
    """None if the Postfix hop can run here, else why not."""
    if not os.access(POSTFIX, os.X_OK):
        return f"{POSTFIX} not found (apt-get install postfix)"
    if os.geteuid() != 0:
        return "the Postfix hop needs root (postfix start)"
    if not SYSTEM_MASTER_CF.is_file():
        return f"{SYSTEM_MASTER_CF} not found"
    return None


def master_cf(system: str, port: int) -> str:
    """The system's master.cf with smtpd on ``port`` and no service chrooted."""
    out: list[str] = []
    for line in system.splitlines():
        fields = line.split()
        if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
            if fields[:2] == ["smtp", "inet"]:
                fields[0] = str(port)
            fields[4] = "n"  # chroot
            line = " ".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


def main_cf(base: Path, sink_port: int) -> str:
    return f"""\
# beacon-proxy benchmark: a temporary Postfix relay hop (bench/_postfix.py)
compatibility_level = 3.6
queue_directory = {base / 'queue'}
data_directory = {base / 'data'}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-hop.bench
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery on the benchmark hop
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = {base}
maillog_file = {base / 'maillog'}
"""


class PostfixHop:
    """A Postfix instance of its own under ``base``, relaying to 127.0.0.1:sink_port."""

    def __init__(self, base: Path, sink_port: int, start_timeout: float = 60) -> None:
        self.base = base
        self.etc = base / "etc"
        self.port = free_port()
        self.sink_port = sink_port
        self.start_timeout = start_timeout
        self.master_pid: int | None = None

    def _postfix(self, action: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run([POSTFIX, "-c", str(self.etc), action], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                              check=False)

    def log_tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "maillog").read_text(errors="replace")[-chars:]
        return ""

    def __enter__(self) -> PostfixHop:
        why = postfix_available()
        if why is not None:
            raise BenchError(why)
        self.etc.mkdir(parents=True)
        (self.base / "queue").mkdir()
        # Postfix's daemons run as the postfix user: the directories above the queue
        # must be searchable by it (the caller makes its temp dir so, 0711).
        self.base.chmod(0o755)
        for d in self.base.parents:
            if not d.stat().st_mode & 0o001:
                raise BenchError(f"{d}: not searchable by the postfix user (chmod o+x)")
        (self.etc / "main.cf").write_text(main_cf(self.base, self.sink_port))
        (self.etc / "master.cf").write_text(master_cf(SYSTEM_MASTER_CF.read_text(), self.port))
        try:
            done = self._postfix("start")
            if done.returncode != 0:
                raise BenchError(f"postfix start failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()[-500:]} "
                                 f"{self.log_tail(500)}")
            pid_file = self.base / "queue" / "pid" / "master.pid"
            deadline = time.monotonic() + self.start_timeout
            while not (pid_file.exists() and smtp_ready(self.port)):
                if time.monotonic() > deadline:
                    raise BenchError(f"postfix hop not ready within {self.start_timeout:.0f} s: "
                                     f"{self.log_tail(500)}")
                time.sleep(0.05)
            self.master_pid = int(pid_file.read_text().split()[0])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """postfix stop; then SIGKILL whatever of the instance still runs (bounded waits)."""
        procs: list[tuple[int, int | None]] = []
        pid_file = self.base / "queue" / "pid" / "master.pid"
        if self.master_pid is None and pid_file.exists():
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.master_pid = int(pid_file.read_text().split()[0])
        if self.master_pid is not None:
            procs = [(p, proc_start_time(p)) for p in descendants(self.master_pid)]
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._postfix("stop", timeout=30)
        # master exits at once and its children soon after; a child that outlives it is
        # re-parented and no longer in the tree, so the pids were taken before the stop.
        deadline = time.monotonic() + 10
        while any(proc_alive(p, t) for p, t in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p, t in procs:
            if proc_alive(p, t):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
        self.master_pid = None
