#!/usr/bin/env python3
"""The passes over a message's bytes on receive and per copy: this checkout against a git ref.

    python bench/passes.py [--baseline main] [--rounds 3] [--messages 400] [--copies 1000]

Three measures, each CPU microseconds (``time.process_time``, the best of three
repetitions inside a child) for the 70 KB newsletter of ``bench/relay.py``
(``bench/newsletter.py``, CRLF line ends):

* ``receive``: what the SMTP side does with a message's DATA: ``read_data`` from a
  stream holding the dot-stuffed bytes and the terminator (the chunked read, the
  canonical form: the bare-LF check, unstuffing), then the handler's checks
  (``header_section``, the bare CR check of the header, ``_not_text``: NUL and
  the long-line check), per message;
* ``1 rcpt``: what delivery does for a one-recipient message of a newsletter sent
  as one message per recipient: ``BeaconStep.prepare`` behind an
  ``AnalysisCache`` (the body key), the refused copy (``render``: beacon step,
  footer, unsubscribe and trace headers, and whatever ``copy_steps`` adds with
  DKIM off) and the courier's DATA section (``wire_data`` with the copy's
  ``crlf`` proof), per message (each a fresh bytes object with equal bytes, as
  the spool hands them over);
* ``1000 rcpt``: one message prepared once, ``--copies`` copies rendered, alternately
  refused and granted, and their DATA sections, per copy.

``--dkim``: the copies are signed, as with ``[dkim]`` keys (the trace header, then
the DKIM step with a fresh RSA-2048 key of the newsletter's ``From`` domain, in
place of the line-end proof), so ``1 rcpt`` is what the relay's phase c-dkim does
per message besides the receive side, the consent lookup and the sockets.

Each tree runs in a child process of its own (``PYTHONPATH`` = this checkout, or
the baseline's ``beacon_proxy`` from ``git archive``, or ``--baseline-tree``),
alternately, ``--rounds`` times each: compare the columns of one run, the machine
is shared.  Bounded: at most 5000 messages and 20 000 copies, 300 s per child.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _baseline import add_arguments, baseline_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD_TIMEOUT = 300.0
MEASURES = ("receive", "1 rcpt", "1000 rcpt")


# -- the child: one tree ---------------------------------------------------------


def _steps(tokens: Any, dkim: bool) -> tuple[Any, ...]:
    """``app.copy_steps`` without ``[dkim]`` keys, or as with one (see the docstring)."""
    from beacon_proxy.app import copy_steps
    from beacon_proxy.config import Config

    if not dkim:
        return copy_steps(Config(), tokens, hostname="relay.example")
    from cryptography.hazmat.primitives.asymmetric import rsa

    from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
    from beacon_proxy.rewrite.step import TraceHeader

    key = SigningKey("shop.example", "bench", rsa.generate_private_key(65537, 2048))
    return (*copy_steps(Config(), tokens, hostname=None), TraceHeader("relay.example"),
            DkimSigner([key]))


def child(messages: int, copies: int, dkim: bool = False) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from newsletter import newsletter

    from beacon_proxy.consent.policy import Policy
    from beacon_proxy.deliver.smtp import wire_data
    from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
    from beacon_proxy.rewrite.engine import Engine
    from beacon_proxy.rewrite.known import AnalysisCache, cached
    from beacon_proxy.rewrite.rules import load_rules
    from beacon_proxy.smtpd import handler
    from beacon_proxy.smtpd.data import read_data
    from beacon_proxy.smtpd.message import has_bare_cr_or_lf, header_section
    from beacon_proxy.spool.envelope import Envelope
    from beacon_proxy.tokens import Tokens

    data = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    wire = b"\r\n..".join(data.split(b"\r\n.")) + b".\r\n"  # as a client sends it

    async def receive() -> float:
        start = time.process_time()
        for _ in range(messages):
            reader = asyncio.StreamReader(limit=2**16)
            reader.feed_data(wire)
            content, _ = await read_data(reader, 10 << 20)
            assert content == data
            header = header_section(content, 64 << 10)
            assert header is not None and not has_bare_cr_or_lf(header)
            assert handler._not_text(content) is None
        return (time.process_time() - start) / messages * 1e6

    engine = Engine(load_rules())
    tokens = Tokens(["bench secret 0123456789abcdef"])
    step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                      hostname="relay.example",
                      steps=_steps(tokens, dkim))
    step.cache = AnalysisCache(engine.fingerprint)
    step.analyse = cached(inline_analyse(engine), step.cache)

    proofs = [name for name in ("crlf", "dots") if name in inspect.signature(wire_data).parameters]

    def send(copy: Any) -> None:  # the copy's proofs, as far as this tree has them
        wire_data(copy.data, *(getattr(copy, name) for name in proofs))

    async def one_rcpt(count: int) -> float:
        received = [bytes(bytearray(data)) for _ in range(count)]
        start = time.process_time()
        for i, message in enumerate(received):
            rcpt = f"reader{i}@example.org"
            env = Envelope(f"Q{i}", "news@shop.example", (rcpt,), list_id="news.shop.example")
            send((await step.prepare(env, message)).render(rcpt, Policy.REFUSED))
        return (time.process_time() - start) / count * 1e6

    async def many_rcpt() -> float:
        rcpts = tuple(f"reader{i}@example.org" for i in range(copies))
        env = Envelope("QM", "news@shop.example", rcpts, list_id="news.shop.example")
        prepared = await step.prepare(env, bytes(bytearray(data)))
        policies = (Policy.REFUSED, Policy.GRANTED)
        start = time.process_time()
        for i, rcpt in enumerate(rcpts):
            send(prepared.render(rcpt, policies[i % 2]))
        return (time.process_time() - start) / copies * 1e6

    async def main() -> dict[str, float]:
        await receive()
        await one_rcpt(50)  # warm-up: the analysis, caches
        results = [(await receive(), await one_rcpt(messages), await many_rcpt())
                   for _ in range(3)]
        return {name: min(r[k] for r in results) for k, name in enumerate(MEASURES)}

    return asyncio.run(asyncio.wait_for(main(), CHILD_TIMEOUT))


# -- the parent ------------------------------------------------------------------


def _run_child(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--messages",
         str(args.messages), "--copies", str(args.copies), *(["--dkim"] if args.dkim else [])],
        env=env, check=True, capture_output=True, text=True, timeout=CHILD_TIMEOUT + 60,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dkim", action="store_true", help="sign the copies (RSA-2048)")
    add_arguments(parser, "the tree to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.messages <= 5000 or not 2 <= args.copies <= 20_000 \
            or not 1 <= args.rounds <= 20:
        parser.error("--messages 1..5000, --copies 2..20000, --rounds 1..20")
    if args.child:
        print(json.dumps(child(args.messages, args.copies, args.dkim)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as tmp:
        if args.baseline_tree is not None:
            baseline, name = args.baseline_tree.resolve(), str(args.baseline_tree)
        else:
            baseline, name = baseline_tree(args.baseline, Path(tmp)), args.baseline
        print(f"passes: {args.messages} messages, {args.copies} copies, {args.rounds} rounds"
              f"{', DKIM (RSA-2048)' if args.dkim else ''} "
              f"alternating; CPU us per message (1000 rcpt: per copy); load "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{'round':<7}{'tree':<9}" + "".join(f"{m:>12}" for m in MEASURES))
        rows: dict[str, list[dict[str, float]]] = {"base": [], "branch": []}
        for n in range(args.rounds):
            order = [("base", baseline), ("branch", REPO)]
            for label, tree in order if n % 2 == 0 else order[::-1]:
                r = _run_child(tree, args)
                rows[label].append(r)
                print(f"{n + 1:<7}{label:<9}" + "".join(f"{r[m]:>12.1f}" for m in MEASURES))
        print(f"base = {name}; branch = {REPO}; load at the end {os.getloadavg()[0]:.2f}")
        for label in rows:
            print(f"{'median':<7}{label:<9}" + "".join(
                f"{statistics.median(r[m] for r in rows[label]):>12.1f}" for m in MEASURES))
        base = {m: statistics.median(r[m] for r in rows["base"]) for m in MEASURES}
        new = {m: statistics.median(r[m] for r in rows["branch"]) for m in MEASURES}
        print(f"{'saved':<16}" + "".join(f"{base[m] - new[m]:>12.1f}" for m in MEASURES))
        print(f"{'branch/base':<16}" + "".join(f"{new[m] / base[m]:>11.2f}x" for m in MEASURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
