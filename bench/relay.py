#!/usr/bin/env python3
"""Relay throughput benchmark: beacon-proxy against three baselines, in one run.

    python bench/relay.py [--messages 1000] [--sessions 8] [--phases a,b,postfix,c,...]

Every phase sends the same generated ~70 KB quoted-printable HTML newsletter
with Postfix's ``smtp-source -N -F FILE -s SESSIONS -m MESSAGES`` and counts
what arrives in a fresh ``smtp-sink``.  Phases (``--phases``, comma-separated;
default: all but ``soak``; ``all``: every phase):

  a             smtp-source -> smtp-sink                 (the machine's ceiling)
  b             smtp-source -> aiosmtpd/aiosmtplib pass-through -> smtp-sink
                                                          (bench/_passthrough.py)
  postfix       smtp-source -> Postfix 3 relay hop -> smtp-sink  (a temporary
                instance of its own, fsynced queue, defaults: bench/_postfix.py)
  c             smtp-source -> beacon-proxy serve -> smtp-sink, DKIM off
  c-dkim        the same with DKIM on (an RSA-2048 key made for the run signs
                every copy: [dkim] domain = the newsletter's From domain)
  a-rcpt ... c-dkim-rcpt
                the five above with ``--recipients`` (1000) recipients per
                message (smtp-source -r), ``--rcpt-messages`` (1) messages: the
                relay delivers each recipient's own copy, the others pass one
                transaction on (Postfix: 50 recipients per transaction, its
                default).  smtp-sink dumps what it receives (-D) and the phase
                counts the recipients (X-Rcpt-Args) and DKIM signatures in it.
  soak          beacon-proxy (DKIM on unless --soak-dkim off) at a fixed rate
                for --soak-seconds (default 600): --soak-rate, or
                --soak-fraction (0.8) of the rate c-dkim (c) measured in this
                run; accept-to-deliver latency per message, RSS of the relay
                every 10 s; the sender has --soak-drain (120) s after the
                schedule to finish (bench/_relaysoak.py, bench/_smtpload.py,
                bench/_capture.py).

``--granted-share F`` (default 0: every recipient refused, as no consent is
recorded) seeds a share F of the numbered recipients (evenly spread) as
granted into each beacon-proxy's fresh store before it starts (``beacon-proxy
consent import``): their copies carry open-pixel tokens and plan their footer
afresh, the dearer copy.  The phase then checks /metrics: exactly that many
copies ``rewritten``.

A phase is timed from the start of smtp-source until smtp-sink has every
message (and recipient); for beacon-proxy its /metrics must then also show
every recipient as delivered.  "relay CPU" is utime+stime of the relay's
whole process tree (analysis workers, Postfix's daemons, exited children via
cutime/cstime) spent in that window; "RSS end" is the tree's RSS summed over
its processes (PSS beside it) once everything was delivered; "sys %" the
kernel's share of the relay CPU; "sink CPU s" and "source CPU s" what
smtp-sink and smtp-source spent (they share the relay's cores); "busy %" how
much of every core the whole machine used in the window (anything: the relay,
the sink, the source, other work), "other %" the part of it that none of the
three used (phase a's relay is none; the source's CPU is counted once it exited,
so a phase that ends before it does understates it), "runq ms/msg" how long the relay's threads
were runnable but waited for a CPU, per message (/proc schedstat): a busy
machine and a long run-queue wait mean the rate is the machine's CPU, however
much of it the relay itself used.  Below the
goals, two lines without a goal: the CPU per message each rate goal leaves
the relay on this machine's cores once the sink and the source have theirs,
and the many-recipient rate beside phase a's (one transaction per recipient
is the most smtp-sink takes in).  The goals are
issue 12's: beacon-proxy >= 1.0 x the Postfix hop, >= 0.5 x smtp-source ->
smtp-sink, >= 4 x the pass-through (for c and c-dkim, and with many
recipients in recipients/s); the soak: the rate held, p99 accept-to-deliver
< 1 s, RSS flat, every message accepted, delivered (and DKIM-signed).

``--rounds N`` runs the phases N times, alternating (a b c, a b c, ...: a VM's
neighbours slow every phase of a round alike, not one phase of every round);
the table shows every run, the goals are judged on each phase's median run (the
lower of the two middle ones for an even N), each ratio followed by the ratios
of the single rounds.  Shared VMs drift by 20-30 % from one minute to the next:
one round can put a phase on either side of a goal.
Exit status: 0 every goal met, 1 a goal missed, 2 the benchmark failed.

Needs /usr/sbin/smtp-source and /usr/sbin/smtp-sink (Debian: postfix); the
Postfix phases need /usr/sbin/postfix and root (skipped otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from _beacon import Proxy, child_env, dkim_key, http_ok, metric, serve
from _postfix import PostfixHop, postfix_available
from _proc import (
    CLK_TCK,
    BenchError,
    cpu_seconds,
    free_port,
    machine_busy,
    smtp_ready,
    stop_process,
    tree_cpu_split,
    tree_memory,
    tree_runqueue_wait,
    wait_until,
)
from _relaysoak import (
    CaptureLog,
    Messages,
    SoakSpec,
    add_soak_options,
    report_soak,
    run_soak,
)
from _sink import SMTP_SINK, Sink, sink
from newsletter import RECIPIENT, newsletter

__all__ = [
    "CLK_TCK",
    "DEFAULT_PHASES",
    "PHASES",
    "SMTP_SINK",
    "SMTP_SOURCE",
    "BenchError",
    "Result",
    "child_env",
    "cpu_seconds",
    "free_port",
    "http_ok",
    "main",
    "metric",
    "parse_phases",
    "sink",
    "smtp_ready",
    "stop_process",
    "wait_until",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SENDER = "sender@example.com"
DKIM_DOMAIN = "shop.example"  # the newsletter's From domain
DKIM_SELECTOR = "bench"
GOALS = (("postfix", 1.0, "Postfix hop"), ("a", 0.5, "smtp-source -> smtp-sink"),
         ("b", 4.0, "aiosmtpd -> aiosmtplib"))

# name -> (label, kind, many recipients, DKIM)
PHASES: dict[str, tuple[str, str, bool, bool]] = {
    "a": ("smtp-source -> smtp-sink", "direct", False, False),
    "b": ("aiosmtpd -> aiosmtplib", "passthrough", False, False),
    "postfix": ("Postfix hop", "postfix", False, False),
    "c": ("beacon-proxy", "proxy", False, False),
    "c-1w": ("beacon-proxy, one process", "proxy", False, False),
    "c-dkim": ("beacon-proxy, DKIM on", "proxy", False, True),
    "a-rcpt": ("smtp-source -> smtp-sink", "direct", True, False),
    "b-rcpt": ("aiosmtpd -> aiosmtplib", "passthrough", True, False),
    "postfix-rcpt": ("Postfix hop", "postfix", True, False),
    "c-rcpt": ("beacon-proxy", "proxy", True, False),
    "c-dkim-rcpt": ("beacon-proxy, DKIM on", "proxy", True, True),
    "soak": ("beacon-proxy soak", "soak", False, True),
}
DEFAULT_PHASES = [p for p in PHASES if p != "soak"]


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    label: str
    messages: int
    rcpts_per_msg: int
    accepted_s: float  # smtp-source start .. smtp-source exit (all 250s received)
    delivered_s: float  # smtp-source start .. every message (recipient) in smtp-sink
    relay_cpu_s: float | None  # the relay's process tree
    rss_kib: int | None  # the relay's process tree, summed, at the end
    pss_kib: int | None
    sink_cpu_s: float
    relay_sys_s: float | None = None  # the system (kernel) part of relay_cpu_s
    source_cpu_s: float | None = None  # smtp-source's, from its rusage once it exited
    transactions: int | None = None  # what smtp-sink received (dump phases)
    signed: int | None = None  # DKIM-Signature fields at smtp-sink (dump phases)
    busy_share: float | None = None  # of every core, by anything, while the phase ran
    cores_s: float | None = None  # every core's seconds in the phase's window
    relay_runq_s: float | None = None  # the relay's threads runnable, waiting for a CPU
    round: int = 0  # with --rounds: which run of the phase (1..N); 0: the only one

    @property
    def recipients(self) -> int:
        return self.messages * self.rcpts_per_msg

    @property
    def rate(self) -> float:
        """Recipients (= messages at one recipient each) delivered per second."""
        return self.recipients / self.delivered_s


@dataclass
class Settings:
    messages: int
    sessions: int
    message_file: Path
    workdir: Path
    timeout: float
    reuse: bool
    profile: Path | None
    concurrency: int = 20
    recipients: int = 1000
    rcpt_messages: int = 1
    dkim_key: Path | None = None
    event_loop: str = "auto"  # beacon-proxy's [smtp] event_loop
    workers: str = "auto"  # beacon-proxy's [smtp] workers (phase c-1w: always 1)
    granted_share: float = 0.0  # of the numbered recipients, seeded granted (--granted-share)
    log_level: str = "warning"  # beacon-proxy's [log] level (--log-level)
    lanes: int | None = None  # beacon-proxy's [delivery] lanes (None: its default)
    analysis_workers: int | None = None  # beacon-proxy's [policy] analysis_workers
    in_flow_delay: float | None = None  # beacon-proxy's [smtp] in_flow_delay (None: its default)


def granted_numbers(total: int, share: float) -> list[int]:
    """Which of smtp-source -N's recipients 1..total are granted: ``share`` of them,
    evenly spread (n is granted when floor(n * share) steps up at n).

    >>> granted_numbers(10, 0.5), granted_numbers(4, 1.0), granted_numbers(4, 0.0)
    ([2, 4, 6, 8, 10], [1, 2, 3, 4], [])
    """
    return [n for n in range(1, total + 1) if int(n * share) > int((n - 1) * share)]


def seed_granted(cfg: Path, numbers: Sequence[int]) -> None:
    """``beacon-proxy consent import`` of ``<n>rcpt@...`` as granted, for each n
    (smtp-source -N numbers every recipient across a run: 1, 2, ... in order)."""
    csv_file = cfg.parent / "granted.csv"
    local, _, domain = RECIPIENT.partition("@")
    with csv_file.open("w", encoding="ascii") as fh:
        fh.write("address,beacons,source\n")
        fh.writelines(f"{n}{local}@{domain},granted,bench\n" for n in numbers)
    cmd = [sys.executable, "-m", "beacon_proxy", "consent", "import", str(csv_file),
           "--config", str(cfg), "--create-store"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env(),
                          cwd=str(cfg.parent), check=False)
    if done.returncode != 0:
        raise BenchError(f"consent import failed: {(done.stderr or done.stdout).strip()[-500:]}")


def source_cmd(st: Settings, port: int, messages: int, rcpts: int) -> list[str]:
    # -N: a new recipient for each message ("1rcpt@...", "2rcpt@..."), as a newsletter
    # has: one recipient repeated made every copy the same copy of its campaign, which
    # the campaign memory then never learns past (a store transaction per message).
    # -r N: N recipients per message, numbered too.
    sessions = min(st.sessions, messages)
    cmd = [SMTP_SOURCE, "-N", "-s", str(sessions), "-m", str(messages),
           "-f", SENDER, "-t", RECIPIENT, "-M", "source.bench", "-F", str(st.message_file)]
    if rcpts > 1:
        cmd += ["-r", str(rcpts)]
    if st.reuse:
        cmd.append("-d")
    return [*cmd, f"127.0.0.1:{port}"]


def drive(st: Settings, name: str, target_port: int, snk: Sink, relay_root: int | None,
          relay_proc: subprocess.Popen[bytes] | None = None,
          delivered_check: Callable[[], bool] | None = None) -> Result:
    """Run smtp-source against target_port and wait until the sink has everything."""
    label, _, many, _ = PHASES[name]
    messages, rcpts = (st.rcpt_messages, st.recipients) if many else (st.messages, 1)
    want = messages * rcpts

    # beacon-proxy sends each recipient a transaction of their own: smtp-sink's message
    # counter is its progress, and the dump (73 MB per 1000 copies) is read once, after
    # the clock stops, to check it.  Reading it while the clock runs took CPU from the
    # relay on two cores.  The others pass many recipients per transaction: the dump.
    one_per_txn = many and PHASES[name][1] == "proxy"

    def arrived() -> int:
        return (snk.recipients() if snk.dump is not None and not one_per_txn
                else snk.received())

    relay_cpu0 = tree_cpu_split(relay_root) if relay_root else (0.0, 0.0)
    runq0 = tree_runqueue_wait(relay_root) if relay_root else 0.0
    busy0 = machine_busy()
    sink_cpu0 = cpu_seconds(snk.proc.pid)
    log_path = st.workdir / f"source-{name}.out"
    log = log_path.open("wb")
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    src = subprocess.Popen(source_cmd(st, target_port, messages, rcpts), stdout=log,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    accepted_s = 0.0
    try:
        deadline = time.monotonic() + st.timeout
        while True:
            now = time.perf_counter()
            if not accepted_s and src.poll() is not None:
                accepted_s = now - t0
                if src.returncode != 0:
                    log.close()
                    raise BenchError(f"{name}: smtp-source exited {src.returncode}: "
                                     f"{log_path.read_text()[-500:]}")
            if arrived() >= want:
                delivered_s = now - t0
                break
            if relay_proc is not None and relay_proc.poll() is not None:
                raise BenchError(f"{name}: relay exited with {relay_proc.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: sink got {arrived()} of {want} "
                                 f"{'recipients' if many else 'messages'} "
                                 f"within {st.timeout:.0f} s")
            time.sleep(0.005)
        relay_cpu1 = tree_cpu_split(relay_root) if relay_root else None
        runq = tree_runqueue_wait(relay_root) - runq0 if relay_root else None
        busy1 = machine_busy()
        sink_cpu = cpu_seconds(snk.proc.pid) - sink_cpu0
        relay_cpu = relay_sys = None
        if relay_cpu1 is not None:
            relay_sys = relay_cpu1[1] - relay_cpu0[1]
            relay_cpu = relay_cpu1[0] - relay_cpu0[0] + relay_sys
        if one_per_txn:
            wait_until(lambda: snk.recipients() >= want, 30,
                       f"{name}: {want} recipients in smtp-sink's dump", relay_proc)
        if not accepted_s:
            src.wait(timeout=st.timeout)
            accepted_s = time.perf_counter() - t0
        # smtp-source is the only child reaped since children0 (relays, sinks and Postfix
        # outlive the phase's clock; their start-up commands ended before it).
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        source_cpu = (children1.ru_utime - children0.ru_utime
                      + children1.ru_stime - children0.ru_stime)
        if delivered_check is not None:
            wait_until(delivered_check, 30, f"{name}: delivered count in /metrics", relay_proc)
        rss, pss = tree_memory(relay_root) if relay_root else (None, None)
    finally:
        stop_process(src, grace=2)
        log.close()
    res = Result(name, label, messages, rcpts, accepted_s, delivered_s, relay_cpu, rss, pss,
                 sink_cpu, relay_sys, source_cpu)
    res.relay_runq_s = runq
    if busy1[1] > busy0[1]:
        res.busy_share = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
        res.cores_s = busy1[1] - busy0[1]
    if snk.dump is not None:
        res.transactions, res.signed = snk.transactions(), snk.signed()
    return res


def phase_direct(st: Settings, name: str) -> Result:
    with sink(st.workdir, 30, dump=PHASES[name][2]) as snk:
        return drive(st, name, snk.port, snk, None)


def phase_passthrough(st: Settings, name: str) -> Result:
    with sink(st.workdir, 30, dump=PHASES[name][2]) as snk:
        port = free_port()
        log = (st.workdir / f"passthrough-{name}.log").open("wb")
        relay = subprocess.Popen(
            [sys.executable, str(HERE / "_passthrough.py"), "--listen-port", str(port),
             "--upstream-port", str(snk.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
        try:
            wait_until(lambda: smtp_ready(port), 30, "pass-through start", relay)
            return drive(st, name, port, snk, relay.pid, relay)
        finally:
            stop_process(relay)
            log.close()


def phase_postfix(st: Settings, name: str) -> Result:
    with sink(st.workdir, 30, dump=PHASES[name][2]) as snk, \
            PostfixHop(st.workdir / f"postfix-{name}", snk.port) as hop:
        assert hop.master_pid is not None
        try:
            return drive(st, name, hop.port, snk, hop.master_pid)
        except BenchError as exc:
            raise BenchError(f"{exc}; Postfix log: {hop.log_tail(800)}") from exc


def proxy_config(st: Settings, tag: str, smtp_port: int, web_port: int, upstream_port: int,
                 dkim: bool) -> Path:
    workers = "1" if tag == "c-1w" else st.workers
    workers_value = workers if workers.isdigit() else f'"{workers}"'
    d = st.workdir / f"beacon-proxy-{tag}"
    d.mkdir()
    lanes = "" if st.lanes is None else f"lanes = {st.lanes}\n"
    in_flow = "" if st.in_flow_delay is None else f"in_flow_delay = {st.in_flow_delay}\n"
    policy = ("" if st.analysis_workers is None
              else f"\n[policy]\nanalysis_workers = {st.analysis_workers}\n")
    dkim_section = ""
    if dkim:
        if st.dkim_key is None:
            st.dkim_key = dkim_key(st.workdir)
        dkim_section = (f'\n[dkim]\ndomain = "{DKIM_DOMAIN}"\nselector = "{DKIM_SELECTOR}"\n'
                        f'private_key_file = "{st.dkim_key}"\n')
    cfg = d / "bench.toml"
    cfg.write_text(f"""\
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "relay.bench"
allow_networks = ["127.0.0.0/8"]
shutdown_timeout = 5
max_recipients = {max(1000, st.recipients)}
event_loop = "{st.event_loop}"
workers = {workers_value}
{in_flow}
[delivery]
upstream = "smtp://127.0.0.1:{upstream_port}"
starttls = "off"
concurrency = {st.concurrency}
timeout = 60
retry_min = 1
retry_max = 5
{lanes}
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
level = "{st.log_level}"
path = "{d / 'beacon-proxy.log'}"
{policy}{dkim_section}""")
    return cfg


@contextlib.contextmanager
def beacon_proxy(st: Settings, tag: str, upstream_port: int, dkim: bool,
                 profile: Path | None = None, granted: Sequence[int] = ()) -> Iterator[Proxy]:
    """``beacon-proxy serve`` with a fresh spool and store (``granted``: the recipient
    numbers seeded granted in it), relaying to upstream_port."""
    smtp_port, web_port = free_port(), free_port()
    cfg = proxy_config(st, tag, smtp_port, web_port, upstream_port, dkim)
    if granted:
        seed_granted(cfg, granted)
    with serve(cfg, smtp_port, web_port, profile) as bp:
        yield bp


def phase_proxy(st: Settings, name: str) -> Result:
    _, _, many, dkim = PHASES[name]
    want = st.rcpt_messages * st.recipients if many else st.messages
    granted = granted_numbers(want, st.granted_share)
    with sink(st.workdir, 30, dump=many) as snk, \
            beacon_proxy(st, name, snk.port, dkim, st.profile if name == "c" else None,
                         granted) as bp:
        before = bp.delivered()
        res = drive(st, name, bp.smtp_port, snk, bp.proc.pid, bp.proc,
                    lambda: bp.delivered() - before >= want)
        rewritten = metric(bp.web_port, "beacon_proxy_copies_total", '{outcome="rewritten"}')
        if rewritten != len(granted):
            raise BenchError(f"{name}: {rewritten:.0f} copies rewritten for granted "
                             f"recipients, {len(granted)} seeded granted")
        opened = {p: metric(bp.web_port, "beacon_proxy_upstream_connections_total",
                            f'{{pipelining="{p}"}}') for p in ("yes", "no")}
        print(f"{name}: upstream connections opened: {opened['yes'] + opened['no']:.0f} "
              f"({opened['yes']:.0f} offering PIPELINING)")
    if dkim and res.signed is not None and res.signed < res.recipients:
        raise BenchError(f"{name}: only {res.signed} of {res.recipients} copies arrived "
                         "DKIM-signed")
    return res


def phase_soak(st: Settings, spec: SoakSpec, dkim: bool,
               messages: bytes | Messages | None = None) -> bool:
    """The soak through a fresh relay into ``bench/_capture.py``; its verdicts hold.
    ``messages``: what ``run_soak`` sends (default: the newsletter under personal headers)."""
    body = newsletter().replace(b"\n", b"\r\n") if messages is None else messages
    port = free_port()
    arrivals = st.workdir / "soak-arrivals.txt"
    log = (st.workdir / "capture.log").open("wb")
    capture = subprocess.Popen(
        [sys.executable, str(HERE / "_capture.py"), "--port", str(port), "--out", str(arrivals)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())
    try:
        wait_until(lambda: smtp_ready(port), 30, "capture start", capture)
        with beacon_proxy(st, "soak", port, dkim) as bp:
            capture_cpu0 = cpu_seconds(capture.pid)
            res = run_soak(spec, bp.smtp_port, bp.proc.pid, CaptureLog(arrivals), body)
            res.capture_cpu_s = cpu_seconds(capture.pid) - capture_cpu0
            if bp.proc.poll() is not None:
                raise BenchError(f"soak: beacon-proxy exited with {bp.proc.returncode}")
    finally:
        stop_process(capture)
        log.close()
    print()
    return report_soak(res)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _mb(kib: int | None) -> str:
    return f"{kib / 1024:.1f}" if kib is not None else "-"


#: A table's column: its header, its width, its cell.
Column = tuple[str, int, Callable[[Result], str]]

_MEMORY: list[Column] = [("RSS MB", 7, lambda r: _mb(r.rss_kib)),
                         ("PSS MB", 7, lambda r: _mb(r.pss_kib))]
_SIGNED: Column = ("signed", 6, lambda r: f"{r.signed or 0}")
_SINK: Column = ("sink CPU s", 10, lambda r: f"{r.sink_cpu_s:.2f}")
_SOURCE: Column = ("source CPU s", 12, lambda r: _opt(r.source_cpu_s, ".2f"))
_SYS: Column = ("sys %", 5, lambda r: _share(r))
# Why these two: a rate far below what the relay's CPU per message allows on these
# cores is a machine short of CPU (busy % near 100: sink, source, other work) when the
# relay's threads wait for a CPU (runq), not a relay waiting on itself (issue 12).
_BUSY: Column = ("busy %", 6, lambda r: _opt(None if r.busy_share is None
                                             else 100 * r.busy_share, ".0f"))
_OTHER: Column = ("other %", 7, lambda r: _opt(_other(r), ".0f"))
_RUNQ: Column = ("runq ms/msg", 11, lambda r: _opt(
    None if r.relay_runq_s is None else 1000 * r.relay_runq_s / r.recipients, ".2f"))


def _rate_columns(unit: str, per_width: int, per_spec: str) -> list[Column]:
    """Both tables' middle: delivery time, rate, the relay's CPU and its CPU per ``unit``."""
    return [("deliver s", 9, lambda r: f"{r.delivered_s:.2f}"),
            (f"{unit}/s", 7, lambda r: f"{r.rate:.1f}"),
            ("relay CPU s", 11, lambda r: _opt(r.relay_cpu_s, ".2f")),
            (f"CPU ms/{unit}", per_width, lambda r: _per(r, per_spec))]


def _budget_lines(results: dict[str, Result]) -> None:
    """What each rate goal leaves the relay per message, on this machine (no goal).

    smtp-source and smtp-sink run on the relay's cores: at a goal's rate R with every
    core busy, the relay may spend at most cores / R minus what the sink and the source
    spent per message in the same phase.  A relay that spends more cannot reach R here.
    """
    cores = len(os.sched_getaffinity(0))
    for subject in ("c", "c-dkim"):
        mine = results.get(subject)
        if mine is None or mine.relay_cpu_s is None or mine.source_cpu_s is None:
            continue
        others = 1000 * (mine.sink_cpu_s + mine.source_cpu_s) / mine.messages
        spent = 1000 * mine.relay_cpu_s / mine.messages
        for base, goal, _label in GOALS:
            if base not in results:
                continue
            rate = goal * results[base].rate
            budget = 1000 * cores / rate - others
            print(f"  {subject} at {goal:g}x {base} = {rate:.0f} msg/s: the relay may spend "
                  f"{budget:.2f} CPU ms/msg on {cores} busy cores (sink + source take "
                  f"{others:.2f}); it spends {spent:.2f}")


def _opt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _per(r: Result, spec: str) -> str:
    """Relay CPU milliseconds per recipient (= per message at one recipient each)."""
    return "-" if r.relay_cpu_s is None else format(1000 * r.relay_cpu_s / r.recipients, spec)


def _table(rows: Sequence[Result], columns: Sequence[Column]) -> None:
    """Phase and label left-aligned, then every column right-aligned to its width."""
    hdr = f"{'phase':<14} {'':<26} " + " ".join(f"{h:>{w}}" for h, w, _ in columns)
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        name = f"{r.name} #{r.round}" if r.round else r.name
        print(f"{name:<14} {r.label:<26} " + " ".join(f"{cell(r):>{w}}"
                                                        for _, w, cell in columns))


def _share(r: Result) -> str:
    """The relay's system (kernel) CPU as a share of its CPU: sockets, files, syncs."""
    if r.relay_sys_s is None or not r.relay_cpu_s:
        return "-"
    return f"{100 * r.relay_sys_s / r.relay_cpu_s:.0f}"


