#!/usr/bin/env python3
"""CPU per message of the relay's per-copy work for an identical-bytes newsletter.

    python bench/hotpath.py [--messages 300] [--rounds 3]

What a delivery worker does for each message of a newsletter sent as one
message per recipient, once the bytes are known (rewrite/known.py): the
known-bytes lookup (``BeaconStep.prepare`` behind an ``AnalysisCache``), the
refused recipient's copy (``render``: the beacon step, footer, unsubscribe and
trace headers, and with DKIM on an RSA-2048 signature) and the courier's DATA
section (``wire_data``, given the copy's ``crlf`` and ``dots`` proofs where this
build has them).  Each message is a fresh bytes object with the newsletter's bytes, as
the spool hands them over.  Campaign diffing, the consent lookup, the spool
and the sockets are left out: ``bench/relay.py`` measures the whole relay.

Shown: CPU ms per message (this process's ``time.process_time``, best of
``--rounds`` rounds of ``--messages`` after a warm-up), DKIM off and on.  To
compare two builds, run it with ``PYTHONPATH`` at each in turn, alternating
(docs/performance.md, "The hot path of an identical-bytes newsletter").
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time

from cryptography.hazmat.primitives.asymmetric import rsa
from newsletter import newsletter

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.known import AnalysisCache, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import CopyStep
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

DATA = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
# The copy's proofs the courier takes in this build (Copy.crlf, then Copy.dots; older: none).
PROOFS = [name for name in ("crlf", "dots") if name in inspect.signature(wire_data).parameters]


def _step(engine: Engine, key: rsa.RSAPrivateKey | None) -> BeaconStep:
    tokens = Tokens(["bench secret 0123456789abcdef"])
    steps: list[CopyStep] = [*copy_steps(Config(), tokens, hostname="relay.example")]
    if key is not None:  # as copy_steps with [dkim] keys: the signer instead of the
        # line-end proof (CrlfProof, in builds that have it), which it makes itself
        steps = [s for s in steps if type(s).__name__ != "CrlfProof"]
        steps.append(DkimSigner([SigningKey("shop.example", "bench", key)]))
    step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                      hostname="relay.example", steps=steps)
    step.cache = AnalysisCache(engine.fingerprint)
    step.analyse = cached(inline_analyse(engine), step.cache)
    return step


async def _round(step: BeaconStep, messages: int) -> float:
    """CPU ms per message for ``messages`` messages (fresh bytes objects, equal bytes)."""
    received = [bytes(bytearray(DATA)) for _ in range(messages)]
    start = time.process_time()
    for i, data in enumerate(received):
        rcpt = f"reader{i}@example.org"
        env = Envelope(f"Q{i}", "news@shop.example", (rcpt,), list_id="news.shop.example")
        copy = (await step.prepare(env, data)).render(rcpt, Policy.REFUSED)
        wire_data(copy.data, *(getattr(copy, name) for name in PROOFS))
    return (time.process_time() - start) / messages * 1e3


async def _main(messages: int, rounds: int) -> None:
    engine = Engine(load_rules())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    shown = []
    for name, signing in (("DKIM off", None), ("DKIM on", key)):
        step = _step(engine, signing)
        await _round(step, 50)  # warm-up: the analysis, caches
        best = min([await _round(step, messages) for _ in range(rounds)])
        shown.append(f"{name} {best:.3f}")
    print("CPU ms/msg: " + ", ".join(shown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.messages, args.rounds))


if __name__ == "__main__":
    main()
