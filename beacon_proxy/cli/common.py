"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from beacon_proxy.config import Config, load_config

__all__ = ["CliError", "add_config_option", "config_from", "config_name", "path_error",
           "under"]


class CliError(Exception):
    """A one-line reason to stop; printed without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="TOML configuration file (default: $BEACON_PROXY_CONFIG, else "
        "/etc/beacon-proxy/beacon-proxy.toml when it exists, else built-in defaults; "
        "`beacon-proxy config show` says which applies)",
    )


def add_unused_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config`` for a command that reads no configuration: every command takes it (a
    script may pass it to each), and this one says that it does not read the file."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="accepted as by every command; this one reads no configuration")


def config_from(args: argparse.Namespace) -> Config:
    """The configuration a command uses (see :func:`beacon_proxy.config.find_config`)."""
    return load_config(args.config)


def config_name(cfg: Config) -> str:
    """The file a configuration came from, for messages: its path or "built-in defaults"."""
    return str(cfg.source) if cfg.source is not None else "built-in defaults"


def path_error(key: str, path: Path, exc: OSError, doing: str = "cannot use") -> CliError:
    """A one-line error for an ``OSError`` under a configured path: names the key, the
    path, the reason and the file it concerns (when not the path itself).

    >>> str(path_error("spool.path", Path("/var/spool/bp"),
    ...                PermissionError(13, "Permission denied", "/var/spool/bp/active")))
    'cannot use spool.path /var/spool/bp: Permission denied (/var/spool/bp/active)'
    """
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != path else ""
    return CliError(f"{doing} {key} {path}: {exc.strerror or exc}{where}")


def under(path: Path, filename: object) -> bool:
    """Whether the file an ``OSError`` names (``exc.filename``) is ``path`` or inside it."""
    if not isinstance(filename, str | Path):
        return False
    return Path(filename) == path or path in Path(filename).parents
