"""The relay soak of ``bench/relay.py``: a fixed rate for a long time, latency and memory.

A sender written here (``connections`` SMTP connections in parallel, the
lean client and byte template of ``bench/_smtpload.py``, which leave the
cores to the relay) offers message ``n`` at ``start + n / rate`` for
``seconds`` seconds: open loop, so a relay that slows down gets a queue at
the sender (its lag is shown) rather than a lower rate.  Each message is the
benchmark newsletter with a header ``X-Bench-Id: n``, its own Message-ID and
its own recipient.  The relay delivers to ``bench/_capture.py``, which
timestamps each arrival; the *accept-to-deliver latency* of a message is its
arrival time there minus the moment the relay answered 250 to its DATA (both
CLOCK_MONOTONIC).  A message accepted and never delivered (within
``drain_timeout`` after the last send) counts as infinitely late.

After the schedule's end the sender has ``send_drain`` seconds to send what
is still queued (a relay or sender that fell behind gets to finish); then
what is left is cancelled.  Every scheduled message ends in exactly one
count: accepted, refused (the relay answered a code the client did not
expect: by step and code), failed (connection lost or refused, timeout,
malformed reply), or not sent by the deadline (never started, or cut off
mid-transaction when cancelled).

Every ``rss_every`` seconds the RSS (and PSS) of the relay's process tree is
sampled.  **Flat** means: the mean RSS of the last window is within 10 % of
the mean RSS of the second window, a window being 60 s when the soak lasts
at least 180 s and a third of the soak otherwise (for the 10-minute soak:
the last minute against the second minute; the first window is warm-up).
Verdicts: p99 accept-to-deliver latency < 1 s, RSS flat, every message
accepted and delivered, with DKIM on every delivered message signed on
arrival, and the rate held (messages accepted per second of sending at least
95 % of the rate asked for: otherwise the relay, or on a busy machine the
sender, fell behind and the run did not test that rate; the sender's and the
capture's own CPU per message are shown to tell which).  The due-to-deliver
latency (from when a message was due to be sent) is shown beside: it
includes the time a message waited at the sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from _openloop import percentile
from _proc import tree_cpu, tree_memory
from _smtpload import Failed, Refused, SmtpClient, SoakTemplate

from beacon_proxy.eventloop import loop_factory

__all__ = ["CaptureLog", "Messages", "SoakResult", "SoakSpec", "add_soak_options",
           "flat_windows", "report_soak", "run_soak"]

SENDER = "news@shop.example"
GOAL_P99_S = 1.0
FLAT_TOLERANCE = 0.10
RATE_HELD = 0.95  # below this share of the rate the relay (or the sender) fell behind
_SEND_TIMEOUT = 60.0  # seconds per connect and per transaction


class Messages(Protocol):
    """What the sender sends as message ``n`` (``_smtpload.SoakTemplate``: one body under
    personal headers; ``personal_relay.PersonalTemplate``: a token in every link too)."""

    def rcpt(self, n: int) -> bytes: ...  # the RCPT command

    def parts(self, n: int) -> Sequence[bytes]: ...  # the DATA bytes, stuffed, in pieces

    def size(self, n: int) -> int: ...  # for MAIL's SIZE=


def add_soak_options(p: argparse.ArgumentParser, *, seconds: float, seconds_help: str,
                     fraction_help: str) -> None:
    """The soak's options that bench/relay.py and bench/personal_relay.py share:
    ``--soak-seconds`` (default ``seconds``), ``--soak-rate``, ``--soak-fraction`` (0.8),
    ``--soak-connections`` (8) and ``--rss-every`` (10 s)."""
    p.add_argument("--soak-seconds", type=float, default=seconds, help=seconds_help)
    p.add_argument("--soak-rate", type=float, default=None,
                   help="soak messages/s (default: --soak-fraction of the rate measured)")
    p.add_argument("--soak-fraction", type=float, default=0.8, help=fraction_help)
    p.add_argument("--soak-connections", type=int, default=8,
                   help="parallel SMTP connections of the soak's sender, kept for the whole "
                        "soak (default 8)")
    p.add_argument("--rss-every", type=float, default=10.0,
                   help="soak: seconds between RSS samples (default 10)")


@dataclass(frozen=True)
class SoakSpec:
    seconds: float
    rate: float
    connections: int = 8
    rss_every: float = 10.0
    drain_timeout: float = 120.0  # for deliveries, after the last send
    send_drain: float = 120.0  # for sends, after the schedule's end; then the rest is cancelled
    dkim: bool = False  # every delivered message must arrive signed
    event_loop: str = "auto"  # the sender's: uvloop when installed (beacon_proxy.eventloop)
    label: str = ""  # how the rate was chosen, for the report


@dataclass
class SoakResult:
    spec: SoakSpec
    scheduled: int = 0
    accepted: dict[int, float] = field(default_factory=dict)  # n -> monotonic 250 time
    dues: dict[int, float] = field(default_factory=dict)  # n -> when it was due to be sent
    refused: Counter[str] = field(default_factory=Counter)  # "<step> <code>" -> count
    failed: Counter[str] = field(default_factory=Counter)  # why -> count
    never_started: int = 0  # still queued when the sender's drain ended
    cut_off: int = 0  # mid-transaction when the drain ended (the relay may have it)
    lags: list[float] = field(default_factory=list)  # send start - due, seconds
    arrivals: dict[int, float] = field(default_factory=dict)  # n -> monotonic arrival
    signed: int = 0  # accepted messages that arrived with a DKIM-Signature
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, RSS, PSS KiB)
    cpu_s: float = 0.0
    sender_cpu_s: float = 0.0  # this process (the sender) during the soak
    capture_cpu_s: float = 0.0  # set by the caller
    sender_loop: str = ""  # the event loop the sender ran on
    send_s: float = 0.0  # first due time .. last send finished
    overrun_s: float = 0.0  # the schedule's end .. the sender done (or cancelled)

    def latencies(self) -> list[float]:
        """Accept-to-deliver seconds per accepted message, ascending; inf if never delivered."""
        return sorted(self.arrivals[n] - t if n in self.arrivals else math.inf
                      for n, t in self.accepted.items())

    def due_latencies(self) -> list[float]:
        """Due-to-deliver seconds (the sender's queue included), ascending; inf if lost."""
        return sorted(self.arrivals[n] - self.dues[n] if n in self.arrivals else math.inf
                      for n in self.accepted)

    @property
    def not_sent(self) -> int:
        """Scheduled messages the sender had not sent when its drain ended."""
        return self.never_started + self.cut_off

    def unaccounted(self) -> int:
        """Scheduled messages in no count (0 unless the sender lost track of one)."""
        return (self.scheduled - len(self.accepted) - sum(self.refused.values())
                - sum(self.failed.values()) - self.not_sent)


class CaptureLog:
    """Reads the lines bench/_capture.py appends, as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.arrivals: dict[int, float] = {}
        self.signed = 0  # lines with a DKIM-Signature, bench ids or not
        self.signed_ids: set[int] = set()
        self.other = 0  # messages without a numeric X-Bench-Id
        self._offset = 0
        self._tail = b""

    def poll(self) -> int:
        """Read what is new; return the number of messages seen so far."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return len(self.arrivals)
        self._offset += len(chunk)
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        for line in data[:cut].splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            signed = int(parts[3]) > 0
            self.signed += signed
            if parts[0].isdigit():
                self.arrivals.setdefault(int(parts[0]), float(parts[1]))
                if signed:
                    self.signed_ids.add(int(parts[0]))
            else:
                self.other += 1
        return len(self.arrivals)


async def _send(spec: SoakSpec, port: int, template: Messages, res: SoakResult,
                root: int) -> None:
    count = max(1, int(spec.seconds * spec.rate))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    start = time.monotonic() + 0.2
    last_done = start
    in_flight: set[int] = set()  # what a cancelled worker was sending

    async def worker() -> None:
        nonlocal last_done
        client: SmtpClient | None = None
        try:
            while (item := await queue.get()) is not None:
                n, due = item
                res.dues[n] = due
                res.lags.append(time.monotonic() - due)
                in_flight.add(n)
                try:
                    if client is None or client.closed:
                        client = await SmtpClient.connect("127.0.0.1", port, SENDER,
                                                          _SEND_TIMEOUT)
                    await client.send(template.rcpt(n), template.parts(n), template.size(n))
                    res.accepted[n] = last_done = time.monotonic()
                except Refused as exc:
                    res.refused[exc.reason] += 1
                except Failed as exc:
                    res.failed[str(exc)] += 1
                in_flight.discard(n)
        except BaseException:
            if client is not None:
                client.close()
            raise
        if client is not None:
            await client.quit()

    async def sampler() -> None:
        while True:
            rss, pss = tree_memory(root)
            res.samples.append((max(0.0, time.monotonic() - start), rss, pss))
            await asyncio.sleep(spec.rss_every)

    workers = [asyncio.create_task(worker()) for _ in range(spec.connections)]
    sampling = asyncio.create_task(sampler())
    for n in range(count):
        due = start + n / spec.rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        queue.put_nowait((n, due))
        res.scheduled += 1
    for _ in workers:
        queue.put_nowait(None)
    end = time.monotonic()
    _, pending = await asyncio.wait(workers, timeout=spec.send_drain)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    res.overrun_s = time.monotonic() - end
    res.cut_off = len(in_flight)
    while not queue.empty():
        res.never_started += queue.get_nowait() is not None
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    rss, pss = tree_memory(root)
    res.samples.append((max(0.0, time.monotonic() - start), rss, pss))
    res.send_s = last_done - start


def run_soak(spec: SoakSpec, port: int, root: int, capture: CaptureLog,
             messages: bytes | Messages) -> SoakResult:
    """Send for spec.seconds to 127.0.0.1:port, then wait (bounded) for every accepted message.
    ``messages``: a body (each message it under its own headers: ``SoakTemplate``) or
    what to send as message ``n``."""
    res = SoakResult(spec)
    cpu0, own0 = tree_cpu(root), time.process_time()
    factory, res.sender_loop = loop_factory(spec.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        template = SoakTemplate(messages) if isinstance(messages, bytes) else messages
        runner.run(_send(spec, port, template, res, root))
    deadline = time.monotonic() + spec.drain_timeout
    while time.monotonic() < deadline:
        capture.poll()
        if all(n in capture.arrivals for n in res.accepted):
            break
        time.sleep(0.1)
    res.cpu_s = tree_cpu(root) - cpu0
    res.sender_cpu_s = time.process_time() - own0
    res.arrivals = capture.arrivals
    res.signed = len(capture.signed_ids & res.accepted.keys())
    return res


def flat_windows(samples: list[tuple[float, int, int]],
                 seconds: float) -> tuple[float, float, float] | None:
    """(window s, mean RSS KiB of the second window, of the last window); None if too few."""
    w = 60.0 if seconds >= 180 else seconds / 3
    second = [s[1] for s in samples if w <= s[0] < 2 * w]
    last = [s[1] for s in samples if s[0] >= seconds - w]
    if not second or not last:
        return None
    return w, statistics.fmean(second), statistics.fmean(last)


def report_soak(res: SoakResult) -> bool:
    """Print the soak's numbers and verdicts; True when all hold."""
    spec = res.spec
    lat = res.latencies()
    missing = sum(1 for x in lat if x == math.inf)
    lags = sorted(res.lags)
    accepted = len(res.accepted)
    print(f"soak: {spec.seconds:.0f} s at {spec.rate:.1f} msg/s {spec.label}, "
          f"{spec.connections} connections, 1 rcpt/msg")
    print(f"  scheduled {res.scheduled}: accepted {accepted}, "
          f"refused {_counts(res.refused)}, failed {_counts(res.failed)}, "
          f"not sent by the deadline {res.not_sent} (never started {res.never_started}, "
          f"cut off mid-transaction {res.cut_off})"
          + (f", UNACCOUNTED {res.unaccounted()}" if res.unaccounted() else ""))
    print(f"  delivered {accepted - missing} of the accepted, DKIM-signed on arrival {res.signed}")
    achieved = accepted / res.send_s if res.send_s > 0 else 0.0
    print(f"  rate achieved {achieved:.1f} msg/s over {res.send_s:.0f} s; sender lag "
          f"p50 {1000 * percentile(lags, 50):.0f} ms, p99 {1000 * percentile(lags, 99):.0f} ms; "
          f"sending ended {res.overrun_s:.1f} s after the schedule (drain limit "
          f"{spec.send_drain:.0f} s)")
    if lat:
        for name, values in (("accept-to-deliver", lat), ("due-to-deliver", res.due_latencies())):
            p = {q: percentile(values, q) for q in (50, 90, 99)}
            print(f"  {name + ':':<18} p50 {1000 * p[50]:.0f} ms, p90 {1000 * p[90]:.0f} ms, "
                  f"p99 {1000 * p[99]:.0f} ms, max {1000 * values[-1]:.0f} ms")
    if accepted:
        print(f"  relay tree CPU {res.cpu_s:.1f} s = {1000 * res.cpu_s / accepted:.2f} ms/msg; "
              f"load side: sender {1000 * res.sender_cpu_s / accepted:.2f} ms/msg "
              f"({res.sender_loop or 'asyncio'}), capture "
              f"{1000 * res.capture_cpu_s / accepted:.2f} ms/msg")
    step = max(1, math.ceil(len(res.samples) / 20))
    curve = " ".join(f"{t:.0f}s:{rss / 1024:.0f}" for t, rss, _ in res.samples[::step])
    print(f"  relay tree RSS MB: {curve}")
    rss = [s[1] for s in res.samples]
    print(f"  RSS first {rss[0] / 1024:.1f} MB, last {rss[-1] / 1024:.1f} MB, "
          f"max {max(rss) / 1024:.1f} MB; PSS last {res.samples[-1][2] / 1024:.1f} MB")
    p99 = percentile(lat, 99) if lat else math.inf
    lat_ok = accepted > 0 and p99 < GOAL_P99_S
    windows = flat_windows(res.samples, spec.seconds)
    if windows is None:
        flat_ok = False
        flat_text = "too few samples"
    else:
        w, second, last = windows
        change = (last - second) / second if second else math.inf
        flat_ok = abs(change) <= FLAT_TOLERANCE
        flat_text = (f"last {w:.0f} s mean {last / 1024:.1f} MB vs second {w:.0f} s "
                     f"{second / 1024:.1f} MB: {change:+.1%}")
    all_ok = accepted == res.scheduled and missing == 0 and not res.unaccounted()
    rate_ok = achieved >= RATE_HELD * spec.rate
    verdicts = [
        (f"rate held (achieved >= {RATE_HELD:.0%} of {spec.rate:.1f} msg/s)", rate_ok),
        (f"p99 accept-to-deliver < {GOAL_P99_S:g} s ({1000 * p99:.0f} ms)", lat_ok),
        (f"RSS flat within {FLAT_TOLERANCE:.0%} ({flat_text})", flat_ok),
        (f"every message accepted and delivered ({accepted - missing}/{res.scheduled})",
         all_ok)]
    if spec.dkim:
        delivered = accepted - missing
        verdicts.append((f"every delivered message DKIM-signed on arrival "
                         f"({res.signed}/{delivered})", res.signed == delivered))
    for text, passed in verdicts:
        print(f"{text:<78} {'PASS' if passed else 'FAIL'}")
    return all(passed for _, passed in verdicts)


def _counts(counter: Counter[str]) -> str:
    """``"N"``, or ``"N (reason: n, ...)"`` with the four commonest reasons.

    >>> _counts(Counter())
    '0'
    >>> _counts(Counter({"RCPT 550": 2, "MAIL 451": 1}))
    '3 (RCPT 550: 2, MAIL 451: 1)'
    """
    total = sum(counter.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{k}: {v}' for k, v in counter.most_common(4))})"
