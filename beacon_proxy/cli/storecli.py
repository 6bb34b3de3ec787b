"""Helpers for the sub-commands that work on the consent store.

:func:`run_with_store` opens the configured store, runs one coroutine and
closes it, turning every expected failure into a one-line :class:`CliError`
(exit 1): a bad address or value, a bad CSV row (with its line), a store
that cannot be reached.  Configuration errors exit 2 as everywhere.

A SQLite store that does not exist is an error too, naming the file looked
for: the relay creates its store when it first starts, so a missing file
almost always means the command read another configuration than the relay
(run from another directory, without ``--config``) and would change a new,
empty store the relay never sees.  ``--create-store`` creates it on purpose
(to import consent before the relay's first start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from beacon_proxy.cli.common import CliError, add_config_option, config_from, config_name
from beacon_proxy.config import Config
from beacon_proxy.consent.address import AddressError, ListIdError
from beacon_proxy.consent.csvio import CsvError, Kind, export_csv, import_file
from beacon_proxy.consent.model import (
    MAX_TEXT,
    Imported,
    InvalidValue,
    StoreError,
    iso,
    parse_time,
    to_json,
)
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import Store, open_store, sqlite_path

__all__ = [
    "actor",
    "add_common",
    "add_import_export",
    "check_store_exists",
    "export_command",
    "export_to",
    "import_command",
    "iso_time",
    "print_json",
    "progress_printer",
    "run",
    "run_with_store",
    "short_time",
]

T = TypeVar("T")


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = False) -> None:
    add_config_option(parser)
    parser.add_argument(
        "--create-store", action="store_true",
        help="create the SQLite store if it does not exist (the relay creates it on its "
        "first start; without this flag a missing store is an error)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")


def actor() -> str:
    """Who made a change from the command line, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def iso_time(text: str) -> datetime:
    """argparse type for ISO 8601 times."""
    try:
        return parse_time(text)
    except InvalidValue:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def short_time(ts: datetime) -> str:
    return iso(ts)[:19] + "Z"


def print_json(record: Any) -> None:
    data = record if isinstance(record, dict) else to_json(record)
    print(json.dumps(data, ensure_ascii=False))


def progress_printer(what: str) -> Callable[[int], None] | None:
    """A progress line on standard error, only when it is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(rows: int) -> None:
        print(f"\r{what}: {rows} rows", end="", file=sys.stderr, flush=True)

    return show


def run_with_store(args: argparse.Namespace,
                   work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store, run ``work`` with it, close it."""
    cfg = config_from(args)
    if not getattr(args, "create_store", False):
        check_store_exists(cfg)
    store = open_store(cfg.store.url, unknown=Policy(cfg.policy.unknown), pool_size=2,
                       cache_size=0)

    async def go() -> T:
        try:
            await store.open()
        except StoreError as exc:
            raise CliError(f"cannot open the consent store: {exc}") from None
        try:
            return await work(store)
        finally:
            with contextlib.suppress(Exception):
                await store.close()

    return run(go())


def check_store_exists(cfg: Config) -> None:
    """A one-line :class:`CliError` when the configured store is a SQLite file that does
    not exist (see the module docstring)."""
    if urlsplit(cfg.store.url).scheme != "sqlite":
        return
    path = Path(os.path.abspath(sqlite_path(cfg.store.url)))
    if path.exists():
        return
    raise CliError(
        f"no consent store at {path} (configuration: {config_name(cfg)}); the relay creates "
        "it when it first starts: give this command the relay's configuration "
        "(--config FILE or BEACON_PROXY_CONFIG), or pass --create-store to create it now")


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, with the store's expected failures as one-line errors."""
    async def wrapped() -> T:
        return await coro

    try:
        return asyncio.run(wrapped())
    except AddressError as exc:
        raise CliError(f"bad address: {exc}") from None
    except (ListIdError, InvalidValue, CsvError) as exc:
        raise CliError(str(exc)) from None
    except StoreError as exc:
        raise CliError(f"consent store: {exc}") from None
    except BrokenPipeError:
        raise  # the reader went away (``| head``): main() ends quietly
    except OSError as exc:
        raise CliError(f"{exc.filename or ''}{': ' if exc.filename else ''}"
                       f"{exc.strerror or exc}") from None


