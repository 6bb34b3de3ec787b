#!/usr/bin/env python3
"""The delivery side of a phase c message in one process, stage by stage.

    PYTHONPATH=TREE python bench/delivery_stages.py [--messages 1000]

What ``bench/relay.py`` phase c makes the delivery worker do per message, without
the sockets: the envelope's stored JSON (``Envelope.to_json``, the spool put's
record), the decision lookup (a SQLite store, a new recipient each time: a miss),
``BeaconStep.prepare`` (known-bytes cache, campaign diffing on the same store), the
refused copy (``render``: the relay's copy steps) and the courier's pieces
(``wire_pieces``).  The ~70 KB newsletter of ``bench/newsletter.py``, a fresh bytes
object per message.  Printed: the main thread's CPU (``time.thread_time``) per
message and stage, in microseconds, the best of three runs of ``--messages``.

Why: ``bench/cpusample`` samples on a timer of the whole process's CPU, and its
handler runs in the main thread right after it takes the GIL back, so the frames
that release the GIL (a SQLite statement, ``PRAGMA data_version``) collect weight
that was spent elsewhere (docs/performance.md, round 8, wt-deliv3).  This prices
the stages directly.  Compare trees by running it with each tree's ``PYTHONPATH``,
alternately: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("to_json", "decisions", "prepare", "render", "wire")


async def run(messages: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from newsletter import newsletter

    from beacon_proxy.app import copy_steps
    from beacon_proxy.config import Config
    from beacon_proxy.consent.policy import policy_of
    from beacon_proxy.consent.sqlite import SqliteStore
    from beacon_proxy.deliver.smtp import wire_pieces
    from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
    from beacon_proxy.rewrite.diffing import CampaignDiffing
    from beacon_proxy.rewrite.engine import Engine
    from beacon_proxy.rewrite.known import AnalysisCache, cached
    from beacon_proxy.rewrite.rules import load_rules
    from beacon_proxy.spool.envelope import Envelope
    from beacon_proxy.tokens import Tokens

    data = newsletter().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    clock = time.thread_time
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "c.db") as store:
            engine = Engine(load_rules())
            tokens = Tokens(["bench secret 0123456789abcdef"])
            step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                              hostname="relay.example",
                              campaigns=CampaignDiffing(store, hold=0),
                              steps=copy_steps(Config(), tokens, hostname="relay.example"))
            step.cache = AnalysisCache(engine.fingerprint)
            step.analyse = cached(inline_analyse(engine), step.cache)
            spent = dict.fromkeys(STAGES, 0.0)

            async def one(i: int) -> None:
                rcpt = f"reader{i}@example.org"
                env = Envelope(f"Q{i}", "news@shop.example", (rcpt,),
                               list_id="news.shop.example",
                               one_click="https://shop.example/u/1")
                message = bytes(bytearray(data))
                t0 = clock()
                env.to_json()
                t1 = clock()
                found = await store.decisions([rcpt], env.list_id)
                t2 = clock()
                prepared = await step.prepare(env, message)
                t3 = clock()
                copy = prepared.render(rcpt, policy_of(found[rcpt]))
                t4 = clock()
                wire_pieces(copy.data, copy.crlf, copy.dots)
                t5 = clock()
                for name, used in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                      strict=True):
                    spent[name] += used

            for i in range(100):  # warm-up: the analysis, the campaign learns and freezes
                await one(i)
            best = dict.fromkeys(STAGES, float("inf"))
            for r in range(3):
                spent.update(dict.fromkeys(STAGES, 0.0))
                for i in range(messages):
                    await one(100_000 * (r + 1) + i)
                for name in STAGES:
                    best[name] = min(best[name], spent[name] / messages * 1e6)
            return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    best = asyncio.run(run(min(max(args.messages, 1), 20_000)))
    print("  ".join(f"{name} {best[name]:.1f}" for name in STAGES)
          + f"  total {sum(best.values()):.1f}  (us of main-thread CPU per message)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