def _other(r: Result) -> float | None:
    """The share of every core that neither the relay, the sink nor the source used
    while the phase ran (other work on the machine: what a shared machine takes)."""
    if r.busy_share is None or not r.cores_s:
        return None
    ours = (r.relay_cpu_s or 0.0) + r.sink_cpu_s + (r.source_cpu_s or 0.0)
    return max(0.0, 100 * (r.busy_share - ours / r.cores_s))


def _copies_ceiling(results: dict[str, Result]) -> None:
    """Set the relay's many-recipient rate beside the rate of phase a (no goal).

    beacon-proxy sends each recipient their own copy (their footer link and one-click
    URL), so it sends one ~70 KB transaction per recipient where the others send one per
    50 (Postfix) or per message.  Phase a, smtp-source sending one-recipient messages
    straight to smtp-sink, is the most transactions of that size this machine's
    smtp-sink takes in per second: the ceiling for a relay of per-recipient copies.
    """
    if "a" not in results:
        return
    for subject in ("c-rcpt", "c-dkim-rcpt"):
        if subject in results:
            mine = results[subject]
            left = f"{subject} / a (one transaction per recipient: the sink's ceiling)"
            print(f"{left:<72} = {mine.rate / results['a'].rate:6.2f}x  (no goal)")


def _goal_lines(results: dict[str, Result], subjects: Sequence[str], suffix: str,
                runs: Sequence[Result] = ()) -> bool:
    """Each goal's ratio and verdict (``results``: one run per phase, the median's); with
    ``runs`` from several rounds, the ratios of each round after it (no verdict)."""
    ok = True
    for subject in subjects:
        if subject + suffix not in results:
            continue
        mine = results[subject + suffix]
        for base, goal, label in GOALS:
            if base + suffix not in results:
                continue
            ratio = mine.rate / results[base + suffix].rate
            passed = ratio >= goal
            ok = ok and passed
            left = f"{subject + suffix} / {base + suffix} ({label})"
            rounds = _round_ratios(runs, subject + suffix, base + suffix)
            print(f"{left:<54} = {ratio:6.2f}x  goal >= {f'{goal:g}x':<5} "
                  f"{'PASS' if passed else 'FAIL'}{rounds}")
    return ok


