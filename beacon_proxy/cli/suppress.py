"""``beacon-proxy suppress add|remove|list|import|export``: suspend delivery.

    beacon-proxy suppress add ann@example.org [--list news.example.org] [--reason TEXT]
    beacon-proxy suppress remove ann@example.org [--list news.example.org]
    beacon-proxy suppress list [--list news.example.org | --global] [--json]
    beacon-proxy suppress import suppressions.csv [--dry-run]
    beacon-proxy suppress export [suppressions.csv]

A suppression without ``--list`` applies to every list; with it, only to
mail whose ``List-Id`` is that list.  The CSV format (header
``address,list,reason``) is described in ``docs/consent.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

from beacon_proxy.cli.common import CliError
from beacon_proxy.cli.storecli import (
    actor,
    add_common,
    add_import_export,
    print_json,
    run_with_store,
    short_time,
)
from beacon_proxy.consent.model import Suppression
from beacon_proxy.consent.store import Store

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "suppress", help="suspend delivery to recipients",
        description="Suspend delivery to recipients, for one list (List-Id) or every list.")
    ssub = p.add_subparsers(dest="suppress_command", metavar="ACTION", required=True)

    a = ssub.add_parser("add", help="suppress an address")
    a.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    a.add_argument("--list", metavar="LIST-ID", help="only this list (default: every list)")
    a.add_argument("--reason", help="why (unsubscribed, complaint, ...)")
    a.add_argument("--source", help="where the request came from")
    add_common(a, json_flag=True)
    a.set_defaults(handler=_add)

    r = ssub.add_parser("remove", help="lift a suppression")
    r.add_argument("address", metavar="ADDR", help="the recipient's e-mail address")
    r.add_argument("--list", metavar="LIST-ID",
                   help="the list's suppression (default: the one for every list)")
    add_common(r)
    r.set_defaults(handler=_remove)

    ls = ssub.add_parser("list", help="list suppressions")
    only = ls.add_mutually_exclusive_group()
    only.add_argument("--list", metavar="LIST-ID", help="only this list's")
    only.add_argument("--global", dest="global_only", action="store_true",
                      help="only those for every list")
    add_common(ls, json_flag=True)
    ls.set_defaults(handler=_list)

    add_import_export(ssub, "suppressions", "address,list,reason")


def _scope(s: Suppression) -> str:
    return f"list {s.list_id}" if s.list_id else "every list"


def _add(args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        s = await store.suppress(args.address, args.list, reason=args.reason,
                                 source=args.source, actor=actor())
        if args.json:
            print_json(s)
        else:
            print(f"{s.address}: suppressed for {_scope(s)}")

    run_with_store(args, work)
    return 0


def _remove(args: argparse.Namespace) -> int:
    async def work(store: Store) -> bool:
        return await store.unsuppress(args.address, args.list, actor=actor())

    scope = f"list {args.list}" if args.list else "every list"
    if not run_with_store(args, work):
        raise CliError(f"{args.address} is not suppressed for {scope}")
    print(f"{args.address}: suppression for {scope} lifted")
    return 0


def _list(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        n, after = 0, None
        while True:
            page = await store.list_suppressions(after=after, limit=1000, list_id=args.list,
                                                 global_only=args.global_only)
            for s in page.items:
                n += 1
                if args.json:
                    print_json(s)
                    continue
                who = s.address or "(forgotten: kept as a hash)"
                print(f"{short_time(s.created_at)}  {_scope(s):<30}  {who}"
                      f"{f'  ({s.reason})' if s.reason else ''}")
            if page.next is None:
                return n
            after = page.next

    n = run_with_store(args, work)
    if not args.json:
        print(f"{n} suppression(s)")
    return 0
