"""The benchmark's recipients, their open tokens, and what the store must record for them.

``population()`` splits ``n`` addresses 80/10/5/5 into granted, refused,
unknown (no consent record: the default policy refuses) and "forged only"
(granted, but every token sent for them is forged: minted with another
secret, or a valid token with one character changed), and mints one open
token per recipient with the server's secret exactly as the relay does.
After the load, ``wait_recorded()`` polls the store until the number of
opens stops changing, and ``check_opens()`` compares it with what was sent:
a granted recipient that was hit should have an open (per-token rate limits
may record fewer opens than hits), the others must have none.
"""

from __future__ import annotations

import asyncio
import csv
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from beacon_proxy.consent.store import open_store  # noqa: E402
from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity  # noqa: E402

__all__ = ["OpenCheck", "Population", "Recorded", "check_opens", "population", "wait_recorded"]

LIST_ID = "news.example.org"
QUEUE_ID = "BENCHQUEUEID0001"
TRACKER = "https://tracker.example.net/open.gif?u={i}"


@dataclass
class Population:
    """Who is seeded with what consent, and the open-pixel paths that point at them."""

    granted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # no consent record
    forged_only: list[str] = field(default_factory=list)  # granted, but only forged tokens
    valid_paths: dict[str, str] = field(default_factory=dict)  # path -> recipient
    forged_paths: list[str] = field(default_factory=list)
    mix: list[str] = field(default_factory=list)  # every path once, shuffled

    def write_csv(self, path: Path) -> None:
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["address", "beacons", "source"])
            for addr in [*self.granted, *self.forged_only]:
                w.writerow([addr, "granted", "bench"])
            for addr in self.refused:
                w.writerow([addr, "refused", "bench"])


def _tamper(token: str, rng: random.Random) -> str:
    """The token with one character in its ciphertext changed (still base64url)."""
    pos = rng.randrange(len(token) // 2, len(token) - 1)  # never the last: keep it canonical
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    new = rng.choice(alphabet.replace(token[pos], ""))
    return token[:pos] + new + token[pos + 1:]


def population(recipients: int, secret: str, seed: int = 7) -> Population:
    """``recipients`` addresses split 80/10/5/5 and one open-pixel path each."""
    if recipients < 20:
        raise ValueError("--recipients must be at least 20")
    rng = random.Random(seed)
    tokens = Tokens([secret])
    stranger = Tokens([f"not-the-server-secret-{secret}"])
    pop = Population()
    groups = (pop.granted, pop.refused, pop.unknown, pop.forged_only)
    shares = (0.80, 0.10, 0.05, 0.05)
    bounds = [round(sum(shares[:k + 1]) * recipients) for k in range(len(shares))]
    for i in range(recipients):
        group = next(k for k, b in enumerate(bounds) if i < b)
        groups[group].append(f"reader{i:06d}@bench-{i % 7}.example.org")
    forged_only = frozenset(pop.forged_only)
    for i, addr in enumerate([*pop.granted, *pop.refused, *pop.unknown, *pop.forged_only]):
        claims = Claims(Purpose.OPEN, addr, LIST_ID, QUEUE_ID,
                        url_identity(TRACKER.format(i=i)))
        if addr in forged_only:
            token = (stranger.mint(claims) if i % 2 else _tamper(tokens.mint(claims), rng))
            pop.forged_paths.append(f"/o/{token}")
        else:
            pop.valid_paths[f"/o/{tokens.mint(claims)}"] = addr
    pop.mix = [*pop.valid_paths, *pop.forged_paths]
    rng.shuffle(pop.mix)
    return pop




@dataclass
class Recorded:
    total: int
    machine: int
    by_address: Counter[str]
    settled_s: float
    stable: bool


async def _count_opens(url: str) -> tuple[int, int, Counter[str]]:
    store = open_store(url, pool_size=1)
    await store.open()
    try:
        by, machine, after = Counter[str](), 0, None
        for _ in range(100_000):  # bounded: 1000 per page
            page = await store.opens(after=after, limit=1000)
            for e in page.items:
                by[e.address.lower()] += 1
                machine += e.machine
            if page.next is None:
                break
            after = page.next
        return sum(by.values()), machine, by
    finally:
        await store.close()


def wait_recorded(url: str, settle: float, limit: float) -> Recorded:
    """Poll the store until the open count has not changed for ``settle`` seconds."""
    t0 = time.monotonic()
    last, since = -1, t0
    while True:
        total, machine, by = asyncio.run(_count_opens(url))
        now = time.monotonic()
        if total != last:
            last, since = total, now
        elif now - since >= settle:
            return Recorded(total, machine, by, since - t0, True)
        if now - t0 > limit:
            return Recorded(total, machine, by, now - t0, False)
        time.sleep(0.25)


@dataclass
class OpenCheck:
    backend: str
    recorded: Recorded
    granted_hit: int  # granted recipients whose valid token was requested at least once
    granted_requests: int
    granted_recorded: int  # of those, with at least one open recorded
    leaked: dict[str, int]  # group -> opens recorded for recipients that must have none


def check_opens(backend: str, pop: Population, result_count: int, rec: Recorded) -> OpenCheck:
    sent = [pop.mix[i % len(pop.mix)] for i in range(result_count)]
    granted = set(pop.granted)
    hits = Counter(pop.valid_paths[p] for p in sent if p in pop.valid_paths)
    hit_granted = {a for a in hits if a in granted}
    leaked = {name: sum(rec.by_address[a] for a in group)
              for name, group in (("refused", pop.refused), ("unknown", pop.unknown),
                                  ("forged", pop.forged_only))}
    known = {*pop.granted, *pop.refused, *pop.unknown, *pop.forged_only}
    leaked["strangers"] = sum(n for a, n in rec.by_address.items() if a not in known)
    return OpenCheck(backend, rec, len(hit_granted), sum(hits[a] for a in hit_granted),
                     sum(1 for a in hit_granted if rec.by_address[a]), leaked)
