#!/usr/bin/env python3
"""Relay throughput benchmark: beacon-proxy against two baselines, in one run.

    python bench/relay.py [--messages 1000] [--sessions 8]

Every phase sends the same generated ~70 KB quoted-printable HTML newsletter
with Postfix's ``smtp-source -N -F FILE -s SESSIONS -m MESSAGES`` (one
recipient per message, numbered: each message to another recipient) and
counts what arrives in a fresh ``smtp-sink``:

  (a) smtp-source -> smtp-sink                      (the machine's ceiling)
  (b) smtp-source -> aiosmtpd/aiosmtplib pass-through (bench/_passthrough.py)
      -> smtp-sink                                    (the obvious relay)
  (c) smtp-source -> beacon-proxy serve -> smtp-sink  (spool with fsync,
      per-recipient rendering, delivery workers)

A phase is timed from the start of smtp-source until smtp-sink has received
every message (for (c) beacon-proxy's /metrics must then also show every
recipient as delivered).  "relay CPU" is the relay process's utime+stime
(from /proc) spent during that window.  The goals are those of
docs (product.md, "Performance goals"): (c) >= 0.5 x (a) and >= 4 x (b).

Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink (Debian: postfix).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter import RECIPIENT, newsletter

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SENDER = "sender@example.com"
GOAL_VS_SINK = 0.5
GOAL_VS_PASSTHROUGH = 4.0


class BenchError(Exception):
    """A phase could not be run or did not complete."""


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, in seconds (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


class Sink:
    """smtp-sink on a free port; counts received messages from its -c counter output."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        self._fh = self.out.open("wb")
        self._rd = self.out.open("rb")
        self._count = 0
        self._tail = b""
        cmd = [SMTP_SINK, "-c", "-h", "sink.bench"]
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

    def close(self) -> None:
        stop_process(self.proc, grace=5)
        self._fh.close()
        self._rd.close()


@contextlib.contextmanager
def sink(workdir: Path, timeout: float) -> Iterator[Sink]:
    s = Sink(workdir)
    try:
        s.start(timeout)
        yield s
    finally:
        s.close()


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    messages: int
    accepted_s: float  # smtp-source start .. smtp-source exit (all 250s received)
    delivered_s: float  # smtp-source start .. every message in smtp-sink
    relay_cpu_s: float | None
    sink_cpu_s: float

    @property
    def rate(self) -> float:
        return self.messages / self.delivered_s


@dataclass
class Settings:
    messages: int
    sessions: int
    message_file: Path
    workdir: Path
    timeout: float
    reuse: bool
    profile: Path | None
    event_loop: str = "auto"  # beacon-proxy's [smtp] event_loop


def source_cmd(st: Settings, port: int) -> list[str]:
    # -N: a new recipient for each message ("1rcpt@...", "2rcpt@..."), as a newsletter
    # has: one recipient repeated made every copy the same copy of its campaign, which
    # the campaign memory then never learns past (a store transaction per message).
    cmd = [SMTP_SOURCE, "-N", "-s", str(st.sessions), "-m", str(st.messages),
           "-f", SENDER, "-t", RECIPIENT, "-M", "source.bench", "-F", str(st.message_file)]
    if st.reuse:
        cmd.append("-d")
    return [*cmd, f"127.0.0.1:{port}"]


