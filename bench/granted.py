#!/usr/bin/env python3
"""CPU per copy of the footer step, granted copies against refused ones.

    python bench/granted.py [--messages 400] [--rounds 3] [--base DIR] [--pairs 3]

On the 70 KB quoted-printable newsletter (``bench/newsletter.py``), one message
prepared by the beacon step (``BeaconStep``, no other steps), then for
``--messages`` recipients each:

* ``render granted``: the beacon step's granted copy (open-pixel tokens minted);
* ``footer granted``: the footer step of that copy (its bytes differ from every
  other copy's: a plan of its own, or one derived from its shape's first copy);
* ``footer refused``: the footer step of the refused copy (the same bytes for every
  recipient: the kept plan), for comparison.

The preference link is a constant (``bench/render.py`` times minting it).  Shown:
CPU ms per copy (``time.process_time``, best of ``--rounds`` rounds after a
warm-up).  ``--base DIR``: the same in child processes with ``PYTHONPATH=DIR``
(e.g. a frozen copy of main) and this tree in turn, ``--pairs`` times.
"""

from __future__ import annotations

import asyncio
import time

from _pairs import main_per_copy
from newsletter import newsletter

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

DATA = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
NAMES = ("render granted", "footer granted", "footer refused")
PREFS = "https://prefs.example.com/u/AAECAwQFBgcICQoLDA0ODw"


def measure(messages: int, rounds: int) -> dict[str, float]:
    step = BeaconStep(Engine(load_rules()), Tokens(["bench secret 0123456789abcdef"]),
                      public_url="https://prefs.example.com", hostname="relay.example",
                      steps=())
    env = Envelope("Q1", "news@shop.example", ("a@example.org",), list_id="news.shop.example",
                   received_at=time.time())
    prepared = asyncio.run(step.prepare(env, DATA))
    footer = Footer(lambda recipient: PREFS)
    best: dict[str, list[float]] = {name: [] for name in NAMES}
    first = 0
    for n in range(rounds + 1):  # the first round warms up
        rcpts = [f"reader{i}@example.org" for i in range(first, first + messages)]
        first += messages
        results = []
        for policy in (Policy.GRANTED, Policy.REFUSED):
            start = time.process_time()
            copies = [prepared.render(r, policy) for r in rcpts]
            render = (time.process_time() - start) / messages * 1e3
            recipients = [Recipient(env, r, policy, DATA) for r in rcpts]
            start = time.process_time()
            for copy, recipient in zip(copies, recipients, strict=True):
                footer(copy, recipient)
            results.append((render, (time.process_time() - start) / messages * 1e3))
        if n:
            (render, granted), (_, refused) = results
            for name, value in zip(NAMES, (render, granted, refused), strict=True):
                best[name].append(value)
    return {name: min(values) for name, values in best.items()}


def main() -> None:
    main_per_copy(__file__, __doc__, NAMES, measure)


if __name__ == "__main__":
    main()
