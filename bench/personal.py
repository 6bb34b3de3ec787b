#!/usr/bin/env python3
"""CPU per personalised message: the relay's per-copy work when every message's header differs.

    python bench/personal.py [--messages 300] [--rounds 3] [--base DIR] [--pairs 3]

Real senders personalise the header of every copy of a newsletter (``To``,
``Message-ID``, their own ids: ``bench/_relaysoak.py``'s ``soak_message``), so
no two messages are equal bytes, but their bodies are.  What a delivery worker
does for each such message once the body is known (``rewrite/known.py``): the
analysis lookup and its rebase onto the new header (``BeaconStep.prepare``
behind an ``AnalysisCache`` with ``Engine.rebase``), then one copy (``render``:
the beacon step, footer, unsubscribe and trace headers; DKIM off) for a
refused recipient, or for a granted one (open-pixel tokens: the body differs per
copy too), and the courier's DATA section (``wire_data``); ``refused links``: a refused
copy of messages whose bodies differ too (the recipient's token in 30 links and a line
of text, as click-tracking senders send them: each body is analysed as a further copy
of its campaign and rendered as one seen once).  Each message is a
fresh bytes object.  Campaign diffing, the consent lookup, the spool and the
sockets are left out: ``bench/relay.py`` measures the whole relay.

Shown: CPU ms per message (``time.process_time``, best of ``--rounds`` rounds of
``--messages`` after a warm-up), refused and granted; then the footer step alone
(``footer refused``: the personalised messages themselves as the copies,
``footer granted``: each with its own pixel token as well, a body seen once).
``--base DIR``: the same in child processes, ``PYTHONPATH=DIR`` (e.g.
``/work/main``) and this tree in turn, ``--pairs`` times, each pair printed
with the ratio branch/base.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from pathlib import Path

from _pairs import BRANCH, alternate, pair_parser
from _smtpload import soak_message
from newsletter import newsletter
from personal_links import _copy

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.known import AnalysisCache, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

DATA = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
PROOF = "crlf" in inspect.signature(wire_data).parameters  # builds before Copy.crlf: no
LINKS = 30  # "refused links": the recipient's token in this many links
POLICIES = (("refused", Policy.REFUSED, 0), ("granted", Policy.GRANTED, 0),
            ("refused links", Policy.REFUSED, LINKS))


def _step(engine: Engine) -> BeaconStep:
    tokens = Tokens(["bench secret 0123456789abcdef"])
    step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                      hostname="relay.example",
                      steps=copy_steps(Config(), tokens, hostname="relay.example"))
    step.cache = AnalysisCache(engine.fingerprint)
    step.analyse = cached(inline_analyse(engine), step.cache, engine.rebase)
    return step


def _body(n: int, links: int) -> bytes:
    """The newsletter with message ``n`` 's token in its first ``links`` links and a line
    of text (``bench/personal_links.py``'s copies): a body seen once."""
    return _copy(DATA, n, links) if links else DATA


async def _round(step: BeaconStep, policy: Policy, first: int, messages: int,
                 links: int = 0) -> float:
    """CPU ms per message for ``messages`` personalised messages (numbered from ``first``;
    ``links``: each with its own body, the token in that many links)."""
    received = [soak_message(n, _body(n, links)) for n in range(first, first + messages)]
    start = time.process_time()
    for n, data in enumerate(received, first):
        rcpt = f"s{n}@example.org"
        env = Envelope(f"Q{n}", "news@shop.example", (rcpt,), list_id="news.shop.example")
        copy = (await step.prepare(env, data)).render(rcpt, policy)
        if PROOF:
            wire_data(copy.data, getattr(copy, "crlf", False))
        else:
            wire_data(copy.data)
    return (time.process_time() - start) / messages * 1e3


PIXEL = b"eyJjIjoiMjAyNS1zcHJpbmci"  # in the newsletter's first tracking pixel


def _footer_round(step: Footer, first: int, messages: int, granted: bool) -> float:
    """CPU ms per copy of the footer step alone, for personalised copies."""
    copies = [Copy(soak_message(n, DATA.replace(PIXEL, b"%024d" % n) if granted else DATA))
              for n in range(first, first + messages)]
    rcpt = Recipient(Envelope("Q1", "news@shop.example", ("a@example.org",)),
                     "a@example.org", Policy.REFUSED)
    start = time.process_time()
    for copy in copies:
        step(copy, rcpt)
    return (time.process_time() - start) / messages * 1e3


async def measure(messages: int, rounds: int) -> dict[str, float]:
    """Best CPU ms per message of ``rounds`` rounds, for each policy (this build)."""
    engine = Engine(load_rules())
    out: dict[str, float] = {}
    first = 0
    for name, policy, links in POLICIES:
        step = _step(engine)
        await _round(step, policy, first, 50, links)  # warm-up: the analysis, caches
        first += 50
        best = []
        for _ in range(rounds):
            best.append(await _round(step, policy, first, messages, links))
            first += messages
        out[name] = min(best)
    for name, granted in (("footer refused", False), ("footer granted", True)):
        footer = Footer(lambda r: "https://prefs.example.com/u/AAECAwQFBgcICQoLDA0ODw")
        _footer_round(footer, first, 50, granted)
        first += 50
        best = []
        for _ in range(rounds):
            best.append(_footer_round(footer, first, messages, granted))
            first += messages
        out[name] = min(best)
    return out


def compare(base: Path, messages: int, rounds: int, pairs: int) -> None:
    """Base and this tree alternating in child processes, one line per run and pair."""
    names = [*(name for name, _, _ in POLICIES), "footer refused", "footer granted"]
    print(f"CPU ms per personalised message (best of {rounds} x {messages}); "
          f"base {base}, branch {BRANCH}")
    args = ("--messages", str(messages), "--rounds", str(rounds))
    for pair, load, old, new in alternate(__file__, base, args, pairs):
        cells = "\n  ".join(f"{n} base {old[n]:.3f} branch {new[n]:.3f} "
                          f"saved {(old[n] - new[n]) * 1e3:4.0f} us ({new[n] / old[n]:.2f}x)"
                          for n in names)
        print(f"pair {pair} (load {load:.1f}):\n  {cells}")


def main() -> None:
    args = pair_parser(__doc__, default=300).parse_args()
    if args.base is not None:
        compare(args.base, args.messages, args.rounds, args.pairs)
        return
    result = asyncio.run(measure(args.messages, args.rounds))
    if args.json:
        print(json.dumps(result))
    else:
        print("CPU ms/msg: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
