"""``beacon-proxy serve``: run the relay, the web endpoints and delivery."""

from __future__ import annotations

import argparse
import asyncio
import gc
from typing import Any

from beacon_proxy.cli.common import CliError, add_config_option, config_from, path_error, under
from beacon_proxy.config import Config
from beacon_proxy.log import set_worker, setup_logging

__all__ = ["GC_YOUNG_THRESHOLD", "register", "settle_heap"]

#: Container allocations (net of frees) between two collections of the youngest
#: generation, for a serving process (Python's default: 700, 2000 from 3.13; a higher
#: default is kept).  See :func:`settle_heap`.
GC_YOUNG_THRESHOLD = 2000


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the relay", description="Run the SMTP relay, web endpoints and "
        "delivery workers until SIGTERM or SIGINT.",
    )
    add_config_option(p)
    # A worker process of a relay with [smtp] workers > 1, as its supervisor starts it.
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--listen-fds", default="", help=argparse.SUPPRESS)
    p.add_argument("--channel", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from beacon_proxy import internals
    from beacon_proxy.app import ListenError, check_listeners, run  # only when serving
    from beacon_proxy.eventloop import EventLoopError, loop_factory

    missing = internals.missing_internals()
    if missing:
        raise CliError("cannot start: the installed SMTP libraries lack what beacon-proxy "
                       f"uses (install the versions pyproject.toml names): {', '.join(missing)}")
    cfg = config_from(args)
    if args.worker is not None:
        return _serve_worker(args, cfg)
    from beacon_proxy.config import worker_count

    count = worker_count(cfg.smtp)
    try:
        check_listeners(cfg)  # a port in use is said first, before anything is created
    except ListenError as exc:
        raise CliError(f"cannot start: {exc}") from None
    try:
        factory, _ = loop_factory(cfg.smtp.event_loop)
    except EventLoopError as exc:
        raise CliError(f"cannot start: {exc}") from None
    if count > 1:
        set_worker("supervisor")
    setup_logging(cfg.log.level, cfg.log.path)
    settle_heap()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            if count > 1:
                from beacon_proxy.workers import run_supervisor

                runner.run(run_supervisor(cfg, count))
            else:
                runner.run(run(cfg))
    except OSError as exc:
        if under(cfg.spool.path, exc.filename):  # token.secret, lock, the queue folders
            raise path_error("spool.path", cfg.spool.path, exc, "cannot start: cannot use"
                             ) from None
        raise CliError(f"cannot start: {exc}") from None
    return 0


def settle_heap() -> None:
    """Before a serving process's event loop starts: its start-up objects (the modules,
    classes and functions imported, ~57 000 objects) out of the cyclic garbage
    collector's way, and fewer collections of the youngest generation.

    Why: under load the collector took ~55 us a message in the two workers of
    ``bench/relay.py`` (phase c, 20 000 messages, timed with ``gc.callbacks``): a full
    collection every ~10 s that walked the whole heap for 26-55 ms (the event loop
    stopped that long; ~18 us a message), a young collection every ~15 messages and
    their survivors' middle-generation collections.  :func:`gc.freeze` moves every
    object alive now to a generation that is never collected, so a full collection
    walks only what the relay made since (5-10 ms); a first threshold of
    :data:`GC_YOUNG_THRESHOLD` makes fewer young objects live long enough to be walked
    again in the middle generation (Python 3.13's own default is that, 2000, already).
    Measured the same way: ~29 us a message.  What
    stays is the young collections' freeing of garbage cycles (a closed SMTP
    connection leaves ~50 objects in cycles), the same work at any threshold.

    Safe: frozen objects are still freed by reference counting when they are let go
    of; only a cycle among them would never be collected, and start-up leaves none
    behind (:func:`gc.collect` first).  Garbage in cycles waits for up to 2000
    container allocations instead of 700 (RSS flat in the soak); a young collection
    takes up to ~2.5 ms (was ~1), a full one up to ~10 ms (was up to 55).  The
    command line and the tests do not call it."""
    gc.collect()
    gc.freeze()
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, oldest)


def _serve_worker(args: argparse.Namespace, cfg: Config) -> int:
    """One worker process (started by the supervisor, never by hand)."""
    from beacon_proxy.workers import die_with_parent, run_worker

    if args.workers is None or args.channel is None or args.supervisor_pid is None:
        raise CliError("--worker is started by beacon-proxy serve itself, with its channel")
    die_with_parent(args.supervisor_pid)
    set_worker(args.worker)
    setup_logging(cfg.log.level, cfg.log.path)
    fds = [int(fd) for fd in args.listen_fds.split(",") if fd]
    from beacon_proxy.eventloop import EventLoopError, loop_factory

    try:
        factory, _ = loop_factory(cfg.smtp.event_loop)
    except EventLoopError as exc:
        raise CliError(f"cannot start: {exc}") from None
    settle_heap()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run_worker(cfg, args.worker, args.workers, fds, args.channel))
    except OSError as exc:
        if under(cfg.spool.path, exc.filename):
            raise path_error("spool.path", cfg.spool.path, exc, "cannot start: cannot use"
                             ) from None
        raise CliError(f"cannot start: {exc}") from None
    return 0
