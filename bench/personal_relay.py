#!/usr/bin/env python3
"""Personalised newsletters through the relay: a recipient's token in every link.

    python bench/personal_relay.py [--messages 2000] [--links 30] [--connections 8]
                                   [--per-connection 20] [--rounds 2]
                                   [--phases same,links,postfix] [--analysis-workers N]
                                   [--soak-seconds 600 [--soak-rate R | --soak-fraction 0.8]]

``bench/relay.py`` sends one body to every recipient: after the first message the
relay knows its analysis (``rewrite/known.py``) and each further one is a splice.
Senders that track clicks put the recipient's token in each link, so no two bodies
are equal bytes and every message is analysed: as a further copy of its campaign
(the scan and the checks of other readers redone only where it differs,
``docs/rewriting.md`` "A campaign's copies").  This measures the relay on such mail.

Phases (each ``--rounds`` times, alternating; a fresh relay or Postfix and a fresh
``smtp-sink`` each run):

* ``same``: beacon-proxy; each message has its own ``To``, ``Message-ID`` and
  ``X-Bench-Id`` over one body (the soak's messages, ``bench/_smtpload.py``);
* ``links``: beacon-proxy; each message also has its own token in the first
  ``--links`` product links of the HTML part and in a line of its text (as
  ``bench/personal_links.py`` makes them);
* ``postfix``: a temporary Postfix relaying to ``smtp-sink`` (``bench/_postfix.py``;
  needs root), the ``links`` messages: the hop the relay is compared with.

One sender for all three, in this process (uvloop when installed): ``--connections``
connections, each sending its next message once the one before was answered
(pipelining ``MAIL``/``RCPT``/``DATA`` where offered) and replaced by a new one after
``--per-connection`` messages (the relay's worker processes take connections, and each
delivers what came in on its own: with connections kept for the whole run, one worker
could be left with the larger share and finish alone), every recipient a numbered one
nobody granted (each copy stripped).  A run is timed from the first connection until
``smtp-sink`` has every message; the relay's (or Postfix's) CPU, the sender's and the
sink's are counted apart.  For beacon-proxy the run also shows how its copies went
(``beacon_proxy_copies_total``) and where its analyses came from
(``beacon_proxy_analyses_total``).

``--soak-seconds S``: then the ``links`` messages through a fresh relay for ``S``
seconds at a fixed rate (``--soak-rate``, or ``--soak-fraction`` of the median ``links``
rate just measured), DKIM off as in the phases, into ``bench/_capture.py``: the soak of
``bench/relay.py`` (``bench/_relaysoak.py``: an open-loop sender on
``--soak-connections`` connections kept for the whole soak, the RSS of the relay's
process tree every ``--rss-every`` seconds, its analysis workers included) with the
same verdicts: the rate held, p99 accept-to-deliver under 1 s, RSS flat, every message
accepted and delivered.  Every message is a body the relay has not seen, so what it
keeps per body (analyses, scan templates, footer plans, the checks of other readers)
must stay bounded.  Exit status: 0 done (and every soak verdict held), 1 a soak
verdict failed, 2 the benchmark failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from _beacon import metric
from _postfix import PostfixHop, postfix_available
from _proc import BenchError, cpu_seconds, tree_cpu_split
from _relaysoak import SoakSpec, add_soak_options
from _sink import Sink, sink
from _smtpload import _MESSAGE_ID, _TO, SmtpClient, dot_stuff
from newsletter import newsletter
from personal_links import _LINK
from relay import Settings, beacon_proxy, phase_soak

from beacon_proxy.eventloop import loop_factory

__all__ = ["PHASES", "PersonalTemplate", "main"]

PHASES = ("same", "links", "postfix")
_HOLE = b"\x00"
_SENDER = "news@shop.example"
_OUTCOMES = ("stripped", "fallback", "held", "rewritten", "unscanned")
_SOURCES = ("known", "header", "inline", "pool", "failed")


class PersonalTemplate:
    """The newsletter as DATA bytes with holes for message ``n`` 's number: in its
    ``X-Bench-Id``, ``To`` and ``Message-ID``, and with ``links``, in the first
    ``links`` product links and a line of text before ``</body>``.

    >>> t = PersonalTemplate(b"To: rcpt@example.net\\r\\nMessage-ID: "
    ...                      b"<20250320093000.8f3b21@mailer.shop.example>\\r\\n\\r\\n"
    ...                      b'<a href=3D"https://shop.example/p/1">x</a></body>\\r\\n.end\\r\\n',
    ...                      links=1)
    >>> print(t.render(7).decode())  # doctest: +NORMALIZE_WHITESPACE
    X-Bench-Id: 7
    To: s7@example.org
    Message-ID: <soak-7@mailer.shop.example>
    <BLANKLINE>
    <a href=3D"https://shop.example/p/71">x</a><p>7</p></body>
    ..end
    .
    >>> t.size(7) == len(t.render(7)) - len(b".\\r\\n") - 1  # (one period stuffed)
    True
    """

    def __init__(self, body: bytes, links: int = 0) -> None:
        if _HOLE in body or _TO not in body or _MESSAGE_ID not in body:
            raise ValueError("not the benchmark's newsletter: nothing to personalise")
        if body.count(_LINK) < links or (links and b"</body>" not in body):
            raise ValueError(f"the newsletter has fewer than {links} product links")
        marked = (b"X-Bench-Id: " + _HOLE + b"\r\n"
                  + body.replace(_TO, b"To: s" + _HOLE + b"@example.org", 1)
                  .replace(_MESSAGE_ID, b"<soak-" + _HOLE + b"@mailer.shop.example>", 1))
        if links:
            marked = marked.replace(_LINK, _LINK + _HOLE, links).replace(
                b"</body>", b"<p>" + _HOLE + b"</p></body>", 1)
        # The holes are digits inside a line: they start none, so the stuffing holds.
        self._pieces = dot_stuff(marked).split(_HOLE)
        self._size = len(marked) - marked.count(_HOLE)  # RFC 1870: before the stuffing

    def size(self, n: int) -> int:
        """Message ``n`` 's size: for MAIL's SIZE= parameter."""
        return self._size + (len(self._pieces) - 1) * len(b"%d" % n)

    def parts(self, n: int) -> list[bytes]:
        """Message ``n`` 's DATA bytes in pieces, for ``writelines``."""
        num = b"%d" % n
        out = [self._pieces[0]]
        for piece in self._pieces[1:]:
            out += (num, piece)
        return out

    def render(self, n: int) -> bytes:
        return b"".join(self.parts(n))

    @staticmethod
    def rcpt(n: int) -> bytes:
        return b"RCPT TO:<s%d@example.org>\r\n" % n


