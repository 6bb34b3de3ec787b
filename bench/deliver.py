"""Micro-benchmark of the delivery path: SmtpCourier into smtp-sink, old path vs new.

Run from the repository root: ``python bench/deliver.py [--messages 2000]``.

Delivers the benchmark newsletter (``bench/newsletter.py``, ~70 KB, CRLF line
ends as the spool keeps it) ``--messages`` times, one recipient per message,
through ``--workers`` couriers of this process (each a delivery worker with its
own connection, as the scheduler runs them) into one ``smtp-sink``
(``/usr/sbin/smtp-sink``, Debian: postfix).  The phases, side by side in one
run, each ``--rounds`` times in turn so that the machine's noise falls on all
of them alike:

  pipelined  SmtpCourier as it runs: MAIL, RCPT and DATA in one write (RFC 2920,
             smtp-sink offers PIPELINING), the data prepared with bytes operations
  stepwise   SmtpCourier(pipelining=False): each command's reply awaited before
             the next (what the courier does when PIPELINING is not offered)
  sendmail   aiosmtplib's own SMTP.sendmail() on one kept connection: its regex
             line-end and dot-stuffing passes (the courier's path before issue 12)
  baseline   with ``--baseline REV``: SmtpCourier as it was at git revision REV
             (``git show REV:beacon_proxy/deliver/smtp.py``, loaded beside this one)

For each phase: CPU ms per message of this process (utime + stime, read with
``time.process_time()``, which is what /proc/self/stat counts but to the
nanosecond rather than the 10 ms tick; smtp-sink's share is not counted), messages per second
(wall time, first MAIL to last 250) and upstream connections opened; then the
ratios to the pipelined path.  The best round of each phase is reported
(the least disturbed by the other work on a shared machine) with the spread.
Every phase is bounded: ``--messages`` deliveries, and ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosmtplib import SMTP
from newsletter import RECIPIENT, newsletter
from relay import sink

from beacon_proxy.deliver.smtp import SmtpCourier
from beacon_proxy.metrics import UPSTREAM_CONNECTIONS

REPO = Path(__file__).resolve().parent.parent
SENDER = "sender@example.com"
PHASES = ("pipelined", "stepwise", "sendmail")


@dataclass
class Round:
    cpu_s: float
    wall_s: float
    connections: int


@dataclass
class Phase:
    name: str
    rounds: list[Round] = field(default_factory=list)

    def best(self) -> Round:
        return min(self.rounds, key=lambda r: r.cpu_s)


def load_courier(rev: str) -> type[SmtpCourier]:
    """SmtpCourier from ``beacon_proxy/deliver/smtp.py`` at git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:beacon_proxy/deliver/smtp.py"],
                            cwd=REPO, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-deliver-")) / "baseline_smtp.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_smtp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    courier: type[SmtpCourier] = module.SmtpCourier
    return courier


def connections_opened() -> int:
    return int(sum(UPSTREAM_CONNECTIONS.labels(p)._value.get() for p in ("yes", "no")))


async def run_couriers(port: int, data: bytes, messages: int, workers: int,
                       pipelining: bool, courier_class: type[SmtpCourier] = SmtpCourier) -> int:
    """Deliver through ``workers`` couriers; returns the connections they opened."""
    before = connections_opened()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)

    async def worker() -> None:
        options = {} if pipelining else {"pipelining": False}
        courier = courier_class("127.0.0.1", port, starttls="off", tls_verify=False,
                                timeout=30, helo_name="bench.test", **options)
        try:
            while not queue.empty():
                n = queue.get_nowait()
                result = await courier.deliver(SENDER, f"{n}{RECIPIENT}", data)
                if not result.ok:
                    raise RuntimeError(f"delivery {n} failed: {result.reply}")
        finally:
            await courier.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    if courier_class is not SmtpCourier:
        return -1  # an older courier does not count its connections
    return connections_opened() - before


