"""Rewrite benchmark: beacon-proxy's engine against the obvious implementation.

Both sides take the raw ~70 KB quoted-printable newsletter (bench/newsletter.py:
about 120 product blocks, conditional comments, VML, two pixels) and produce
one refused recipient's copy without the pixels, as bytes:

* baseline: ``email`` with ``policy.default`` to parse, BeautifulSoup with
  lxml to find and remove tiny images, ``set_content`` and ``as_bytes()``;
* beacon-proxy: ``Engine.analyse`` (MIME structure, decode, scan, classify)
  and ``Engine.render`` (recipient check, splice, re-encode), on an engine
  that keeps no scan (``templates=0``: every message is new).

Also shown: the same on an engine that keeps the scan as its campaign's
template (``rewrite/rescan.py``, what the relay's first copy of a campaign
costs), a further recipient's copy of the same message (the relay analyses
once per message and renders per recipient), a further personalised copy of
a campaign the relay already knows (analyse - rescanned where it differs from
the template -, campaign key, judge against the campaign's memory, render:
issue 9's figure), and the whole copy the
relay sends a further refused or granted recipient: the beacon step, the
footer, the unsubscribe headers and the trace header (``app.copy_steps``), and
an identical message again: its analysis found by its bytes (``rewrite/known.py``)
and its whole refused copy.  Goal (product.md):
under 1 ms per message on one core and at least 20x faster than the
baseline.  Run: ``python bench/rewrite.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import email
import email.policy
import gc
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from bs4 import BeautifulSoup
from newsletter import RECIPIENT, newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.campaign import CampaignMemory, campaign_key, loaded, references_at
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.known import AnalysisCache
from beacon_proxy.rewrite.rescan import ScanCache
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

GOAL_MS = 1.0
GOAL_RATIO = 20.0


def _tiny(value: object) -> bool:
    text = str(value or "").strip().lower().removesuffix("px")
    return text.isdigit() and int(text) <= 2


def baseline(data: bytes) -> bytes:
    """The obvious way: stdlib email + BeautifulSoup/lxml + as_bytes()."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        if part.get_content_type() != "text/html":
            continue
        assert isinstance(part, EmailMessage)
        soup = BeautifulSoup(part.get_content(), "lxml")
        for img in soup.find_all("img"):
            if _tiny(img.get("width")) or _tiny(img.get("height")):
                img.decompose()
        part.set_content(str(soup), subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of one call over ``rounds`` calls."""
    samples = []
    gc.collect()
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    data = newsletter().replace(b"\n", b"\r\n")  # as the relay receives it
    engine = Engine(load_rules())
    cold = Engine(load_rules(), templates=0)  # every message new: no campaign known
    learning = Engine(load_rules())

    def ours() -> bytes:
        return cold.render(cold.analyse(data), RECIPIENT, Policy.REFUSED).data

    def first_of_campaign() -> bytes:  # scanned in full and kept as a template
        learning._templates = ScanCache()
        return learning.render(learning.analyse(data), RECIPIENT, Policy.REFUSED).data

    analysis = engine.analyse(data)

    def next_recipient() -> bytes:
        return engine.render(analysis, "other@example.org", Policy.REFUSED).data

    # The whole copy, as the relay renders it for each further recipient.
    tokens = Tokens(["bench secret 0123456789abcdef"])
    step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                      hostname="relay.example",
                      steps=copy_steps(Config(), tokens, hostname="relay.example"))
    envelope = Envelope("BENCHQUEUEID0001", "news@example.com", (RECIPIENT,),
                        list_id="news.example.com")
    prepared = asyncio.run(step.prepare(envelope, data))
    serial = iter(range(10**9))

    def whole_copy(policy: Policy) -> Callable[[], bytes]:
        def render() -> bytes:
            return prepared.render(f"r{next(serial)}@example.org", policy).data
        return render

    # An identical message again (known bytes, rewrite/known.py): the cached analysis,
    # then the whole refused copy (the shared refused render, footer, headers, trace).
    known_step = BeaconStep(engine, tokens, public_url="https://prefs.example.com",
                            hostname="relay.example",
                            steps=copy_steps(Config(), tokens, hostname="relay.example"),
                            cache=AnalysisCache(engine.fingerprint))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(known_step.prepare(envelope, data))

    def identical_message() -> bytes:
        message = loop.run_until_complete(known_step.prepare(envelope, data))
        return message.render(f"r{next(serial)}@example.org", Policy.REFUSED).data

    # A further personalised copy of a campaign the relay already knows: analyse it
    # (rescanned where it differs from the last copy, rewrite/rescan.py), name its
    # campaign, judge it against the campaign's memory, render it (what
    # CampaignDiffing.observe and the beacon step do per message, store aside).
    memory = CampaignMemory()
    for k in range(16):  # the campaign learned (its copies differ in the pixel's id)
        copy = data.replace(b"OGYzYjIx", f"Q{k:07d}".encode())
        refs = loaded(engine.analyse(copy))
        memory.learn([(r.element, r.url) for r in refs])
    known = data.replace(b"OGYzYjIx", b"Q9999999")

    def known_campaign() -> bytes:
        analysed = engine.analyse(known)
        refs = loaded(analysed)
        campaign_key(analysed, RECIPIENT)
        diffed = references_at(refs, memory.judge([(r.element, r.url) for r in refs]))
        return engine.render(analysed, RECIPIENT, Policy.REFUSED, diffed=diffed).data

    out_ours, out_base = ours(), baseline(data)
    assert b"t.esp-mailer.example" not in out_ours and b"pixel.analytics" not in out_ours
    assert b"t.esp-mailer.example" not in out_base
    matcher = difflib.SequenceMatcher(a=data.split(b"\r\n"), b=out_ours.split(b"\r\n"),
                                      autojunk=False)
    changed = sum(i2 - i1 for op, i1, i2, _, _ in matcher.get_opcodes() if op != "equal")

    base_ms = timed(lambda: baseline(data), max(10, args.rounds // 10))
    ours_ms = timed(ours, args.rounds)
    first_ms = timed(first_of_campaign, args.rounds)
    next_ms = timed(next_recipient, args.rounds)
    known_ms = timed(known_campaign, args.rounds)
    refused_ms = timed(whole_copy(Policy.REFUSED), args.rounds)
    granted_ms = timed(whole_copy(Policy.GRANTED), args.rounds)
    identical_ms = timed(identical_message, args.rounds)
    loop.close()
    ratio = base_ms / ours_ms
    print(f"message: {len(data):,} bytes, quoted-printable HTML; python {sys.version.split()[0]}")
    print(f"  encoded lines changed by beacon-proxy: {changed}; "
          f"output {len(out_ours):,} bytes (baseline output {len(out_base):,} bytes)")
    print()
    print(f"{'implementation':<52} {'ms/message':>10}")
    print(f"{'baseline: email policy.default + bs4/lxml + as_bytes':<52} {base_ms:>10.3f}")
    print(f"{'beacon-proxy engine: analyse + render one copy':<52} {ours_ms:>10.3f}")
    print(f"{'  the same, kept as a template for its campaign':<52} {first_ms:>10.3f}")
    print(f"{'beacon-proxy: each further recipient (render only)':<52} {next_ms:>10.3f}")
    print(f"{'  a known campaign: analyse + key + judge + render':<52} {known_ms:>10.3f}")
    print(f"{'  the whole copy, refused (+footer, headers, trace)':<52} {refused_ms:>10.3f}")
    print(f"{'  the whole copy, granted (+footer, headers, trace)':<52} {granted_ms:>10.3f}")
    print(f"{'an identical message again: cached analysis + copy':<52} {identical_ms:>10.3f}")
    print()
    ok_ms, ok_ratio = ours_ms < GOAL_MS, ratio >= GOAL_RATIO
    print(f"speed-up vs baseline: {ratio:.1f}x   goal >= {GOAL_RATIO:g}x   "
          f"{'PASS' if ok_ratio else 'FAIL'}")
    print(f"per message: {ours_ms:.3f} ms   goal < {GOAL_MS:g} ms   {'PASS' if ok_ms else 'FAIL'}")
    ok_known = known_ms < GOAL_MS
    print(f"per message of a known campaign: {known_ms:.3f} ms   goal < {GOAL_MS:g} ms   "
          f"{'PASS' if ok_known else 'FAIL'}")
    return 0 if ok_ms and ok_ratio and ok_known else 1


if __name__ == "__main__":
    sys.exit(main())
