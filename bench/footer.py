"""Footer step benchmark: what adding the preference-link footer costs per copy.

Input: the ~70 KB quoted-printable newsletter of ``bench/rewrite.py``
(bench/newsletter.py, CRLF line ends as on the wire).  Shown: the whole
:class:`~beacon_proxy.rewrite.footer.Footer` step for the first copy of a
message (it is planned: :mod:`~beacon_proxy.rewrite.footerplan`), for a
further identical copy (a refused or unknown recipient's: the kept plan is
applied), for granted copies (each differs from every other by its pixel
token, so each is planned), and the parts of a plan -- the MIME parse
(``parse_message``), the HTML part's transfer decode, the search for the
insertion point (``body_end``) -- and of applying it, to see where the time
goes.  Goal: a further copy well under 0.1 ms.  Run: ``python bench/footer.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from newsletter import newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.bodyend import body_end
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.footerplan import plan_footer
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.rewrite.transfer import decode_indexed
from beacon_proxy.spool.envelope import Envelope

GOAL_MS = 0.1  # a further copy of the same message
URL = "https://prefs.example.com/u/AAECAwQFBgcICQoLDA0ODw"
PIXEL = b"eyJjIjoiMjAyNS1zcHJpbmci"  # in the newsletter's first tracking pixel


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of one call, over ``rounds`` batches of 20 calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            fn()
        samples.append((time.perf_counter() - start) * 1000 / 20)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    data = newsletter().replace(b"\n", b"\r\n")
    step = Footer(lambda recipient: URL)
    uncached = Footer(lambda recipient: URL, cache=0)
    recipient = Recipient(Envelope("Q1", "news@shop.example", ("a@example.net",),
                                   received_at=0), "a@example.net", Policy.REFUSED)
    copy = Copy(data)
    out = step(copy, recipient)
    assert uncached(copy, recipient) == out
    again = Copy(bytes(bytearray(data)))  # equal bytes, another object: as in the relay
    # Granted copies: each one's own pixel token, early in the HTML part (a long memcmp).
    assert data.count(PIXEL) == 1
    granted = [Copy(data.replace(PIXEL, f"{n:024d}".encode())) for n in range(64)]
    turn = iter(range(1 << 62))
    tree = parse_message(data)
    html = next(p for p in tree.parts if p.content_type == "text/html")
    body = tree.body(html)
    decoded = decode_indexed(body, html.transfer_encoding)[0]
    plan = plan_footer(data, step.texts, "en")
    rows = [
        ("first copy of a message (planned)", lambda: uncached(copy, recipient)),
        ("further copy of the same message (cached)", lambda: step(again, recipient)),
        ("granted copies (each differs: planned)",
         lambda: step(granted[next(turn) % len(granted)], recipient)),
        ("  plan: parse_message", lambda: parse_message(data)),
        ("  plan: decode the HTML part", lambda: decode_indexed(body, "quoted-printable")),
        ("  plan: body_end (insertion point)", lambda: body_end(decoded)),
        ("  apply the plan to one link", lambda: plan.apply(URL, step.texts)),
    ]
    print(f"message: {len(data):,} bytes; footer adds {len(out.data) - len(data)} bytes; "
          f"report {out.report['footer']}")
    results = {name: timed(fn, args.rounds) for name, fn in rows}
    for name, ms in results.items():
        print(f"{name:<44} {ms:8.3f} ms")
    further = results[rows[1][0]]
    verdict = "PASS" if further < GOAL_MS else "FAIL"
    print(f"further copy: {further:.3f} ms   goal < {GOAL_MS} ms   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