@dataclass
class Run:
    phase: str
    seconds: float
    target_cpu_s: float
    sender_cpu_s: float
    sink_cpu_s: float
    copies: dict[str, float] = field(default_factory=dict)
    analyses: dict[str, float] = field(default_factory=dict)


async def _send_all(port: int, template: PersonalTemplate, numbers: Sequence[int],
                    connections: int, per_connection: int, timeout: float) -> None:
    """Every message of ``numbers`` over ``connections`` connections at a time, each
    taking the next number once its last message was answered, and ending after
    ``per_connection`` messages (a new one opens in its place)."""
    todo = iter(numbers)

    async def one() -> None:
        while True:
            batch = list(itertools.islice(todo, per_connection))
            if not batch:
                return
            client = await SmtpClient.connect("127.0.0.1", port, _SENDER, timeout)
            try:
                for n in batch:
                    await client.send(template.rcpt(n), template.parts(n), template.size(n))
            finally:
                await client.quit()

    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(one())


def _run(phase: str, target_port: int, target_root: int, snk: Sink,
         template: PersonalTemplate, numbers: Sequence[int], a: argparse.Namespace) -> Run:
    """Send ``numbers`` to the target and wait until the sink has them all."""
    target0, sink0 = sum(tree_cpu_split(target_root)), cpu_seconds(snk.proc.pid)
    sender0, t0 = time.process_time(), time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory("auto")[0]) as runner:
        runner.run(_send_all(target_port, template, numbers, a.connections,
                             a.per_connection, a.timeout))
    sender = time.process_time() - sender0
    deadline = time.monotonic() + a.timeout
    while snk.received() < len(numbers):
        if time.monotonic() > deadline:
            raise BenchError(f"{phase}: smtp-sink got {snk.received()} of {len(numbers)} "
                             f"messages within {a.timeout:.0f} s")
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    return Run(phase, seconds, sum(tree_cpu_split(target_root)) - target0, sender,
               cpu_seconds(snk.proc.pid) - sink0)