async def export_to(store: Store, kind: Kind, path: Path | None) -> int:
    """Export as CSV to ``path`` (written whole, then renamed into place) or standard output."""
    items = store.iter_consent() if kind == "consent" else store.iter_suppressions()
    if path is None:
        async def to_stdout(text: str) -> None:
            await asyncio.to_thread(sys.stdout.write, text)

        n = await export_csv(kind, items, to_stdout)
        await asyncio.to_thread(sys.stdout.flush)
        return n
    tmp = path.with_name(f".{path.name}.tmp")
    fh = await asyncio.to_thread(tmp.open, "w", encoding="utf-8", newline="")
    try:
        async def to_file(text: str) -> None:
            await asyncio.to_thread(fh.write, text)

        n = await export_csv(kind, items, to_file)
        await asyncio.to_thread(fh.close)
        await asyncio.to_thread(tmp.replace, path)
        return n
    finally:
        fh.close()
        await asyncio.to_thread(tmp.unlink, missing_ok=True)


def import_command(args: argparse.Namespace, kind: Kind) -> int:
    """``consent import`` / ``suppress import``: FILE, ``--dry-run``, ``--source``."""
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    # The default names the file; a name that is not printable text (undecodable
    # bytes, a newline) or is too long must not make the import fail.
    name = "".join(c if c.isprintable() else "?" for c in path.name)
    source = args.source or f"csv:{name}"[:MAX_TEXT]
    progress = progress_printer(f"importing {path.name}")

    async def work(store: Store | None) -> Imported:
        try:
            return await import_file(store, path, kind, dry_run=args.dry_run, actor=actor(),
                                     source=source, progress=progress)
        except CsvError as exc:
            done = "" if args.dry_run else "; nothing imported"
            raise CliError(f"{path}: {exc}{done}") from None

    try:
        if args.dry_run:
            config_from(args)  # a bad configuration is an error here too
            done = run(work(None))
        else:
            done = run_with_store(args, work)
    finally:
        if progress is not None:
            print(file=sys.stderr)
    shown = _shown(path)
    if args.dry_run:
        print(f"{shown}: {done.rows} rows valid (dry run: nothing applied)")
    else:
        print(f"{shown}: imported {done.rows} rows, {done.changed} changed "
              f"({done.rows - done.changed} as stored already: not written, not audited)")
    return 0


def _shown(path: Path) -> str:
    """``path`` as printable text (a name that is not UTF-8 keeps its other characters)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def export_command(args: argparse.Namespace, kind: Kind) -> int:
    """``consent export`` / ``suppress export``: to FILE or standard output."""
    n = run_with_store(args, lambda store: export_to(store, kind, args.file))
    if args.file is not None:
        print(f"{args.file}: exported {n} rows", file=sys.stderr)
    return 0


def add_import_export(csub: Any, kind: Kind, header: str) -> None:
    """The ``import`` and ``export`` actions of ``consent`` and ``suppress``."""
    i: argparse.ArgumentParser = csub.add_parser(
        "import", help=f"import a CSV file ({header}); all rows or none")
    i.add_argument("file", metavar="FILE.csv", type=Path,
                   help=f"a CSV file with the header {header} (see docs/consent.md)")
    i.add_argument("--dry-run", action="store_true", help="validate only; change nothing")
    i.add_argument("--source", help="source recorded for the rows (default: csv:FILE name)")
    add_common(i)
    i.set_defaults(handler=lambda args: import_command(args, kind))
    e: argparse.ArgumentParser = csub.add_parser("export", help=f"export every {kind} row as CSV")
    e.add_argument("file", metavar="FILE.csv", type=Path, nargs="?",
                   help="output file (default: standard output)")
    add_common(e)
    e.set_defaults(handler=lambda args: export_command(args, kind))
