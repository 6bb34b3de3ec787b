"""Campaign diffing benchmark: what a known campaign adds to each copy.

On the ~70 KB newsletter of ``bench/newsletter.py`` (125 loaded references, one
per-recipient pixel), times what the relay will do per message and per copy
with :mod:`beacon_proxy.rewrite.campaign`: list the loaded references, compute
the campaign key, learn a copy and judge it against a memory that already
knows the campaign, and the render with and without the diffed references.
Also prints the memory's JSON size.  Run: ``python bench/campaign.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from newsletter import newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.campaign import CampaignMemory, campaign_key, loaded, references_at
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules

PIXEL_ID = "eyJjIjoiMjAyNS1zcHJpbmciLCJ1IjoiOGYzYjIxIn0"  # the newsletter's per-recipient part


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Best of five runs, milliseconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds
    engine = Engine(load_rules())
    data = newsletter()
    analysis = engine.analyse(data)
    if PIXEL_ID not in analysis.urls:
        raise SystemExit("bench/newsletter.py changed: update PIXEL_ID")
    refs = loaded(analysis)
    first = [(r.element, r.url) for r in refs]

    def copy(k: int) -> list[tuple[str, str]]:  # another recipient's copy
        return [(e, u.replace(PIXEL_ID, f"r{k:012d}x")) for e, u in first]

    memory = CampaignMemory()
    memory.learn(first)
    memory.learn(copy(0))
    judged = memory.judge(first)
    learner = CampaignMemory()
    learner.learn(first)
    others = [copy(k) for k in range(1, 5 * rounds + 1)]  # every learned copy is new
    fresh = iter(others)
    diffed = references_at(refs, judged)
    print(f"message: {len(data):,} bytes, {len(refs)} loaded references; "
          f"personal by comparison: {sorted(judged.items())}")
    rows = [
        ("loaded(analysis)", lambda: loaded(analysis)),
        ("campaign_key(analysis)", lambda: campaign_key(analysis)),
        ("learn one copy (known campaign)", lambda: learner.learn(next(fresh))),
        ("judge one copy (known campaign)", lambda: memory.judge(first)),
        ("render refused, no campaign info", lambda: engine.render(analysis, None,
                                                                   Policy.REFUSED)),
        ("render refused, diffed", lambda: engine.render(analysis, None, Policy.REFUSED,
                                                         diffed=diffed)),
    ]
    print(f"\n{'step':<40} ms/copy")
    for label, fn in rows:
        print(f"{label:<40} {timed(fn, rounds):7.3f}")
    print(f"\nmemory as JSON: {len(json.dumps(learner.to_json())):,} bytes "
          f"after {learner.copies} copies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