@contextlib.contextmanager
def _target(phase: str, st: Settings, tag: str, upstream: int
            ) -> Iterator[tuple[int, int, int | None]]:
    """(SMTP port, root pid, web port or None) of a fresh relay or Postfix hop."""
    if phase == "postfix":
        with PostfixHop(st.workdir / f"postfix-{tag}", upstream) as hop:
            assert hop.master_pid is not None
            yield hop.port, hop.master_pid, None
    else:
        with beacon_proxy(st, tag, upstream, dkim=False) as bp:
            yield bp.smtp_port, bp.proc.pid, bp.web_port


def _phase(phase: str, st: Settings, tag: str, templates: dict[str, PersonalTemplate],
           numbers: Sequence[int], a: argparse.Namespace) -> Run:
    template = templates["same" if phase == "same" else "links"]
    with sink(st.workdir, 30) as snk, _target(phase, st, tag, snk.port) as (port, root, web):
        run = _run(phase, port, root, snk, template, numbers, a)
        if web is not None:
            run.copies = {o: metric(web, "beacon_proxy_copies_total", f'{{outcome="{o}"}}')
                          for o in _OUTCOMES}
            run.analyses = {s: metric(web, "beacon_proxy_analyses_total", f'{{source="{s}"}}')
                            for s in _SOURCES}
    return run


def _counts(counts: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.0f}" for k, v in counts.items() if v) or "-"


