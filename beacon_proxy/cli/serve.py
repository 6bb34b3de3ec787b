"""``beacon-proxy serve``: run the relay, the web endpoints and delivery."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from beacon_proxy.cli.common import CliError, add_config_option, config_from, path_error, under
from beacon_proxy.log import setup_logging

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the relay", description="Run the SMTP relay, web endpoints and "
        "delivery workers until SIGTERM or SIGINT.",
    )
    add_config_option(p)
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
    try:
        check_listeners(cfg)  # a port in use is said first, before anything is created
    except ListenError as exc:
        raise CliError(f"cannot start: {exc}") from None
    try:
        factory, _ = loop_factory(cfg.smtp.event_loop)
    except EventLoopError as exc:
        raise CliError(f"cannot start: {exc}") from None
    setup_logging(cfg.log.level, cfg.log.path)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run(cfg))
    except OSError as exc:
        if under(cfg.spool.path, exc.filename):  # token.secret, lock, the queue folders
            raise path_error("spool.path", cfg.spool.path, exc, "cannot start: cannot use"
                             ) from None
        raise CliError(f"cannot start: {exc}") from None
    return 0
