#!/usr/bin/env python3
"""A relay event's log line, written straight and through a ``LogRecord``, side by side.

    PYTHONPATH=TREE python bench/log_event.py [--events 20000]

At ``[log] level = "info"`` (the relay's default) a serving relay writes three lines a
message: ``received``, ``delivered`` and ``removed``.  ``beacon_proxy.log.event`` writes
a line itself when ``setup_logging``'s ``LineHandler`` is the only handler it would reach
(the straight way), and otherwise hands a record to ``logging`` (the ordinary way: a
``LogRecord``, the handler chain, the formatter).  This prices both for the ``delivered``
line of a phase c copy of ``bench/relay.py`` (its fields as a refused copy's; a new
recipient and Message-ID every three lines), written to a file, with and without
``[log] pseudonymize``: microseconds of CPU a line, the best of three runs, and the
ratio.  The ordinary way is forced with a pass-everything filter on the relay logger,
which is what any second handler or filter does.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

#: A phase c ``delivered`` event's fields (as the relay logs a refused copy).
FIELDS: dict[str, Any] = {
    "queue_id": "1K1WE22BK05X5TZR", "message_id": "<20250320093000.8f3b21@mailer.shop.example>",
    "sender": "sender@example.com", "recipient": "1rcpt@example.net",
    "relay": "127.0.0.1:37267", "reply": "250 2.0.0 Ok", "attempt": 1, "delay": 0.04,
    "policy": "refused", "size": 73685, "campaign": "e69f9948c9b9", "campaign_copies": 1,
    "beacons": 2, "kinds": {"img": 2}, "vendors": [], "actions": {"strip": 2},
    "outcome": "stripped", "footer": {"html": 1, "text": 1, "language": "en"},
    "unsubscribe": "replaced"}


def _keep(record: logging.LogRecord) -> bool:
    return True


def lines(events: int) -> list[dict[str, Any]]:
    """The fields of ``events`` lines: a new recipient and Message-ID every three lines, as
    a relay's messages (``received``, ``delivered``, ``removed``) would name them."""
    return [{**FIELDS, "recipient": f"{n // 3}rcpt@example.net",
             "message_id": f"<{n // 3}.8f3b21@mailer.shop.example>"} for n in range(events)]


def price(events: int, straight: bool) -> float:
    """CPU microseconds a ``delivered`` line, best of three runs of ``events``."""
    from beacon_proxy.log import event

    relay = logging.getLogger("beacon_proxy.relay")
    if not straight:
        relay.addFilter(_keep)
    each = lines(events)
    try:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for fields in each:
                event("delivered", **fields)
            best = min(best, (time.process_time() - start) / events * 1e6)
        return best
    finally:
        relay.removeFilter(_keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    events = min(max(args.events, 1), 1_000_000)

    from beacon_proxy.log import pseudonym_key, pseudonymize, set_worker, setup_logging

    with tempfile.TemporaryDirectory(prefix="beacon-log-bench-") as tmp:
        set_worker(0)  # as a worker of a relay with several: one write(2) a line
        setup_logging("info", Path(tmp) / "relay.jsonl")
        try:
            for label, key in (("plain", None), ("pseudonymized", pseudonym_key("b" * 32))):
                pseudonymize(key)
                ordinary = price(events, straight=False)
                straight = price(events, straight=True)
                print(f"{label:14} ordinary {ordinary:6.2f} us  straight {straight:6.2f} us  "
                      f"straight / ordinary = {straight / ordinary:.2f}")
        finally:
            pseudonymize(None)
            set_worker(None)
            root = logging.getLogger()
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
