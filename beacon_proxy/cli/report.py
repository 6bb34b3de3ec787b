"""``beacon-proxy report [LOGFILE...|-]``: a pflogsumm-style summary of the relay log.

    beacon-proxy report /var/log/beacon-proxy.log.1.gz /var/log/beacon-proxy.log
    beacon-proxy report --since 24h --top 20
    journalctl -u beacon-proxy -o cat | beacon-proxy report - --json

Files may be plain or gzip-compressed (as logrotate leaves them; recognised
by their first bytes, not their name); ``-`` reads standard input.  Without a
LOGFILE, the configured ``[log] path``.  The aggregation is
:mod:`beacon_proxy.logreport`; ``docs/logging.md`` ("Reports") describes the
tables and the ``--json`` object.  A file that cannot be read is named on
standard error and the exit status is 1; the others are still reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from beacon_proxy.cli.common import CliError, add_config_option, config_from

__all__ = ["register", "since_time"]

_RELATIVE = re.compile(r"(\d+)\s*([mhdw])\Z")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "report", help="summarise relay logs (pflogsumm-style)",
        description="Summarise relay logs: totals by event, deferral and bounce reasons, "
        "upstream replies, senders, lists, trackers by vendor and kind, per-hour volume, "
        "rejections and AUTH failures.  Plain or gzip files; - for standard input; "
        "without LOGFILE, the configured [log] path.",
    )
    p.add_argument("logfiles", nargs="*", metavar="LOGFILE",
                   help="relay log files (plain or .gz), or - for standard input")
    p.add_argument("--since", metavar="TIME", default=None,
                   help="only events at or after TIME: ISO 8601 (UTC unless a zone is "
                   "given) or relative to now, e.g. 30m, 24h, 7d, 2w")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="rows per table (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print the numbers as one JSON object (see docs/logging.md)")
    add_config_option(p)
    p.set_defaults(handler=_report)


def since_time(text: str, now: float) -> str:
    """``--since`` as a time in the log's own form (``2026-11-28T10:00:00.000Z``).

    >>> since_time("24h", now=86400 * 2)
    '1970-01-02T00:00:00.000Z'
    >>> since_time("2026-11-28T12:00+02:00", now=0)
    '2026-11-28T10:00:00.000Z'
    """
    from beacon_proxy.consent.model import InvalidValue, parse_time

    relative = _RELATIVE.match(text.strip())
    try:
        if relative is None:
            at = parse_time(text)
        else:
            at = datetime.fromtimestamp(now, UTC) - timedelta(
                seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
    except InvalidValue:
        raise CliError(f"--since: neither an ISO 8601 time nor a span such as 24h or 7d: "
                       f"{text!r}", 2) from None
    except OverflowError:
        raise CliError(f"--since: {text!r} reaches back before the year 1", 2) from None
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@contextmanager
def _opened(name: str) -> Iterator[IO[bytes] | gzip.GzipFile]:
    """A log file (or standard input for ``-``) as bytes, gunzipped when it is gzip."""
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    try:
        peek = getattr(raw, "peek", None)
        head = peek(2)[:2] if peek is not None else b""
        if head == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _report(args: argparse.Namespace) -> int:
    from beacon_proxy.logreport import Summary, render

    if args.top < 1:
        raise CliError("--top must be at least 1", 2)
    names: list[str] = args.logfiles
    if not names:
        path = config_from(args).log.path
        if path is None:
            raise CliError("no LOGFILE given and [log] path is not set (the relay logs to "
                           "standard error): name the files, or - for standard input", 2)
        names = [str(path)]
    since = None if args.since is None else since_time(args.since, time.time())
    summary = Summary(since=since)
    failed = False
    for name in names:
        shown = "(stdin)" if name == "-" else name
        try:
            with _opened(name) as stream:
                error = summary.read(stream, shown)
        except OSError as exc:  # missing, unreadable, a directory
            error = summary.fail(shown, exc)
        if error is not None:
            print(f"beacon-proxy: {shown}: {error}", file=sys.stderr)
            failed = True
    report = summary.to_json(top=args.top)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        sys.stdout.write(render(report))
    return 1 if failed else 0