def report(runs: Sequence[Run], messages: int, links: int) -> None:
    print(f"~70 KB newsletter, {messages} messages a run, one recipient each (refused: "
          f"every copy stripped); links: a token in {links} links and a line of text")
    print(f"{'phase':<8} {'run':>3} {'seconds':>8} {'msg/s':>7} {'target CPU ms/msg':>17} "
          f"{'sender':>7} {'sink':>6}  copies; analyses")
    for n, run in enumerate(runs):
        per = 1000 / messages
        print(f"{run.phase:<8} {n // len({r.phase for r in runs}) + 1:>3} {run.seconds:>8.2f} "
              f"{messages / run.seconds:>7.1f} {run.target_cpu_s * per:>17.2f} "
              f"{run.sender_cpu_s * per:>7.2f} {run.sink_cpu_s * per:>6.2f}  "
              f"{_counts(run.copies)}; {_counts(run.analyses)}")
    rate = {p: statistics.median(messages / r.seconds for r in runs if r.phase == p)
            for p in PHASES if any(r.phase == p for r in runs)}
    cpu = {p: statistics.median(1000 * r.target_cpu_s / messages for r in runs if r.phase == p)
           for p in rate}
    print("medians: " + ", ".join(f"{p} {rate[p]:.1f} msg/s at {cpu[p]:.2f} CPU ms/msg"
                                  for p in rate))
    for num, den in (("links", "same"), ("links", "postfix"), ("same", "postfix")):
        if num in rate and den in rate:
            cpu_ratio = f"{cpu[num] / cpu[den]:.2f}x" if cpu[den] else "-"  # (a tick: 10 ms)
            print(f"{num} / {den}: {rate[num] / rate[den]:.2f}x the messages a second, "
                  f"{cpu_ratio} the CPU a message")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--links", type=int, default=30)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--per-connection", type=int, default=20,
                    help="messages a connection sends before the sender opens another")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--analysis-workers", type=int,
                    help="beacon-proxy's [policy] analysis_workers (default: its own)")
    ap.add_argument("--in-flow-delay", type=float,
                    help="beacon-proxy's [smtp] in_flow_delay (default: its own, 1 s)")
    add_soak_options(ap, seconds=0.0,
                     seconds_help="then a soak of the links messages this long (default 0: none)",
                     fraction_help="soak at this share of the median links rate (default 0.8)")
    a = ap.parse_args(argv)
    phases = [p for p in a.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        ap.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if min(a.messages, a.connections, a.rounds, a.per_connection, a.soak_connections) < 1:
        ap.error("--messages, --connections, --per-connection, --soak-connections and "
                 "--rounds must be at least 1")
    if a.soak_seconds < 0 or a.rss_every <= 0 or a.soak_fraction <= 0 \
            or (a.soak_rate is not None and a.soak_rate <= 0):
        ap.error("--soak-seconds must be 0 or more, --soak-rate, --soak-fraction and "
                 "--rss-every more than 0")
    if a.soak_seconds and a.soak_rate is None and "links" not in phases:
        ap.error("the soak: give --soak-rate or run phase links (its rate sets the soak's)")
    if "postfix" in phases and (why := postfix_available()) is not None:
        print(f"phase postfix skipped: {why}", file=sys.stderr)
        phases.remove("postfix")
    body = newsletter().replace(b"\n", b"\r\n")
    try:
        templates = {"same": PersonalTemplate(body), "links": PersonalTemplate(body, a.links)}
    except ValueError as exc:
        ap.error(str(exc))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-personal-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # smtp-sink (nobody) and Postfix's daemons reach their dirs below
        st = Settings(messages=a.messages, sessions=a.connections, message_file=work / "-",
                      workdir=work, timeout=a.timeout, reuse=True, profile=None)
        if a.analysis_workers is not None:
            st = replace(st, analysis_workers=a.analysis_workers)
        if a.in_flow_delay is not None:
            st = replace(st, in_flow_delay=a.in_flow_delay)
        try:
            for r in range(a.rounds):
                for phase in phases:
                    print(f"round {r + 1}: {phase} ...", flush=True)
                    first = (r * len(phases) + phases.index(phase)) * a.messages + 1
                    runs.append(_phase(phase, st, f"{phase}-{r}", templates,
                                       range(first, first + a.messages), a))
            if runs:
                report(runs, a.messages, a.links)
            held = True
            if a.soak_seconds:
                held = _soak(st, templates["links"], runs, a)
        except (BenchError, OSError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
    return 0 if held else 1


def _soak(st: Settings, template: PersonalTemplate, runs: Sequence[Run],
          a: argparse.Namespace) -> bool:
    """The soak of the links messages (see the module docstring); True when it held."""
    if a.soak_rate is not None:
        rate, label = a.soak_rate, "(--soak-rate)"
    else:
        links = statistics.median(a.messages / r.seconds for r in runs if r.phase == "links")
        rate, label = a.soak_fraction * links, f"({a.soak_fraction:g} x links' {links:.1f} msg/s)"
    spec = SoakSpec(a.soak_seconds, rate, a.soak_connections, a.rss_every,
                    label=f"{label}, DKIM off, a token in {a.links} links of every message")
    print(f"soak: {a.soak_seconds:.0f} s at {rate:.1f} msg/s ...", flush=True)
    return phase_soak(st, spec, dkim=False, messages=template)


if __name__ == "__main__":
    sys.exit(main())
