"""Derive beacon-proxy's tracker rules from the shared MailTrackerBlocker list.

Usage (from the repository root)::

    python tools/derive_trackers.py [--input ../shared/data/trackers/mailtrackerblocker-rules.json]

Writes ``config/trackers.json`` (the documented copy) and
``beacon_proxy/data/trackers.json`` (the copy the package loads); both are
identical and a test checks it.  The derivation is deterministic:

1. vendors and their patterns keep the upstream order; vendors without any
   pattern are dropped;
2. an unescaped ``.`` between two literal word characters (``t.hubspotemail``,
   ``pixel.gif``) becomes ``\\.``: upstream writes hostnames and file names
   with bare dots, which as regular expressions would match any character.
   ``.+``, ``.*`` and a ``.`` next to a class, group or quantifier stay
   wildcards.  Every change is listed under ``derivation.changed``;
3. every pattern must compile with Python's ``re`` (IGNORECASE | ASCII) and
   yield an index literal (checked by loading the result with
   ``beacon_proxy.rewrite.rules``); the script fails otherwise;
4. patterns that refer to tag text rather than to a URL (quotes, spaces,
   angle brackets, attribute names) would be listed under
   ``derivation.tag_only``; the current list has none.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "trackers" / "mailtrackerblocker-rules.json"
OUTPUTS = (ROOT / "config" / "trackers.json", ROOT / "beacon_proxy" / "data" / "trackers.json")
UPSTREAM_COMMIT = "8a8c43c"

_LITERAL_DOT = re.compile(r"(?<=[A-Za-z0-9_-])(?<!\\[A-Za-z0-9_-])\.(?=[A-Za-z0-9])")
_TAG_ONLY = re.compile(r"[\"'<> ]|\b(?:width|height|alt|src|style)\s*=")


def translate(pattern: str) -> str:
    r"""Make the dots of hostnames and file names literal.

    >>> translate("t.hubspotemail")
    't\\.hubspotemail'
    >>> translate("/mo/.+.gif")
    '/mo/.+.gif'
    """
    return _LITERAL_DOT.sub(r"\\.", pattern)


def derive(upstream: dict[str, object]) -> dict[str, object]:
    vendors_in = upstream["vendors"]
    assert isinstance(vendors_in, dict)
    vendors: dict[str, list[str]] = {}
    changed: dict[str, str] = {}
    tag_only: list[str] = []
    dropped: list[str] = []
    for vendor, patterns in vendors_in.items():
        if not patterns:
            dropped.append(vendor)
            continue
        out = []
        for pattern in patterns:
            new = translate(pattern)
            if new != pattern:
                changed[pattern] = new
            if _TAG_ONLY.search(pattern):
                tag_only.append(pattern)
            re.compile(new, re.IGNORECASE | re.ASCII)
            out.append(new)
        vendors[vendor] = out
    return {
        "source": upstream["source"],
        "license": str(upstream["license"]).replace(
            "See LICENSE-MailTrackerBlocker.txt",
            "Full text: LICENSE-trackers.txt beside this file"),
        "upstream_commit": UPSTREAM_COMMIT,
        "format": (
            "vendor name -> list of Python regular expressions, searched case-insensitively "
            "(ASCII) in each entity-decoded reference URL"
        ),
        "derivation": {
            "tool": "tools/derive_trackers.py",
            "dropped_empty_vendors": dropped,
            "changed": changed,
            "tag_only": tag_only,
        },
        "vendors": vendors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    args = parser.parse_args(argv)
    derived = derive(json.loads(args.input.read_text("utf-8")))
    text = json.dumps(derived, indent=1, ensure_ascii=False) + "\n"
    sys.path.insert(0, str(ROOT))
    from beacon_proxy.rewrite.rules import TrackerRules

    vendors = derived["vendors"]
    assert isinstance(vendors, dict)
    rules = TrackerRules(vendors)  # raises RulesError on a pattern it cannot index
    for out in OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, "utf-8")
    print(f"{len(vendors)} vendors, {len(rules)} patterns -> " + ", ".join(map(str, OUTPUTS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
