"""``beacon-proxy hash-token``: make an admin API token and its hash for ``[api.tokens]``.

With no input it makes a random token and prints it, then the line to paste
into the configuration's ``[api.tokens]`` table::

    token: 3q2-7wEAAAB...          (give this to the client; it is not stored)
    crm-sync = "sha256:0f1e..."    (the name is --name, default "admin")

With ``--stdin`` it hashes the token read from standard input (one line) and
prints only the configuration line.  Only the hash goes into the configuration
file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from beacon_proxy.cli.common import CliError, add_unused_config_option
from beacon_proxy.config import is_token_name
from beacon_proxy.web.auth import MIN_TOKEN_LENGTH, hash_token, new_token

__all__ = ["config_line", "register"]

#: A TOML bare key (others are quoted: a dot would make a dotted key).
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "hash-token", help="make an admin API token and its hash for the config file",
        description="Print a new random admin API token and the line to paste into "
        '[api.tokens] (NAME = "sha256:..."); or, with --stdin, that line for the token '
        "read from standard input.")
    p.add_argument("--stdin", action="store_true", help="hash a token read from standard input")
    p.add_argument("--name", default="admin", type=_name,
                   help="the token's name in [api.tokens], shown as the actor in the audit "
                   "trail (api:NAME); letters, digits, - _ and . (default: admin)")
    add_unused_config_option(p)
    p.set_defaults(handler=_hash)


def _name(text: str) -> str:
    if not is_token_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: token names are letters, digits, - _ and . (at most 64)")
    return text


def config_line(name: str, token: str) -> str:
    """The ``[api.tokens]`` line for a token, ready to paste.

    >>> config_line("crm.sync", "x" * 32).split(" = ")[0]
    '"crm.sync"'
    """
    key = name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
    return f'{key} = "{hash_token(token)}"'


def _hash(args: argparse.Namespace) -> int:
    if not args.stdin:
        token = new_token()
        print(f"token: {token}")
        print(config_line(args.name, token))
        return 0
    token = sys.stdin.readline().strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise CliError(f"a token must be at least {MIN_TOKEN_LENGTH} characters "
                       "(run without --stdin to make one)")
    print(config_line(args.name, token))
    return 0
