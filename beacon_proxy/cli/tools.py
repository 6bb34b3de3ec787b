"""``beacon-proxy hash-password``: make a password hash for ``[smtp] auth_users``;
``beacon-proxy hash-address``: the name an address has in a pseudonymised log."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from beacon_proxy.cli.common import (
    CliError,
    add_config_option,
    add_unused_config_option,
    config_from,
)
from beacon_proxy.smtpd.passwords import hash_password

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "hash-password", help="hash an SMTP AUTH password for the config file",
        description="Read a password (prompted, or one line on standard input) and print "
        "its scrypt hash for [smtp] auth_users.",
    )
    add_unused_config_option(p)
    p.set_defaults(handler=_hash)
    a: argparse.ArgumentParser = sub.add_parser(
        "hash-address", help="the pseudonym of an address in the relay's log",
        description="Print the keyed hash ([log] pseudonymize) an address appears as in the "
        "log, to look it up: grep the log for it.  It is keyed with the current token "
        "secret, so it changes when that secret is rotated.",
    )
    a.add_argument("addresses", nargs="+", metavar="ADDRESS",
                   help="e-mail addresses to print the pseudonym of")
    add_config_option(a)
    a.set_defaults(handler=_hash_address)


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


def _hash_address(args: argparse.Namespace) -> int:
    from beacon_proxy.log import pseudonym, pseudonym_key
    from beacon_proxy.tokens import load_secrets

    cfg = config_from(args)
    generated = cfg.spool.path / "token.secret"
    if not (cfg.tokens.secret or cfg.tokens.secret_file or generated.exists()):
        raise CliError(f"no token secret: neither [tokens] secret nor {generated} (the one "
                       "the relay generates on its first start) exists")
    try:
        secrets, _ = load_secrets(cfg.tokens, generated)
    except OSError as exc:
        raise CliError(f"cannot read the token secret: {exc}") from None
    key = pseudonym_key(secrets[0])
    for address in args.addresses:
        print(f"{pseudonym(address, key)}\t{address}")
    return 0
