"""bench/relay_shortcut_attack.py's cases, made without a relay or a browser."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.bench.script import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import relay_shortcut_attack as attack

FAMILIES = {"slot", "value", "reveal", "hidden", "header", "identity", "mixed"}

Fingerprint = tuple[str, str, str, list[str], list[str] | None, list[str], bytes, list[bytes]]


def _timeless(message: bytes) -> bytes:
    """``message`` without the time stamp some Message-IDs carry."""
    return re.sub(rb"(Message-ID: <a10-\d+-)\d+@", rb"\1T@", message)


def _fingerprints(seed: int) -> list[list[Fingerprint]]:
    """Every family's campaigns for ``seed``, as comparable tuples."""
    return [[(c.name, c.family, c.rcpt, c.prim_rcpts, c.multi, c.granted,
              _timeless(c.hostile), [_timeless(p) for p in c.priming]) for c in campaign]
            for campaign in attack.make_campaigns(FAMILIES, seed, 30)]


def test_a_seed_makes_the_same_cases() -> None:
    first = _fingerprints(5)
    assert first == _fingerprints(5)
    assert first != _fingerprints(6)


def test_every_family_has_cases() -> None:
    campaigns = attack.make_campaigns(FAMILIES, 5, 30)
    cases = [case for campaign in campaigns for case in campaign]
    assert {case.family.split(":")[0] for case in cases} == FAMILIES
    assert sum(case.family.startswith("slot:") for case in cases) == 30
    # a campaign starts with priming copies, or is one message to several recipients
    assert all(campaign[0].priming or campaign[0].multi for campaign in campaigns)


def test_the_shadow_engine_runs_a_campaign_without_an_error() -> None:
    """The shadow (an in-process engine beside the relay, its cached paths counted)
    wraps engine internals; a parameter the engine grew once made every one of its
    analyses raise, so it told nothing.  Run in a child: its patches last."""
    code = ("import sys; sys.path.insert(0, 'bench'); import relay_shortcut_attack as a\n"
            "s = a.Shadow()\n"
            "for c in a.make_campaigns({'slot'}, 5, 4)[0]:\n"
            "    for m in (*c.priming, c.hostile): s.run(m)\n"
            "print(dict(s.counts))\n"
            "assert s.counts['shadow_error'] == 0 and s.counts['rescan_hit'] > 0, s.counts\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