def _round_ratios(runs: Sequence[Result], subject: str, base: str) -> str:
    """``  (rounds: 3.98 4.48 ...)``: subject / base within each round; "" for one round."""
    rates = {(r.name, r.round): r.rate for r in runs if r.round}
    ratios = [rates[subject, n] / rates[base, n] for (name, n) in sorted(rates, key=lambda k: k[1])
              if name == subject and (base, n) in rates]
    return f"  (rounds: {' '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""


def medians(results: Sequence[Result]) -> dict[str, Result]:
    """Each phase's median run by rate (the lower middle one of an even number)."""
    by: dict[str, list[Result]] = {}
    for r in results:
        by.setdefault(r.name, []).append(r)
    return {name: sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]
            for name, runs in by.items()}


def report(results: Sequence[Result], st: Settings, size: int, skipped: dict[str, str]) -> bool:
    by = medians(results)
    several = any(r.round for r in results)
    print(f"relay benchmark: {size:,} byte QP HTML newsletter, smtp-source -s {st.sessions}"
          f"{' -d' if st.reuse else ''}, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, beacon-proxy delivery concurrency {st.concurrency}, "
          f"log level {st.log_level}"
          f"{f', {st.granted_share:g} of the recipients granted' if st.granted_share else ''}")
    for name, why in skipped.items():
        print(f"phase {name} skipped: {why}")
    ok = True
    single = [r for r in results if not PHASES[r.name][2]]
    if single:
        print()
        print(f"1 recipient per message, {st.messages} messages")
        _table(single, [
            ("msgs", 5, lambda r: f"{r.messages}"),
            ("accept s", 8, lambda r: f"{r.accepted_s:.2f}"),
            *_rate_columns("msg", 10, ".2f"), *_MEMORY, _SINK, _SOURCE, _SYS, _BUSY, _OTHER, _RUNQ])
        print()
        if several:
            print("goals judged on each phase's median run; after each ratio, those of the "
                  "single rounds")
        ok = _goal_lines(by, ("c", "c-dkim"), "", results) and ok
        _budget_lines(by)
    many = [r for r in results if PHASES[r.name][2]]
    if many:
        print()
        print(f"{st.recipients} recipients per message, {st.rcpt_messages} message(s); "
              "txns and signed: as counted at smtp-sink")
        _table(many, [
            ("rcpts", 6, lambda r: f"{r.recipients}"),
            ("txns", 5, lambda r: f"{r.transactions or 0}"),
            *_rate_columns("rcpt", 11, ".3f"), *_MEMORY, _SIGNED, _SINK, _SYS, _BUSY])
        print()
        ok = _goal_lines(by, ("c", "c-dkim"), "-rcpt", results) and ok
        _copies_ceiling(by)
    return ok


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def parse_phases(text: str) -> list[str]:
    """``a,b,c`` -> phase names in the order of PHASES; ``all`` is every phase."""
    if text.strip() == "all":
        return list(PHASES)
    wanted = {p.strip() for p in text.split(",") if p.strip()}
    unknown = wanted - set(PHASES)
    if unknown or not wanted:
        raise ValueError(f"unknown phase(s) {', '.join(sorted(unknown)) or '(none)'}; "
                         f"known: {', '.join(PHASES)}, all")
    return [p for p in PHASES if p in wanted]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: relays and Postfix stopped


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", "-m", type=int, default=1000,
                   help="messages per 1-recipient phase (default 1000)")
    p.add_argument("--sessions", "-s", type=int, default=8, help="smtp-source sessions")
    p.add_argument("--concurrency", type=int, default=20,
                   help="beacon-proxy [delivery] concurrency (default 20)")
    p.add_argument("--recipients", type=int, default=1000,
                   help="recipients per message in the *-rcpt phases (1..1000, default 1000)")
    p.add_argument("--rcpt-messages", type=int, default=1,
                   help="messages in the *-rcpt phases (default 1)")
    p.add_argument("--granted-share", type=float, default=0.0,
                   help="share of the recipients seeded granted in beacon-proxy's store "
                        "(0..1, default 0: all refused)")
    p.add_argument("--reuse-connections", action="store_true",
                   help="smtp-source -d: several messages per connection")
    p.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                   help=f"comma-separated, from: {', '.join(PHASES)}; or 'all' "
                        "(default: all but soak)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the phases this many times, alternating; goals judged on each "
                        "phase's median run (default 1)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per phase (default 300)")
    add_soak_options(p, seconds=600, seconds_help="soak duration (default 600)",
                     fraction_help="soak at this share of c-dkim's (c's with --soak-dkim off) "
                                   "rate measured in this run (default 0.8)")
    p.add_argument("--soak-dkim", choices=("on", "off"), default="on",
                   help="DKIM signing during the soak (default on)")
    p.add_argument("--soak-drain", type=float, default=120.0,
                   help="soak: seconds after the schedule's end for the sender to send what "
                        "is still queued, then the rest is cancelled (default 120)")
    p.add_argument("--profile", type=Path, default=None,
                   help="run beacon-proxy under cProfile in phase c and write the stats here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--workers", default="auto",
                   help='beacon-proxy\'s [smtp] workers (default "auto": one per CPU; '
                        "phase c-1w always runs one process)")
    p.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="beacon-proxy's [smtp] event_loop (default auto: uvloop if installed)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="warning",
                   help="beacon-proxy's [log] level (default warning: the relay's own default "
                        "is info, one JSON line per received message and per delivered copy)")
    a = p.parse_args(argv)
    if a.workers != "auto" and not (a.workers.isdigit() and int(a.workers) >= 1):
        p.error('--workers must be "auto" or a number >= 1')
    if min(a.messages, a.sessions, a.concurrency, a.rcpt_messages, a.soak_connections,
           a.rounds) < 1:
        p.error("--messages, --sessions, --concurrency, --rcpt-messages, "
                "--soak-connections and --rounds must be >= 1")
    if not 1 <= a.recipients <= 1000:
        p.error("--recipients: 1..1000")
    if not 0 <= a.granted_share <= 1:
        p.error("--granted-share: 0..1")
    if a.soak_seconds <= 0 or a.rss_every <= 0 or a.soak_fraction <= 0 or a.soak_drain <= 0:
        p.error("--soak-seconds, --rss-every, --soak-fraction and --soak-drain must be > 0")
    try:
        phases = parse_phases(a.phases)
    except ValueError as exc:
        p.error(f"--phases: {exc}")
    soak_base = "c-dkim" if a.soak_dkim == "on" else "c"
    if "soak" in phases and a.soak_rate is None and soak_base not in phases:
        p.error(f"soak: give --soak-rate or run phase {soak_base} (its rate sets the soak's)")
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            print(f"{tool} not found (apt-get install postfix)", file=sys.stderr)
            return 2

    old_term = signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="beacon-bench-"))
    workdir.chmod(0o711)  # smtp-sink (nobody) and Postfix's daemons reach their dirs below
    ok = True
    try:
        msg = newsletter()
        msg_file = workdir / "newsletter.eml"
        msg_file.write_bytes(msg)
        msg_file.chmod(0o644)
        size = len(msg.replace(b"\n", b"\r\n"))  # as sent on the wire
        st = Settings(a.messages, a.sessions, msg_file, workdir, a.timeout,
                      a.reuse_connections, a.profile.resolve() if a.profile else None,
                      a.concurrency, a.recipients, a.rcpt_messages,
                      event_loop=a.event_loop, workers=a.workers,
                      granted_share=a.granted_share, log_level=a.log_level)
        runners: dict[str, Callable[[Settings, str], Result]] = {
            "direct": phase_direct, "passthrough": phase_passthrough,
            "postfix": phase_postfix, "proxy": phase_proxy,
        }
        results: list[Result] = []
        skipped: dict[str, str] = {}
        no_postfix = postfix_available()
        for n in range(1, a.rounds + 1):
            if a.rounds > 1:  # each round's relays, sinks and hops in a folder of their own
                (workdir / f"round-{n}").mkdir(mode=0o711)
                (workdir / f"round-{n}").chmod(0o711)
            run_st = replace(st, workdir=workdir / f"round-{n}") if a.rounds > 1 else st
            for name in phases:
                kind = PHASES[name][1]
                if kind == "soak":
                    continue
                if kind == "postfix" and no_postfix is not None:
                    skipped[name] = no_postfix
                    continue
                print(f"running phase {name}"
                      f"{f' (round {n} of {a.rounds})' if a.rounds > 1 else ''} ...",
                      file=sys.stderr, flush=True)
                result = runners[kind](run_st, name)
                result.round = n if a.rounds > 1 else 0
                results.append(result)
        ok = report(results, st, size, skipped)
        if "soak" in phases:
            rates = {name: r.rate for name, r in medians(results).items()}
            if a.soak_rate is not None:
                rate, label = a.soak_rate, "(--soak-rate)"
            else:
                rate = a.soak_fraction * rates[soak_base]
                label = (f"({a.soak_fraction:g} x {soak_base}'s "
                         f"{rates[soak_base]:.1f} msg/s)")
            spec = SoakSpec(a.soak_seconds, rate, a.soak_connections, a.rss_every,
                            send_drain=a.soak_drain, dkim=a.soak_dkim == "on",
                            label=f"{label}, DKIM {a.soak_dkim}")
            print(f"running soak for {a.soak_seconds:.0f} s at {rate:.1f} msg/s ...",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            ok = phase_soak(st, spec, a.soak_dkim == "on") and ok
    except BenchError as exc:
        print(f"benchmark failed: {exc} (logs in {workdir})", file=sys.stderr)
        a.keep = True
        return 2
    except KeyboardInterrupt:
        print("interrupted; relays and Postfix stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if a.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
