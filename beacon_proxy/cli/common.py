"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

from beacon_proxy.config import Config, load_config

__all__ = ["CliError", "add_config_option", "config_from"]


class CliError(Exception):
    """A one-line reason to stop; printed without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="TOML configuration file (default: $BEACON_PROXY_CONFIG, else built-in defaults)",
    )


def config_from(args: argparse.Namespace) -> Config:
    return load_config(args.config)
