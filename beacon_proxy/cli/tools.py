"""``beacon-proxy hash-password``: make a password hash for ``[smtp] auth_users``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from beacon_proxy.cli.common import CliError
from beacon_proxy.smtpd.passwords import hash_password

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "hash-password", help="hash an SMTP AUTH password for the config file",
        description="Read a password (prompted, or one line on standard input) and print "
        "its scrypt hash for [smtp] auth_users.",
    )
    p.set_defaults(handler=_hash)


def _hash(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise CliError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("empty password")
    print(hash_password(password))
    return 0
