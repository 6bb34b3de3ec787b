"""The ``beacon-proxy`` command: one entry point, one sub-command per task.

Every sub-command takes ``--config FILE`` (or ``BEACON_PROXY_CONFIG``, then
``/etc/beacon-proxy/beacon-proxy.toml`` when it exists; ``config show`` says
which applies), prints help with ``-h`` and exits non-zero with a one-line reason on bad
input: 2 for usage and configuration errors, 1 for everything else.  A reader
that stops reading (``beacon-proxy consent list | head -1``) ends a command
quietly, with status 0.  On a terminal, standard output shows control and
bidirectional formatting characters from stored data (a queued header's escape
sequence, an address's override) as ``<U+XXXX>`` marks
(:class:`~beacon_proxy.display.TerminalText`); a pipe gets the exact text.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from beacon_proxy import __version__
from beacon_proxy.cli import (
    apitoken,
    configcmd,
    consent,
    events,
    queue,
    ready,
    report,
    scan,
    serve,
    suppress,
    tools,
)
from beacon_proxy.cli.common import CliError
from beacon_proxy.config import ConfigError
from beacon_proxy.display import TerminalText

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beacon-proxy",
        description="SMTP hop that enforces each recipient's consent to email beacons.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, scan, queue, consent, suppress, events, tools, apitoken, configcmd,
                   ready):
        module.register(sub)
    report.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    stdout = sys.stdout
    if stdout.isatty():  # not a pipe: what a person reads must not be able to hide
        sys.stdout = TerminalText(stdout)
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"beacon-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"beacon-proxy: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of standard output went away (``| head -1``): stop quietly, as Unix
        # tools do.  Standard output is pointed at /dev/null, so that the interpreter's
        # last flush of what is still buffered does not fail again on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