async def run_sendmail(port: int, data: bytes, messages: int, workers: int) -> int:
    """The same through aiosmtplib's sendmail(), one kept connection per worker."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)

    async def worker() -> None:
        client = SMTP(hostname="127.0.0.1", port=port, local_hostname="bench.test",
                      timeout=30, start_tls=False)
        await client.connect()
        try:
            while not queue.empty():
                n = queue.get_nowait()
                await client.sendmail(SENDER, [f"{n}{RECIPIENT}"], data)
        finally:
            await client.quit()

    await asyncio.gather(*(worker() for _ in range(workers)))
    return workers


def measure(run: Callable[[], Awaitable[int]], timeout: float) -> Round:
    """One round: CPU seconds of this process (utime + stime, all threads, as
    /proc/self/stat counts them but to the nanosecond), wall seconds, connections."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    connections = asyncio.run(asyncio.wait_for(run(), timeout))
    return Round(time.process_time() - cpu0, time.perf_counter() - wall0, connections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages per round and phase")
    ap.add_argument("--workers", type=int, default=1, help="couriers (connections) at once")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every phase, in turn")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on one round, seconds")
    ap.add_argument("--baseline", metavar="REV", help="also SmtpCourier as at git revision REV")
    args = ap.parse_args()
    if not 1 <= args.messages <= 100_000 or not 1 <= args.workers <= 100:
        ap.error("--messages 1..100000, --workers 1..100")

    data = newsletter().replace(b"\n", b"\r\n")
    phases = {name: Phase(name) for name in PHASES}
    baseline = load_courier(args.baseline) if args.baseline else None
    if baseline is not None:
        phases["baseline"] = Phase(f"{args.baseline[:10]}")
    with tempfile.TemporaryDirectory(prefix="bench-deliver-") as tmp, \
            sink(Path(tmp), 10) as upstream:
        print(f"{args.messages} messages of {len(data)} bytes per round, {args.workers} "
              f"worker(s), {args.rounds} rounds, smtp-sink on port {upstream.port}")
        for warm_up in range(args.rounds + 1):
            for name, phase in phases.items():
                got = upstream.received()
                run: Callable[[], Awaitable[int]] = (
                    functools.partial(run_sendmail, upstream.port, data, args.messages,
                                      args.workers) if name == "sendmail" else
                    functools.partial(run_couriers, upstream.port, data, args.messages,
                                      args.workers, pipelining=True, courier_class=baseline)
                    if name == "baseline" and baseline is not None else
                    functools.partial(run_couriers, upstream.port, data, args.messages,
                                      args.workers, pipelining=name == "pipelined"))
                measured = measure(run, args.timeout)
                if warm_up:  # round 0 warms up (imports, first connections, caches)
                    phase.rounds.append(measured)
                deadline = time.monotonic() + 10
                while upstream.received() < got + args.messages:  # smtp-sink counts them
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{name}: smtp-sink counted "
                                         f"{upstream.received() - got} of {args.messages}")
                    time.sleep(0.05)

    base = phases["pipelined"].best()
    print(f"{'phase':10s} {'CPU ms/msg':>10s} {'(spread)':>16s} {'msgs/s':>8s} "
          f"{'connections':>11s} {'CPU vs pipelined':>16s} {'msgs/s vs pipelined':>19s}")
    for phase in phases.values():
        best = phase.best()
        cpus = [r.cpu_s * 1000 / args.messages for r in phase.rounds]
        spread = f"{min(cpus):.3f}-{max(cpus):.3f}"
        rate = args.messages / best.wall_s
        print(f"{phase.name:10s} {best.cpu_s * 1000 / args.messages:10.3f} {spread:>16s} "
              f"{rate:8.0f} {best.connections if best.connections >= 0 else '-':>11} "
              f"{best.cpu_s / base.cpu_s:15.2f}x "
              f"{rate / (args.messages / base.wall_s):18.2f}x")
    print("median CPU ms/msg: " + ", ".join(
        f"{p.name} {statistics.median(r.cpu_s for r in p.rounds) * 1000 / args.messages:.3f}"
        for p in phases.values()))


if __name__ == "__main__":
    main()
