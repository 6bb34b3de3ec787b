"""Footer step benchmark: what adding the preference-link footer costs per copy.

Input: the ~70 KB quoted-printable newsletter of ``bench/rewrite.py``
(bench/newsletter.py, CRLF line ends as on the wire).  Shown: the whole
:class:`~beacon_proxy.rewrite.footer.Footer` step per copy, and its parts --
the MIME parse (``parse_message``), the HTML part's transfer decode, the
search for the insertion point (``body_end``) -- to see where the time goes.
Goal (issue 7 brief): well under 0.2 ms per copy.  Run: ``python bench/footer.py``.
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
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.rewrite.transfer import decode_indexed
from beacon_proxy.spool.envelope import Envelope

GOAL_MS = 0.2


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
    step = Footer(lambda recipient: "https://prefs.example.com/u/AAECAwQFBgcICQoLDA0ODw")
    recipient = Recipient(Envelope("Q1", "news@shop.example", ("a@example.net",),
                                   received_at=0), "a@example.net", Policy.REFUSED)
    copy = Copy(data)
    out = step(copy, recipient)
    tree = parse_message(data)
    html = next(p for p in tree.parts if p.content_type == "text/html")
    body = tree.body(html)
    decoded = decode_indexed(body, html.transfer_encoding)[0]
    rows = [
        ("footer step, one copy", lambda: step(copy, recipient)),
        ("  of which: parse_message", lambda: parse_message(data)),
        ("  of which: decode the HTML part", lambda: decode_indexed(body, "quoted-printable")),
        ("  of which: body_end (insertion point)", lambda: body_end(decoded)),
    ]
    print(f"message: {len(data):,} bytes; footer adds {len(out.data) - len(data)} bytes; "
          f"report {out.report['footer']}")
    results = {name: timed(fn, args.rounds) for name, fn in rows}
    for name, ms in results.items():
        print(f"{name:<44} {ms:8.3f} ms")
    total = results[rows[0][0]]
    verdict = "PASS" if total < GOAL_MS else "FAIL"
    print(f"per copy: {total:.3f} ms   goal < {GOAL_MS} ms   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
