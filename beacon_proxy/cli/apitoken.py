"""``beacon-proxy hash-token``: make an admin API token and its hash for ``[api.tokens]``.

With no input it makes a random token and prints it with its hash; with a
token on standard input (one line) it prints only the hash.  Only the hash
goes into the configuration file.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from beacon_proxy.cli.common import CliError
from beacon_proxy.web.auth import MIN_TOKEN_LENGTH, hash_token, new_token

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "hash-token", help="make an admin API token and its hash for the config file",
        description="Print a new random admin API token and the hash to put in [api.tokens]; "
        "or, with --stdin, hash the token read from standard input.")
    p.add_argument("--stdin", action="store_true", help="hash a token read from standard input")
    p.set_defaults(handler=_hash)


def _hash(args: argparse.Namespace) -> int:
    if not args.stdin:
        token = new_token()
        print(f"token: {token}")
        print(f"hash:  {hash_token(token)}")
        return 0
    token = sys.stdin.readline().strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise CliError(f"a token must be at least {MIN_TOKEN_LENGTH} characters "
                       "(run without --stdin to make one)")
    print(hash_token(token))
    return 0
