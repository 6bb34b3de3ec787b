#!/usr/bin/env python3
"""CPU per copy of a message to many recipients, in one process: the delivery side.

    python bench/copies.py [--recipients 1000] [--messages 4] [--granted-share F]
                           [--dkim [--dkim-key PEM]] [--base DIR] [--pairs 3]

What one of the relay's delivery workers does for each recipient of a 1000-recipient
newsletter (``bench/relay.py --phases c-rcpt``), without the receiving side and
without the other processes of that phase: the real ``Scheduler`` with one
delivery worker, the ``Spool`` (its journal thread), the beacon step and the copy
steps ``app.copy_steps`` wires (footer, unsubscribe headers, ``Received``, the
line-end proof or, with ``--dkim``, an RSA-2048 signature: a fresh key, or the PEM
``--dkim-key`` names, e.g. for callgrind, where a key search's varying cost would show),
the JSON log lines
(to a file, one ``write`` each, as a worker writes them) and ``SmtpCourier``
(pipelined, one transaction per copy) into ``smtp-sink`` on uvloop.  The consent
lookup is a stub: every recipient refused, or ``--granted-share`` of them granted.

Shown: CPU ms per copy (``time.process_time``: every thread of this process, user
and system; smtp-sink's share is not counted) of each message after a warm-up
message, the median and the spread.  ``--base DIR``: the same in child processes with
``PYTHONPATH=DIR`` (e.g. a ``git archive`` of main) and this tree in turn, ``--pairs``
times: compare within a pair, on a machine shared with other work the absolute
figures move by more than the differences looked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from _sink import Sink
from newsletter import newsletter

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Decision
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.deliver.scheduler import Scheduler
from beacon_proxy.deliver.smtp import SmtpCourier
from beacon_proxy.eventloop import loop_factory
from beacon_proxy.log import setup_logging
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.known import AnalysisCache, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import CopyStep
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import Spool
from beacon_proxy.tokens import Tokens

DATA = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
HERE = Path(__file__).resolve().parent
ONE_CLICK = "https://shop.example/unsubscribe?list=news&u=1234567890"


class _Consent:
    """Every ``1 / share``-th recipient granted (none at 0), the others refused."""

    def __init__(self, share: float) -> None:
        self.share = share

    async def decisions(self, recipients: Sequence[str], list_id: str | None
                        ) -> Mapping[str, Decision]:
        out = {}
        for n, rcpt in enumerate(recipients, 1):
            granted = int(n * self.share) > int((n - 1) * self.share)
            out[rcpt] = Decision.GRANTED if granted else Decision.REFUSED
        return out


def _steps(tokens: Tokens, dkim: bool, pem: Path | None) -> list[CopyStep]:
    steps: list[CopyStep] = list(copy_steps(Config(), tokens, hostname="relay.example"))
    if dkim:  # as copy_steps with [dkim] keys: the signer instead of the line-end proof
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey

        if pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = load_pem_private_key(pem.read_bytes(), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey), f"{pem}: not an RSA key"
            key = loaded
        steps = [s for s in steps if type(s).__name__ != "CrlfProof"]
        steps.append(DkimSigner([SigningKey("shop.example", "bench", key)]))
    return steps


async def measure(port: int, tmp: Path, recipients: int, messages: int, share: float,
                  dkim: bool, pem: Path | None = None) -> list[float]:
    """CPU ms per copy of each of ``messages`` messages (after one warm-up message)."""
    setup_logging("info", tmp / "relay.log", atomic=True)
    engine = Engine(load_rules())
    tokens = Tokens(["bench secret 0123456789abcdef"])
    step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                      hostname="relay.example", steps=_steps(tokens, dkim, pem))
    step.cache = AnalysisCache(engine.fingerprint)
    step.analyse = cached(inline_analyse(engine), step.cache)
    spool = Spool(tmp / "spool")
    spool.open()

    def courier() -> SmtpCourier:
        return SmtpCourier("127.0.0.1", port, starttls="off", tls_verify=False, timeout=60,
                           helo_name="relay.example")

    scheduler = Scheduler(spool, courier, step, _Consent(share), RetryPolicy(60, 600, 86400),
                          concurrency=1, hostname="relay.example")
    await scheduler.start()
    out = []
    try:
        for n in range(messages + 1):
            env = Envelope(new_queue_id(), "news@shop.example",
                           tuple(f"{n}r{i}@example.net" for i in range(recipients)),
                           received_at=time.time(), client_address="127.0.0.1",
                           client_helo="client.example", list_id="news.shop.example",
                           size=len(DATA), one_click=ONE_CLICK)
            start = time.process_time()
            await scheduler.enqueue(env, DATA)
            deadline = time.monotonic() + 600
            while scheduler.queue_size():
                if time.monotonic() > deadline:
                    raise SystemExit("the copies were not delivered within 600 s")
                await asyncio.sleep(0.005)
            await spool.settled()
            if n:
                out.append((time.process_time() - start) / recipients * 1e3)
    finally:
        await scheduler.stop(5)
        spool.close()
    return out


def run(recipients: int, messages: int, share: float, dkim: bool,
        pem: Path | None = None) -> list[float]:
    factory, _ = loop_factory("auto")  # uvloop when installed, as serve's default
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(Path(tmp))
        try:
            sink.start(10)
            with asyncio.Runner(loop_factory=factory) as runner:
                per_copy = runner.run(measure(sink.port, Path(tmp), recipients, messages,
                                              share, dkim, pem))
            if sink.received() < recipients * (messages + 1):
                raise SystemExit(f"smtp-sink counted {sink.received()} messages, not "
                                 f"{recipients * (messages + 1)}")
        finally:
            sink.proc.terminate()
            sink.proc.wait(10)
    return per_copy


def _child(tree: Path, args: argparse.Namespace) -> list[float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--json",
           "--recipients", str(args.recipients), "--messages", str(args.messages),
           "--granted-share", str(args.granted_share)] + (["--dkim"] if args.dkim else [])
    if args.dkim_key is not None:
        cmd += ["--dkim-key", str(args.dkim_key.resolve())]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=HERE,
                          capture_output=True, text=True, check=True, timeout=1800)
    result: list[float] = json.loads(done.stdout)
    return result


def _shown(values: list[float]) -> str:
    return (f"{statistics.median(values):.4f} "
            f"({min(values):.4f}-{max(values):.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--granted-share", type=float, default=0.0)
    parser.add_argument("--dkim", action="store_true")
    parser.add_argument("--dkim-key", type=Path, help="RSA private key (PEM) for --dkim")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another tree to compare with (PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 <= args.granted_share <= 1 or args.recipients < 1 or args.messages < 1:
        parser.error("--granted-share 0..1, --recipients and --messages >= 1")
    if args.base is None:
        per_copy = run(args.recipients, args.messages, args.granted_share, args.dkim,
                       args.dkim_key)
        print(json.dumps(per_copy) if args.json else f"CPU ms/copy: {_shown(per_copy)}")
        return
    print(f"CPU ms per copy, median (min-max) of {args.messages} messages x "
          f"{args.recipients} recipients, granted share {args.granted_share}, "
          f"DKIM {'on' if args.dkim else 'off'}; base {args.base}, branch {HERE.parent}")
    for pair in range(1, args.pairs + 1):
        load = os.getloadavg()[0]
        old = _child(args.base, args)
        new = _child(HERE.parent, args)
        ratio = statistics.median(new) / statistics.median(old)
        print(f"pair {pair} (load {load:.1f}): base {_shown(old)}  branch {_shown(new)}  "
              f"({ratio:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
