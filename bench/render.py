#!/usr/bin/env python3
"""CPU per copy of what a known newsletter repeats per copy: footer, campaign key, link.

    python bench/render.py [--messages 400] [--rounds 3] [--base DIR] [--pairs 3]

On the 70 KB quoted-printable newsletter (``bench/newsletter.py``), each message a
fresh bytes object with equal bytes and its own recipient:

* ``footer``: the footer step of a refused copy (kept plan, the recipient's link);
* ``observe``: ``CampaignDiffing.observe`` of a campaign whose memory is full
  (frozen: no store access), with the analysis the known-bytes cache hands over;
* ``mint``: the preference link (``PreferenceLinks``: one AES-SIV token).

Shown: CPU ms per copy (``time.process_time``, best of ``--rounds`` rounds after a
warm-up).  ``--base DIR``: the same in child processes with ``PYTHONPATH=DIR``
(e.g. ``/work/main``) and this tree in turn, ``--pairs`` times, with the ratio.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable

from _pairs import main_per_copy
from newsletter import newsletter

from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.rewrite.diffing import CampaignDiffing
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.links import PreferenceLinks
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

DATA = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
NAMES = ("footer", "observe", "mint")


def _recipients(first: int, count: int) -> list[Recipient]:
    out = []
    for n in range(first, first + count):
        rcpt = f"reader{n}@example.org"
        env = Envelope(f"Q{n}", "news@shop.example", (rcpt,), list_id="news.shop.example",
                       received_at=time.time())
        out.append(Recipient(env, rcpt, Policy.REFUSED))
    return out


def _timed(run: Callable[[], object], count: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) / count * 1e3


async def measure(messages: int, rounds: int) -> dict[str, float]:
    links = PreferenceLinks(Tokens(["bench secret 0123456789abcdef"]), "https://prefs.example.com")
    footer = Footer(links)
    analysis = Engine(load_rules()).analyse(DATA)
    best: dict[str, list[float]] = {name: [] for name in NAMES}
    with tempfile.TemporaryDirectory() as tmp:
        async with open_store(f"sqlite:///{tmp}/consent.db") as store:
            diffing = CampaignDiffing(store, learn=2)
            for rcpt in _recipients(0, 2):  # the memory fills up: frozen
                await diffing.observe(rcpt.envelope, DATA, analysis)
            first = 2
            for n in range(rounds + 1):  # the first round warms up
                rcpts = _recipients(first, messages)
                first += messages
                copies = [Copy(bytes(bytearray(DATA))) for _ in rcpts]

                def steps(c: list[Copy] = copies, r: list[Recipient] = rcpts) -> None:
                    for copy, rcpt in zip(c, r, strict=True):
                        links(rcpt)  # the unsubscribe header's, as in the relay
                        footer(copy, rcpt)

                def mints(r: list[Recipient] = rcpts) -> None:
                    for rcpt in r:
                        links._mint(rcpt)

                start = time.process_time()
                for rcpt in rcpts:
                    await diffing.observe(rcpt.envelope, DATA, analysis)
                observe = (time.process_time() - start) / messages * 1e3
                mint = _timed(mints, messages)
                step = _timed(steps, messages) - mint
                if n:
                    for name, value in zip(NAMES, (step, observe, mint), strict=True):
                        best[name].append(value)
    return {name: min(values) for name, values in best.items()}


def main() -> None:
    main_per_copy(__file__, __doc__, NAMES,
                  lambda messages, rounds: asyncio.run(measure(messages, rounds)))


if __name__ == "__main__":
    main()