def drive(st: Settings, name: str, target_port: int, snk: Sink,
          relay: subprocess.Popen[bytes] | None,
          delivered_check: Callable[[], bool] | None = None) -> Result:
    """Run smtp-source against target_port and wait until the sink has every message."""
    base = snk.received()
    relay_cpu0 = cpu_seconds(relay.pid) if relay else 0.0
    sink_cpu0 = cpu_seconds(snk.proc.pid)
    log = (st.workdir / f"source-{target_port}.out").open("wb")
    t0 = time.perf_counter()
    src = subprocess.Popen(source_cmd(st, target_port), stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
    accepted_s = 0.0
    try:
        deadline = time.monotonic() + st.timeout
        while True:
            now = time.perf_counter()
            if not accepted_s and src.poll() is not None:
                accepted_s = now - t0
                if src.returncode != 0:
                    log.close()
                    tail = (st.workdir / f"source-{target_port}.out").read_text()[-500:]
                    raise BenchError(f"{name}: smtp-source exited {src.returncode}: {tail}")
            if snk.received() - base >= st.messages:
                delivered_s = now - t0
                break
            if relay is not None and relay.poll() is not None:
                raise BenchError(f"{name}: relay exited with {relay.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: sink got {snk.received() - base} of {st.messages} "
                                 f"messages within {st.timeout:.0f} s")
            time.sleep(0.005)
        relay_cpu = cpu_seconds(relay.pid) - relay_cpu0 if relay else None
        sink_cpu = cpu_seconds(snk.proc.pid) - sink_cpu0
        if not accepted_s:
            src.wait(timeout=st.timeout)
            accepted_s = time.perf_counter() - t0
        if delivered_check is not None:
            wait_until(delivered_check, 30, f"{name}: delivered count in /metrics", relay)
    finally:
        stop_process(src, grace=2)
        log.close()
    return Result(name, st.messages, accepted_s, delivered_s, relay_cpu, sink_cpu)


def phase_direct(st: Settings) -> Result:
    with sink(st.workdir, 30) as snk:
        return drive(st, "(a) smtp-source -> smtp-sink", snk.port, snk, None)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def phase_passthrough(st: Settings) -> Result:
    with sink(st.workdir, 30) as snk:
        port = free_port()
        log = (st.workdir / "passthrough.log").open("wb")
        relay = subprocess.Popen(
            [sys.executable, str(HERE / "_passthrough.py"), "--listen-port", str(port),
             "--upstream-port", str(snk.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
        try:
            wait_until(lambda: smtp_ready(port), 30, "pass-through start", relay)
            return drive(st, "(b) aiosmtpd -> aiosmtplib", port, snk, relay)
        finally:
            stop_process(relay)
            log.close()


def metric(web_port: int, name: str, labels: str = "") -> float:
    url = f"http://127.0.0.1:{web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    pat = re.compile(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", re.M)
    m = pat.search(text)
    return float(m.group(1)) if m else 0.0


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            status: int = resp.status
            return status == 200
    except OSError:
        return False


def proxy_config(st: Settings, smtp_port: int, web_port: int, sink_port: int,
                 concurrency: int) -> Path:
    d = st.workdir / "beacon-proxy"
    d.mkdir(exist_ok=True)
    cfg = d / "bench.toml"
    cfg.write_text(f"""\
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "relay.bench"
allow_networks = ["127.0.0.0/8"]
shutdown_timeout = 5
event_loop = "{st.event_loop}"

[delivery]
upstream = "smtp://127.0.0.1:{sink_port}"
starttls = "off"
concurrency = {concurrency}
timeout = 60
retry_min = 1
retry_max = 5

[spool]
path = "{d / 'spool'}"

[store]
url = "sqlite:///{d / 'beacon-proxy.db'}"

[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"

[tokens]
secret = "bench-secret-{os.getpid()}-{time.time_ns()}"

[log]
level = "warning"
path = "{d / 'beacon-proxy.log'}"
""")
    return cfg


def phase_proxy(st: Settings, concurrency: int) -> Result:
    with sink(st.workdir, 30) as snk:
        smtp_port, web_port = free_port(), free_port()
        cfg = proxy_config(st, smtp_port, web_port, snk.port, concurrency)
        cmd = [sys.executable]
        if st.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(st.profile)]
        cmd += ["-m", "beacon_proxy", "serve", "--config", str(cfg)]
        out = (st.workdir / "beacon-proxy.stderr").open("wb")
        relay = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=child_env(), cwd=str(cfg.parent))
        try:
            wait_until(lambda: http_ok(web_port, "/healthz") and smtp_ready(smtp_port), 60,
                       "beacon-proxy start", relay, interval=0.1)
            before = metric(web_port, "beacon_proxy_deliveries_total", '{result="delivered"}')

            def all_delivered() -> bool:
                got = metric(web_port, "beacon_proxy_deliveries_total", '{result="delivered"}')
                return got - before >= st.messages

            return drive(st, "(c) beacon-proxy", smtp_port, snk, relay, all_delivered)
        finally:
            stop_process(relay, grace=30)
            out.close()
            if relay.returncode not in (0, None):
                sys.stderr.write((st.workdir / "beacon-proxy.stderr").read_text()[-2000:])


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def report(results: Sequence[Result], st: Settings, size: int, concurrency: int) -> bool:
    print(f"relay benchmark: {st.messages} messages x {size:,} bytes (QP HTML newsletter), "
          f"smtp-source -s {st.sessions}{' -d' if st.reuse else ''}, 1 rcpt/msg, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"beacon-proxy delivery concurrency {concurrency}")
    print()
    hdr = (f"{'phase':<30} {'msgs':>5} {'accept s':>9} {'deliver s':>9} {'msg/s':>8} "
           f"{'relay CPU s':>11} {'CPU ms/msg':>10} {'sink CPU s':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        cpu = f"{r.relay_cpu_s:11.2f}" if r.relay_cpu_s is not None else f"{'-':>11}"
        per = (f"{1000 * r.relay_cpu_s / r.messages:10.2f}" if r.relay_cpu_s is not None
               else f"{'-':>10}")
        print(f"{r.name:<30} {r.messages:>5} {r.accepted_s:9.2f} {r.delivered_s:9.2f} "
              f"{r.rate:8.1f} {cpu} {per} {r.sink_cpu_s:10.2f}")
    by = {r.name[:3]: r for r in results}
    ok = True
    if "(c)" in by:
        print()
        c = by["(c)"]
        for key, goal, label in (("(a)", GOAL_VS_SINK, "smtp-source -> smtp-sink"),
                                 ("(b)", GOAL_VS_PASSTHROUGH, "aiosmtpd -> aiosmtplib")):
            if key not in by:
                continue
            ratio = c.rate / by[key].rate
            passed = ratio >= goal
            ok = ok and passed
            print(f"beacon-proxy / {key} {label:<26} = {ratio:6.2f}x   "
                  f"goal >= {f'{goal:g}x':<5} {'PASS' if passed else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", "-m", type=int, default=1000, help="messages per phase")
    p.add_argument("--sessions", "-s", type=int, default=8, help="smtp-source sessions")
    p.add_argument("--concurrency", type=int, default=20,
                   help="beacon-proxy [delivery] concurrency (default 20)")
    p.add_argument("--reuse-connections", action="store_true",
                   help="smtp-source -d: several messages per connection")
    p.add_argument("--phases", default="abc", help="which phases to run (default: abc)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per phase (default 300)")
    p.add_argument("--profile", type=Path, default=None,
                   help="run beacon-proxy under cProfile and write the stats to this file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="beacon-proxy's [smtp] event_loop (default auto: uvloop if installed)")
    a = p.parse_args(argv)
    if a.messages < 1 or a.sessions < 1 or a.concurrency < 1:
        p.error("--messages, --sessions and --concurrency must be >= 1")
    if set(a.phases) - set("abc") or not a.phases:
        p.error("--phases: letters from 'abc'")
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            print(f"{tool} not found (apt-get install postfix)", file=sys.stderr)
            return 2

    workdir = Path(tempfile.mkdtemp(prefix="beacon-bench-"))
    try:
        msg = newsletter()
        msg_file = workdir / "newsletter.eml"
        msg_file.write_bytes(msg)
        size = len(msg.replace(b"\n", b"\r\n"))  # as sent on the wire
        st = Settings(a.messages, a.sessions, msg_file, workdir, a.timeout,
                      a.reuse_connections, a.profile.resolve() if a.profile else None,
                      a.event_loop)
        phases: dict[str, Callable[[], Result]] = {
            "a": lambda: phase_direct(st),
            "b": lambda: phase_passthrough(st),
            "c": lambda: phase_proxy(st, a.concurrency),
        }
        results: list[Result] = []
        for key in sorted(set(a.phases)):
            print(f"running phase ({key}) ...", file=sys.stderr, flush=True)
            results.append(phases[key]())
        ok = report(results, st, size, a.concurrency)
    except BenchError as exc:
        print(f"benchmark failed: {exc} (logs in {workdir})", file=sys.stderr)
        a.keep = True
        return 2
    finally:
        if a.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
