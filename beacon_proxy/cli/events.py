"""``beacon-proxy events opens|forwards``: recorded opens, and the queue of forwards.

    beacon-proxy events opens [--since 2026-11-01] [--address ADDR] [--list LIST-ID]
                              [--machine yes|no] [--limit N] [--json]
    beacon-proxy events forwards [--state pending|done|failed] [--limit N] [--json]

``--machine no`` keeps people's opens only (leaves out image proxies such as
Apple Mail Privacy Protection and security scanners), ``--machine yes`` only theirs.

``opens`` are those of consenting recipients only.  ``forwards`` are the
one-click unsubscribes queued for the senders' own URLs, with their attempts
and last error (``failed`` ones are kept for inspection).  Oldest first;
``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from beacon_proxy.cli.common import CliError
from beacon_proxy.cli.storecli import (
    add_common,
    iso_time,
    print_json,
    run_with_store,
    short_time,
)
from beacon_proxy.consent.model import ForwardState, Page
from beacon_proxy.consent.store import Store

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "events", help="read recorded events", description="Read recorded events.")
    esub = p.add_subparsers(dest="events_command", metavar="KIND", required=True)
    o = esub.add_parser("opens", help="recorded opens, oldest first")
    o.add_argument("--since", metavar="ISO-TIME", type=iso_time,
                   help="only opens at or after this time (UTC unless a zone is given)")
    o.add_argument("--address", metavar="ADDR", help="only this recipient's")
    o.add_argument("--list", metavar="LIST-ID", help="only this list's")
    o.add_argument("--machine", choices=("yes", "no"), default=None,
                   help="only opens by image proxies and scanners (yes) or by people (no)")
    o.add_argument("--limit", type=int, default=None, metavar="N", help="at most N opens")
    add_common(o, json_flag=True)
    o.set_defaults(handler=_opens)
    f = esub.add_parser("forwards", help="queued one-click forwards, oldest first")
    f.add_argument("--state", choices=[s.value for s in ForwardState],
                   help="only forwards in this state")
    f.add_argument("--limit", type=int, default=None, metavar="N", help="at most N forwards")
    add_common(f, json_flag=True)
    f.set_defaults(handler=_forwards)


def _opens(args: argparse.Namespace) -> int:
    machine = None if args.machine is None else args.machine == "yes"

    def fetch(store: Store, after: str | None, size: int) -> Awaitable[Page[Any]]:
        return store.opens(since=args.since, address=args.address, list_id=args.list,
                           after=after, limit=size, machine=machine)

    def line(e: Any) -> str:
        return (f"{short_time(e.at)}  {e.address}  {e.list_id or '-'}  "
                f"{e.message_id or '-'}  {e.ua_class or '-'}"
                f"{'  machine' if e.machine else ''}")

    return _list(args, fetch, line, "open(s)")


def _forwards(args: argparse.Namespace) -> int:
    def fetch(store: Store, after: str | None, size: int) -> Awaitable[Page[Any]]:
        return store.list_forwards(state=args.state, after=after, limit=size)

    def line(job: Any) -> str:
        return (f"{job.id}  {job.state}  {short_time(job.created_at)}  "
                f"attempts {job.attempts}  next {short_time(job.next_at)}  "
                f"{job.address}  {job.list_id or '-'}  {job.url}"
                f"{'  ' + job.last_error if job.last_error else ''}")

    return _list(args, fetch, line, "forward(s)")


def _list(args: argparse.Namespace,
          fetch: Callable[[Store, str | None, int], Awaitable[Page[Any]]],
          line: Callable[[Any], str], noun: str) -> int:
    """Page through a listing: at most ``--limit`` records, JSON lines or text lines."""
    limit: int | None = args.limit
    if limit is not None and limit < 1:
        raise CliError("--limit must be at least 1")

    async def work(store: Store) -> int:
        n, after = 0, None
        while limit is None or n < limit:
            size = 1000 if limit is None else max(1, min(1000, limit - n))
            page = await fetch(store, after, size)
            for record in page.items:
                n += 1
                if args.json:
                    print_json(record)
                else:
                    print(line(record))
            if page.next is None:
                break
            after = page.next
        return n

    n = run_with_store(args, work)
    if not args.json:
        print(f"{n} {noun}")
    return 0
