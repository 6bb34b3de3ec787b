"""Derive (and refresh) beacon-proxy's tracker rules from MailTrackerBlocker's list.

Usage (from the repository root)::

    python tools/derive_trackers.py [--input FILE-OR-URL] [--check] [--commit SHA]

``--input`` is MailTrackerBlocker's list as JSON (``{"source", "license",
"vendors": {vendor: [pattern, ...]}}``, default
``../shared/data/trackers/mailtrackerblocker-rules.json``), a local file or an
``https://`` URL: refreshing works offline from a file.  The command prints the
diff against the rules in the repository (rules added, removed, vendors
changed, overrides that no longer apply) and then writes ``config/trackers.json``
(the documented copy) and ``beacon_proxy/data/trackers.json`` (the copy the
package loads); both are identical and a test checks it.  ``--check`` only
prints the diff (exit status 1 when there is one).  The derivation is
deterministic:

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
   ``derivation.tag_only``; the current list has none;
5. our overrides (``config/trackers-overrides.json``: a broad pattern
   anchored so that it stops matching content images, a vendor pattern the
   list misses) are applied last and listed under ``derivation.overrides``;
   an override whose pattern is no longer upstream is reported as stale and
   the command fails until the override file is updated.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "trackers" / "mailtrackerblocker-rules.json"
OUTPUTS = (ROOT / "config" / "trackers.json", ROOT / "beacon_proxy" / "data" / "trackers.json")
OVERRIDES = ROOT / "config" / "trackers-overrides.json"
UPSTREAM_COMMIT = "8a8c43c"
_MAX_INPUT = 16 << 20  # bytes: the list is ~60 KB

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


def load_overrides(path: Path = OVERRIDES) -> list[dict[str, Any]]:
    """The override entries, checked for shape (a clear error names the bad entry)."""
    entries = json.loads(path.read_text("utf-8"))["overrides"]
    for k, entry in enumerate(entries):
        ok = (isinstance(entry.get("vendor"), str) and isinstance(entry.get("with"), list)
              and all(isinstance(p, str) for p in entry["with"])
              and (entry.get("replace") is None or isinstance(entry["replace"], str))
              and isinstance(entry.get("why"), str) and entry["why"])
        if not ok:
            raise ValueError(f"{path}: override #{k} needs vendor, with (patterns), why "
                             "and optionally replace")
    return list(entries)


def apply_overrides(vendors: dict[str, list[str]],
                    overrides: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Apply the overrides in place; (what each did, the stale ones)."""
    applied: list[str] = []
    stale: list[str] = []
    for entry in overrides:
        vendor, new, old = entry["vendor"], list(entry["with"]), entry.get("replace")
        patterns = vendors.setdefault(vendor, [])
        if old is None:
            patterns.extend(p for p in new if p not in patterns)
            applied.append(f"{vendor}: added {', '.join(new)}")
        elif old in patterns:
            at = patterns.index(old)
            patterns[at:at + 1] = new
            applied.append(f"{vendor}: {old} -> {', '.join(new)}")
        else:
            stale.append(f"{vendor}: {old} is no longer upstream")
        if not patterns:
            del vendors[vendor]
    return applied, stale


def derive(upstream: dict[str, object],
           overrides: list[dict[str, Any]] | None = None) -> dict[str, object]:
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
    applied, stale = apply_overrides(
        vendors, load_overrides() if overrides is None else overrides)
    for patterns in vendors.values():
        for pattern in patterns:
            re.compile(pattern, re.IGNORECASE | re.ASCII)
    return {
        "source": upstream["source"],
        "license": str(upstream["license"]).replace(
            "See LICENSE-MailTrackerBlocker.txt",
            "Full text: LICENSE-trackers.txt beside this file"),
        "upstream_commit": str(upstream.get("upstream_commit") or UPSTREAM_COMMIT),
        "format": (
            "vendor name -> list of Python regular expressions, searched case-insensitively "
            "(ASCII) in each entity-decoded reference URL"
        ),
        "derivation": {
            "tool": "tools/derive_trackers.py",
            "dropped_empty_vendors": dropped,
            "changed": changed,
            "tag_only": tag_only,
            "overrides": "config/trackers-overrides.json",
            "overridden": applied,
            "stale_overrides": stale,
        },
        "vendors": vendors,
    }


def read_input(source: str) -> dict[str, Any]:
    """The upstream list from a file or an ``https://`` URL."""
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 - http(s) only
            raw = response.read(_MAX_INPUT + 1)
    else:
        raw = Path(source).read_bytes()
    if len(raw) > _MAX_INPUT:
        raise ValueError(f"{source}: larger than {_MAX_INPUT} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("vendors"), dict):
        raise ValueError(f"{source}: not a rules list (an object with 'vendors')")
    data.setdefault("source", source)
    data.setdefault("license", "")
    return data


def diff(old: dict[str, list[str]], new: dict[str, list[str]]) -> list[str]:
    """Readable lines: rules added and removed, vendors whose patterns changed."""
    lines = []
    for vendor in sorted(old.keys() | new.keys()):
        before, after = old.get(vendor, []), new.get(vendor, [])
        if before == after:
            continue
        added = [p for p in after if p not in before]
        removed = [p for p in before if p not in after]
        kind = ("added vendor" if not before else "removed vendor" if not after
                else "changed")
        lines.append(f"{kind} {vendor}:")
        lines += [f"  + {p}" for p in added] + [f"  - {p}" for p in removed]
        if not added and not removed:
            lines.append("  (order only)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEFAULT_INPUT), metavar="FILE-OR-URL")
    parser.add_argument("--commit", help="the upstream commit the list was taken at")
    parser.add_argument("--check", action="store_true",
                        help="print the diff only; exit 1 when the rules would change")
    args = parser.parse_args(argv)
    try:
        upstream = read_input(args.input)
    except (OSError, ValueError) as exc:
        print(f"derive_trackers: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    if args.commit:
        upstream["upstream_commit"] = args.commit
    derived = derive(upstream)
    text = json.dumps(derived, indent=1, ensure_ascii=False) + "\n"
    sys.path.insert(0, str(ROOT))
    from beacon_proxy.rewrite.rules import TrackerRules

    vendors = derived["vendors"]
    assert isinstance(vendors, dict)
    rules = TrackerRules(vendors)  # raises RulesError on a pattern it cannot index
    derivation = derived["derivation"]
    assert isinstance(derivation, dict)
    current: dict[str, list[str]] = {}
    if OUTPUTS[0].exists():
        current = json.loads(OUTPUTS[0].read_text("utf-8"))["vendors"]
    changes = diff(current, vendors)
    print("\n".join(changes) if changes else "no rule changes")
    for line in derivation["stale_overrides"]:
        print(f"stale override: {line}", file=sys.stderr)
    if derivation["stale_overrides"]:
        print("update config/trackers-overrides.json; nothing written", file=sys.stderr)
        return 1
    if args.check:
        return 1 if changes else 0
    for out in OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, "utf-8")
    print(f"{len(vendors)} vendors, {len(rules)} patterns -> " + ", ".join(map(str, OUTPUTS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
