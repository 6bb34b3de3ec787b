#!/usr/bin/env python3
"""CPU per analysis of a campaign's further copy whose links carry the recipient's token.

    python bench/personal_links.py [--messages 100] [--rounds 3] [--base DIR] [--pairs 3]

Senders personalise more than a greeting: each link of a copy carries the recipient's
token (``?u=...``).  The relay's analysis (``Engine.analyse`` of the 70 KB benchmark
newsletter) of a campaign's further copies, which differ from the copy before in a
``<p>`` and in 0, 1, 5 or 30 links' URLs: the scan rescans where they differ
(``rewrite/rescan.py``), the checks of other readers are taken from the last copy that
passed (``rewrite/readers.py``: in text since session 18, inside values since session
19).  CPU ms a copy (``time.process_time``, best of ``--rounds`` rounds of
``--messages`` copies after five).  ``--base DIR``: the same in child processes of both
trees, alternating (``bench/_pairs.py``).
"""

from __future__ import annotations

from _pairs import main_per_copy
from newsletter import newsletter

from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules

LINKS = (0, 1, 5, 30)
_LINK = b'href=3D"https://shop.example/p/'  # (quoted-printable: "=3D" is "=")


def _copy(message: bytes, n: int, links: int) -> bytes:
    if links:
        message = message.replace(_LINK, _LINK + b"%06d" % n, links)
    return message.replace(b"</body>", b"<p>%d</p></body>" % n, 1)


def measure(messages: int, rounds: int) -> dict[str, float]:
    import time

    message = newsletter()
    assert message.count(_LINK) >= max(LINKS)
    out: dict[str, float] = {}
    for links in LINKS:
        engine = Engine(load_rules())
        for n in range(5):
            engine.analyse(_copy(message, n, links))
        best = float("inf")
        for r in range(rounds):
            start = time.process_time()
            for n in range(messages):
                engine.analyse(_copy(message, 1000 * (r + 1) + n, links))
            best = min(best, (time.process_time() - start) / messages * 1000)
        out[f"links={links}"] = best
    return out


if __name__ == "__main__":
    main_per_copy(__file__, __doc__, [f"links={n}" for n in LINKS], measure)
