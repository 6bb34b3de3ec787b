"""``beacon-proxy consent set|get|list|history|import|export|forget``.

    beacon-proxy consent set ann@example.org --beacons granted --source signup-form
    beacon-proxy consent get ann@example.org [--json]
    beacon-proxy consent list [--beacons refused] [--json]
    beacon-proxy consent history ann@example.org [--json]
    beacon-proxy consent import consent.csv [--dry-run] [--source crm-2026-11]
    beacon-proxy consent export [consent.csv]
    beacon-proxy consent forget ann@example.org [--json]

The CSV format (header ``address,beacons,source``) is described in
``docs/consent.md``.  An import is all-or-nothing: the first bad row stops it
with its line number and nothing is applied.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from beacon_proxy.cli.storecli import (
    actor,
    add_common,
    add_import_export,
    print_json,
    run_with_store,
    short_time,
)
from beacon_proxy.consent.address import parse_address
from beacon_proxy.consent.model import Beacons, to_json
from beacon_proxy.consent.store import Store

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "consent", help="manage recipients' beacon consent",
        description="Manage recipients' beacon consent in the consent store.")
    csub = p.add_subparsers(dest="consent_command", metavar="ACTION", required=True)

    s = csub.add_parser("set", help="record a recipient's beacon consent")
    s.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    s.add_argument("--beacons", required=True, choices=[b.value for b in Beacons],
                   help="granted: beacons and open tracking allowed (rewritten through the "
                   "relay); refused: stripped; unknown: no decision, [policy] unknown applies")
    s.add_argument("--source", help="where the consent came from (form, phone, ...)")
    add_common(s, json_flag=True)
    s.set_defaults(handler=_set)

    g = csub.add_parser("get", help="show a recipient's consent and suppressions")
    g.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    add_common(g, json_flag=True)
    g.set_defaults(handler=_get)

    ls = csub.add_parser("list", help="list consent records")
    ls.add_argument("--beacons", choices=[b.value for b in Beacons], help="only this state")
    add_common(ls, json_flag=True)
    ls.set_defaults(handler=_list)

    h = csub.add_parser("history", help="show the audit trail of an address")
    h.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    add_common(h, json_flag=True)
    h.set_defaults(handler=_history)

    add_import_export(csub, "consent", "address,beacons,source")

    f = csub.add_parser("forget", help="erase a recipient (suppressions stay, as a hash)")
    f.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    add_common(f, json_flag=True)
    f.set_defaults(handler=_forget)


def _set(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        rec = await store.set_consent(args.address, args.beacons, source=args.source,
                                      actor=actor())
        if args.json:
            print_json(rec)
        else:
            print(f"{rec.address}: beacons {rec.beacons}")

    run_with_store(args, work)
    return 0


def _get(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        rec, sups = await asyncio.gather(store.get_consent(args.address),
                                         store.suppressions_of(args.address))
        # No record: the address as the store would keep it, and the default applies.
        data: dict[str, Any] = (to_json(rec) if rec is not None else {
            "address": parse_address(args.address).text, "beacons": "unknown",
            "source": None, "actor": None, "updated_at": None})
        state = Beacons(data["beacons"])
        effective = store.unknown.value if state is Beacons.UNKNOWN else state.value
        data["effective"] = effective
        data["suppressions"] = [to_json(s) for s in sups]
        if args.json:
            print_json(data)
            return
        print(f"address:     {data['address']}")
        note = "" if rec is not None else " (no record)"
        if state is Beacons.UNKNOWN:
            note += f", treated as {effective}"
        print(f"beacons:     {state}{note}")
        if rec is not None:
            print(f"source:      {rec.source or '-'}")
            print(f"changed:     {short_time(rec.updated_at)} by {rec.actor or '-'}")
        for s in sups:
            scope = f"list {s.list_id}" if s.list_id else "every list"
            print(f"suppressed:  {scope} since {short_time(s.created_at)}"
                  f"{f' ({s.reason})' if s.reason else ''}")

    run_with_store(args, work)
    return 0


def _list(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        n, after = 0, None
        while True:
            page = await store.list_consent(after=after, limit=1000, beacons=args.beacons)
            for rec in page.items:
                n += 1
                if args.json:
                    print_json(rec)
                else:
                    print(f"{rec.beacons:<8}  {short_time(rec.updated_at)}  {rec.address}"
                          f"{f'  ({rec.source})' if rec.source else ''}")
            if page.next is None:
                return n
            after = page.next

    n = run_with_store(args, work)
    if not args.json:
        print(f"{n} record(s)")
    return 0


def _history(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        after = None
        while True:
            page = await store.history(args.address, after=after, limit=1000)
            for e in page.items:
                if args.json:
                    print_json(e)
                    continue
                change = f"{e.old or '-'} -> {e.new or '-'}"
                extra = " ".join(f"{k}={v}" for k, v in (("list", e.list_id),
                                 ("source", e.source), ("reason", e.reason)) if v)
                print(f"{short_time(e.at)}  {e.action:<18}  {change:<22}  "
                      f"{e.actor or '-'}  {extra}".rstrip())
            if page.next is None:
                return
            after = page.next

    run_with_store(args, work)
    return 0


def _forget(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        done = await store.forget(args.address, actor=actor())
        if args.json:
            print_json(done)
            return
        print(f"forgot {args.address}: consent record {'removed' if done.consent else 'absent'}, "
              f"{done.opens} open event(s) removed, {done.suppressions} suppression(s) kept "
              f"as a hash, {done.audit} audit entr{'y' if done.audit == 1 else 'ies'} redacted, "
              f"{done.forwards} queued forward(s) removed")

    run_with_store(args, work)
    return 0
