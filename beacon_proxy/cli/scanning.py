"""The work of ``beacon-proxy scan`` (:mod:`beacon_proxy.cli.scan`): imported only when
it runs, as it needs the whole engine."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from beacon_proxy.app import copy_steps
from beacon_proxy.cli.common import CliError, config_from
from beacon_proxy.consent.policy import Policy
from beacon_proxy.headerfacts import one_click_url
from beacon_proxy.rewrite.campaign import campaign_key, loaded, personal_urls, references_at
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, Outcome, Prepared, prepare
from beacon_proxy.rewrite.copies import decide as decide_copy
from beacon_proxy.rewrite.engine import Action, Engine, Item
from beacon_proxy.rewrite.links import open_links
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, CopyStep, Recipient, run_steps
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

__all__ = ["scan"]

_MAX_FILE = 64 << 20


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


def scan(args: argparse.Namespace) -> int:
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
    inputs: list[tuple[Path, bytes, Prepared]] = []
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
        inputs.append((path, data, prepare(engine, data, rules)))
    campaigns = _campaigns([prepared for _, _, prepared in inputs], args.recipient)
    for (path, data, prepared), (campaign, diffed) in zip(inputs, campaigns, strict=True):
        link = open_links(tokens, cfg.web.public_url, args.recipient or "", prepared.list_id,
                          "SCAN")
        decided = decide_copy(engine, prepared, args.recipient, policy, rules, link,
                              diffed=diffed)
        copy = _finish(steps, data, decided, args.recipient or "", policy, prepared.list_id)
        analysis = prepared.original.analysis
        everything = (engine.items(analysis, args.recipient, policy, diffed)
                      if analysis is not None else [])
        items = _items(decided, everything)
        problems = tuple(dict.fromkeys(
            [*(analysis.problems if analysis is not None else ()), *decided.problems]))
        if args.json:
            print(json.dumps({"file": str(path), "policy": policy.value,
                              "recipient": args.recipient, "outcome": decided.outcome.value,
                              "campaign": campaign,
                              "findings": [_finding(i) for i in items],
                              "problems": list(problems),
                              "footer": copy.report.get("footer") if copy else None,
                              "unsubscribe": copy.report.get("unsubscribe") if copy else None},
                             ensure_ascii=False))
        else:
            _table(path, policy, decided.outcome, items, problems, campaign)
        if args.output is not None and copy is not None:
            target = out_dir / path.name if out_dir is not None else args.output
            try:
                target.write_bytes(copy.data)
            except OSError as exc:
                print(f"beacon-proxy: {target}: {exc.strerror}", file=sys.stderr)
                status = 1
    return status


def _campaigns(prepared: list[Prepared], recipient: str | None
               ) -> list[tuple[dict[str, Any] | None, frozenset[tuple[int, int]]]]:
    """For each message: its campaign (key, copies) when other copies were given, and
    the references that differ between those copies (``campaign-diff``)."""
    groups: dict[str, list[int]] = {}
    for n, p in enumerate(prepared):
        analysis = p.original.analysis
        if analysis is not None:
            groups.setdefault(campaign_key(analysis, recipient).digest, []).append(n)
    out: list[tuple[dict[str, Any] | None, frozenset[tuple[int, int]]]] = [
        (None, frozenset())] * len(prepared)
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        refs = [loaded(analysis) for n in members
                if (analysis := prepared[n].original.analysis) is not None]
        positions = personal_urls([[(r.element, r.url) for r in copy] for copy in refs])
        for n, copy in zip(members, refs, strict=True):
            out[n] = ({"key": digest, "copies": len(members)},
                      references_at(copy, positions))
    return out


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
           problems: tuple[str, ...], campaign: dict[str, Any] | None) -> None:
    trackers = sum(1 for i in items if i.finding.tracker)
    print(f"{path}: {len(items)} remote reference(s), {trackers} tracker(s); "
          f"policy {policy.value}; copy {outcome.value}")
    if campaign is not None:
        print(f"  campaign {campaign['key'][:12]}: diffed with {campaign['copies'] - 1} "
              "other cop(ies)")
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
