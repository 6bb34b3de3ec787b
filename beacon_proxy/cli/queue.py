"""``beacon-proxy queue list|show|retry|delete``: the spool, while the relay runs or not.

``list`` prints one line per queued message (``--json``: one JSON object per
line); ``show ID`` prints the envelope, each recipient's state and last
reply, and the message's header section.  ``retry ID`` (or ``--all``) makes
deferred mail due now and ``delete ID`` removes a message (``--json``: one
object saying what was requested): both leave a
request in the spool's ``control/`` folder that the running relay carries
out within a second (or at its next start); ``delete`` also removes the files
at once.  With several worker processes (``[smtp] workers``) every part of the spool
is read, and a request goes to the part that holds the message (whose worker
carries it out).  A spool that cannot be read (permissions, a file where a folder
should be) is one line naming ``spool.path``, the path and the reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

from beacon_proxy.cli.common import CliError, add_config_option, config_from, path_error
from beacon_proxy.headerfacts import header_block
from beacon_proxy.spool.parts import all_roots, leave_request, owner_of
from beacon_proxy.spool.queue import QueueEntry, Spool, SpoolCorruptError

__all__ = ["entry_to_dict", "register"]


_HEADERS_SHOWN = 65536  # bytes of a message's header shown at most (as the console)
_ID_HELP = "a queue id, as `queue list` shows it and the log's queue_id field has it"
_DONE_JSON = 'print one JSON object: {"action", "queue_id" (null: --all), "requested": true}'


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "queue", help="inspect the delivery queue", description="Inspect the delivery queue.")
    qsub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    lst = qsub.add_parser("list", help="list queued messages")
    lst.add_argument("--json", action="store_true", help="one JSON object per message")
    add_config_option(lst)
    lst.set_defaults(handler=_with_spool(_list))
    show = qsub.add_parser("show", help="show one queued message")
    show.add_argument("queue_id", metavar="ID", help=_ID_HELP)
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(show)
    show.set_defaults(handler=_with_spool(_show))
    retry = qsub.add_parser("retry", help="retry deferred mail now")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("queue_id", metavar="ID", nargs="?", help=_ID_HELP)
    which.add_argument("--all", action="store_true", help="every deferred message")
    retry.add_argument("--json", action="store_true", help=_DONE_JSON)
    add_config_option(retry)
    retry.set_defaults(handler=_with_spool(_retry))
    delete = qsub.add_parser("delete", help="remove a message from the queue (no bounce)")
    delete.add_argument("queue_id", metavar="ID", help=_ID_HELP)
    delete.add_argument("--json", action="store_true", help=_DONE_JSON)
    add_config_option(delete)
    delete.set_defaults(handler=_with_spool(_delete))


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def entry_to_dict(entry: QueueEntry) -> dict[str, Any]:
    env = entry.envelope
    return {
        "queue_id": env.queue_id,
        "state": entry.state,
        "sender": env.sender,
        "message_id": env.message_id,
        "size": env.size,
        "received_at": _iso(env.received_at),
        "client_address": env.client_address,
        "attempts": entry.attempts,
        "last_attempt": _iso(entry.last_attempt),
        "next_attempt": _iso(entry.next_attempt) if entry.attempts else None,
        "bounce_of": env.bounce_of,
        "recipients": [
            {"address": r.address, "state": r.state, "reply": r.reply or None}
            for r in entry.recipients
        ],
    }


def _with_spool(work: Callable[[argparse.Namespace, Spool], int]
                ) -> Callable[[argparse.Namespace], int]:
    """A handler that gets the configured spool; an ``OSError`` reading it (other than a
    closed pipe on standard output) is one line naming ``spool.path``."""
    @functools.wraps(work)
    def handler(args: argparse.Namespace) -> int:
        cfg = config_from(args)
        if not cfg.spool.path.is_dir():
            raise CliError(f"no spool at {cfg.spool.path} (spool.path)")
        spool = Spool(cfg.spool.path)
        try:
            for state in ("active", "deferred"):  # readable folders, or a one-line reason
                os.listdir(spool.root / state)  # (else an unreadable one looks empty)
            return work(args, spool)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise path_error("spool.path", cfg.spool.path, exc, "cannot read") from None
    return handler


def _list(args: argparse.Namespace, spool: Spool) -> int:
    entries = [e for root in all_roots(spool.root) for e in Spool(root).list_sync()]
    entries.sort(key=lambda e: (e.state != "active", e.queue_id))  # as one spool lists
    if args.json:
        for entry in entries:
            print(json.dumps(entry_to_dict(entry), ensure_ascii=False))
        return 0
    if not entries:
        print("queue is empty")
        return 0
    now = time.time()
    print(f"{'ID':<16}  {'STATE':<8}  {'SIZE':>9}  {'AGE':>8}  {'TRIES':>5}  "
          f"{'PENDING':>9}  SENDER")
    for e in entries:
        pending = len(e.pending())
        age = _age(now - e.envelope.received_at)
        print(f"{e.queue_id:<16}  {e.state:<8}  {e.envelope.size:>9}  {age:>8}  "
              f"{e.attempts:>5}  {pending:>4}/{len(e.recipients):<4}  {e.envelope.sender or '<>'}")
    print(f"{len(entries)} message(s)")
    return 0


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _show(args: argparse.Namespace, spool: Spool) -> int:
    queue_id = _queue_id(args.queue_id)
    try:
        found = owner_of(spool.root, queue_id)
        if found is None:
            raise CliError(f"no message {queue_id} in the queue")
        owner, entry = found
        data = owner.read_data_sync(entry)
    except (SpoolCorruptError, ValueError) as exc:
        raise CliError(f"message {queue_id} is unreadable: {exc}") from None
    except FileNotFoundError:
        raise CliError(f"message {queue_id} left the queue meanwhile") from None
    info = entry_to_dict(entry)
    headers = header_block(data, _HEADERS_SHOWN).decode("utf-8", "replace")
    if args.json:
        info["headers"] = headers
        print(json.dumps(info, ensure_ascii=False))
        return 0
    for key in ("queue_id", "state", "sender", "message_id", "size", "received_at",
                "client_address", "attempts", "last_attempt", "next_attempt", "bounce_of"):
        if info[key] is not None:
            print(f"{key + ':':<16}{info[key]}")
    print("recipients:")
    for r in info["recipients"]:
        reply = f"  ({r['reply']})" if r["reply"] else ""
        print(f"  {r['state']:<10} {r['address']}{reply}")
    print()
    # A bare CR is left to show as a mark on a terminal; the header's last line end is print's.
    print(headers.replace("\r\n", "\n").removesuffix("\n"))
    return 0


def _queue_id(text: str) -> str:
    if not text.isalnum():
        raise CliError(f"not a queue id: {text!r}")
    return text


def _retry(args: argparse.Namespace, spool: Spool) -> int:
    if args.all:
        for root in all_roots(spool.root):  # every worker's part
            Spool(root).request_sync("retry", "ALL")
        return _done(args, "retry", None, "retry of every deferred message requested")
    queue_id = _queue_id(args.queue_id)
    if not leave_request(spool.root, "retry", queue_id):  # to the worker that owns it
        raise CliError(f"no message {queue_id} in the queue")
    return _done(args, "retry", queue_id, f"retry of {queue_id} requested")


def _delete(args: argparse.Namespace, spool: Spool) -> int:
    queue_id = _queue_id(args.queue_id)
    if not leave_request(spool.root, "delete", queue_id):
        raise CliError(f"no message {queue_id} in the queue")
    return _done(args, "delete", queue_id, f"deleted {queue_id}")


def _done(args: argparse.Namespace, action: str, queue_id: str | None, text: str) -> int:
    """What a request did: a sentence, or with ``--json`` one object saying the same.

    ``requested``: the request is in the spool for the relay to carry out (a delete has
    also removed the message's files already)."""
    if args.json:
        print(json.dumps({"action": action, "queue_id": queue_id, "requested": True}))
    else:
        print(text)
    return 0
