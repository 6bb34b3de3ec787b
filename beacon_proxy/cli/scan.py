"""``beacon-proxy scan PATH...``: check newsletters offline, no server needed.

Each ``.eml`` file (directories are walked for ``*.eml``) is analysed as the
relay would for one recipient and policy: every remote reference found, and
what the policy does with it.  The default output is a readable table;
``--json`` prints one JSON object per file, one per line::

    {"file": "news.eml", "policy": "refused", "recipient": null,
     "outcome": "stripped",
     "findings": [{"url": "...", "element": "img", "tracker": true,
                   "vendor": "SendGrid", "reasons": ["rule:SendGrid", "tiny"],
                   "action": "strip"}, ...],
     "problems": []}

The copy is decided exactly as the relay decides it
(:func:`~beacon_proxy.rewrite.copies.decide`, with ``[policy] unscannable``
and ``signed``): ``outcome`` says which path made it, and each finding's
``action`` is what that copy really does - under the ``fallback`` outcome
every remote reference is neutralised (``strip``); a ``held`` copy is not sent
at all (``keep``, and no ``--output`` file).

``--output`` writes the copy the recipient would get (without the relay's
trace header): the rewritten message with the footer and the unsubscribe
headers; a file for one input, a directory (created if needed) for several.
``--json`` also says what the footer and the unsubscribe step did
(``"footer"``, ``"unsubscribe"``: their relay-log reports).  The links are
genuine only when the configured ``[tokens] secret`` is set.  Exit status: 0,
or 1 when a file could not be read or written (the others are still scanned).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from beacon_proxy.app import copy_steps
from beacon_proxy.cli.common import CliError, add_config_option, config_from
from beacon_proxy.consent.policy import Policy
from beacon_proxy.headerfacts import one_click_url
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, Outcome, prepare
from beacon_proxy.rewrite.copies import decide as decide_copy
from beacon_proxy.rewrite.engine import Action, Engine, Item
from beacon_proxy.rewrite.links import open_links
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, CopyStep, Recipient, run_steps
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

__all__ = ["register"]

_MAX_FILE = 64 << 20


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scan", help="check newsletters for beacons offline",
        description="Show the beacons in .eml files and what a policy would do with them.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml files or directories")
    p.add_argument("--recipient", metavar="ADDR",
                   help="also find URLs that carry this address (raw, encoded or hashed)")
    p.add_argument("--policy", choices=[p.value for p in Policy], default=None,
                   help="what to do with trackers (default: [policy] unknown)")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--output", metavar="FILE", type=Path,
                   help="write the rewritten message (a directory for several inputs)")
    add_config_option(p)
    p.set_defaults(handler=_scan)


def _files(paths: list[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*")
                              if f.is_file() and f.suffix.lower() == ".eml")
        else:
            yield path


def _finding(item: Item) -> dict[str, Any]:
    f = item.finding
    return {"url": f.url, "element": f.element, "tracker": f.tracker, "vendor": f.vendor,
            "reasons": list(f.reasons), "action": item.action.value}


def _items(decided: Decided, analysis_items: list[Item]) -> list[Item]:
    """The copy's remote references with the action the decided copy really takes."""
    if decided.rendered is not None:
        return [i for i in decided.rendered.items if i.reference.remote]
    action = Action.STRIP if decided.outcome is Outcome.FALLBACK else Action.KEEP
    return [i._replace(action=action) for i in analysis_items if i.reference.remote]


def _scan(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    policy = Policy(args.policy or cfg.policy.unknown)
    files = list(_files(args.paths))
    if not files:
        raise CliError("no .eml files found")
    out_dir: Path | None = None
    if args.output is not None and (len(files) > 1 or args.output.is_dir()):
        out_dir = args.output
        out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(load_rules(allow=(cfg.web.public_url,)))  # our own /o/ is no vendor
    rules = CopyPolicy(cfg.policy.unscannable, cfg.policy.signed)
    # Links in an offline copy are real only when the configured secret is known.
    tokens = Tokens([cfg.tokens.secret or secrets.token_hex(16)])
    steps = copy_steps(cfg, tokens, hostname=None)  # the footer and the unsubscribe headers
    status = 0
    for path in files:
        try:
            if path.stat().st_size > _MAX_FILE:
                raise CliError(f"larger than {_MAX_FILE} bytes")
            data = path.read_bytes()
        except (OSError, CliError) as exc:
            print(f"beacon-proxy: {path}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            status = 1
            continue
        prepared = prepare(engine, data, rules)
        link = open_links(tokens, cfg.web.public_url, args.recipient or "", prepared.list_id,
                          "SCAN")
        decided = decide_copy(engine, prepared, args.recipient, policy, rules, link)
        copy = _finish(steps, data, decided, args.recipient or "", policy, prepared.list_id)
        analysis = prepared.original.analysis
        everything = (engine.items(analysis, args.recipient, policy)
                      if analysis is not None else [])
        items = _items(decided, everything)
        problems = tuple(dict.fromkeys(
            [*(analysis.problems if analysis is not None else ()), *decided.problems]))
        if args.json:
            print(json.dumps({"file": str(path), "policy": policy.value,
                              "recipient": args.recipient, "outcome": decided.outcome.value,
                              "findings": [_finding(i) for i in items],
                              "problems": list(problems),
                              "footer": copy.report.get("footer") if copy else None,
                              "unsubscribe": copy.report.get("unsubscribe") if copy else None},
                             ensure_ascii=False))
        else:
            _table(path, policy, decided.outcome, items, problems)
        if args.output is not None and copy is not None:
            target = out_dir / path.name if out_dir is not None else args.output
            try:
                target.write_bytes(copy.data)
            except OSError as exc:
                print(f"beacon-proxy: {target}: {exc.strerror}", file=sys.stderr)
                status = 1
    return status


def _finish(steps: tuple[CopyStep, ...], data: bytes, decided: Decided, recipient: str,
            policy: Policy, list_id: str | None) -> Copy | None:
    """The decided copy through the relay's other steps (footer, unsubscribe headers),
    as the recipient would get it (without the trace header); None when held."""
    if decided.data is None:
        return None
    envelope = Envelope("SCAN", "", (recipient,), list_id=list_id,
                        one_click=one_click_url(data))
    return run_steps(steps, Copy(decided.data), Recipient(envelope, recipient, policy))


def _table(path: Path, policy: Policy, outcome: Outcome, items: list[Item],
           problems: tuple[str, ...]) -> None:
    trackers = sum(1 for i in items if i.finding.tracker)
    print(f"{path}: {len(items)} remote reference(s), {trackers} tracker(s); "
          f"policy {policy.value}; copy {outcome.value}")
    for problem in problems:
        print(f"  ! {problem}")
    if items:
        print(f"  {'ACTION':<8} {'ELEMENT':<13} {'VENDOR':<18} {'REASONS':<34} URL")
    for item in items:
        f = item.finding
        url = f.url if len(f.url) <= 80 else f.url[:77] + "..."
        reasons = ",".join(f.reasons) or "-"
        print(f"  {item.action.value:<8} {f.element:<13} {(f.vendor or '-')[:18]:<18} "
              f"{reasons[:34]:<34} {url}")
