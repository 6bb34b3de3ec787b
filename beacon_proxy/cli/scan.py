"""``beacon-proxy scan PATH...``: check newsletters offline, no server needed.

Each message - a file that is one message (``.eml``, a Maildir's
``cur``/``new`` file), each message of an mbox file (labelled ``FILE#N``), or
an HTML document (``*.html``, ``*.htm`` or a file that starts like one: a
template or a newsletter tool's export, scanned as a message's one
``text/html`` part and written back by ``--output`` as HTML); directories are
walked for ``*.eml``, ``*.html`` and ``*.htm`` files and for files that start
like a message or an mbox - is analysed as the relay would for one recipient
and policy: every remote reference found, and what the policy does with it.  The
default output is a readable table;
``--json`` prints one JSON object per file, one per line::

    {"file": "news.eml", "policy": "refused", "recipient": null,
     "outcome": "stripped", "campaign": null,
     "findings": [{"url": "...", "element": "img", "tracker": true,
                   "vendor": "SendGrid", "reasons": ["rule:SendGrid", "tiny"],
                   "action": "strip"}, ...],
     "problems": []}

The copy is decided exactly as the relay decides it
(:func:`~beacon_proxy.rewrite.copies.decide`, with ``[policy] unscannable``
and ``signed``): ``outcome`` says which path made it, and each finding's
``action`` is what that copy really does - under the ``fallback`` outcome
every remote reference is neutralised (``strip``); a ``held`` copy is not sent
at all (``keep``, and no ``--output`` file).

Several copies of one campaign (the same :func:`~beacon_proxy.rewrite.campaign.campaign_key`:
sender domain, ``List-Id``, subject without the recipient's name and numbers,
HTML skeleton) are diffed as the relay will diff them
(:mod:`~beacon_proxy.rewrite.campaign`): every loaded URL that differs between
the copies by an identifier-like token is a tracker with the reason
``campaign-diff`` in each copy, and ``"campaign": {"key", "copies"}`` names
the group (``null`` for a file with no other copy).  Files of different
campaigns are grouped and diffed within their group; a single file is
scanned alone.

``--output`` writes the copy the recipient would get (without the relay's
trace header): the rewritten message with the footer and the unsubscribe
headers; a file for one input, a directory (created if needed) for several.
``--json`` also says what the footer and the unsubscribe step did
(``"footer"``, ``"unsubscribe"``, ``"read_receipt"``: their relay-log reports;
``"read_receipt": "removed"`` when a refused copy lost a read-receipt request) and what a
precise copy's calendar parts lost (``"calendar_loads"``, 0 when nothing; null when the
copy was not made by the precise path).  The links are
genuine only when the configured ``[tokens] secret`` is set.  An output path
that is an input is refused (exit 2) unless ``--in-place`` is given, which
without ``--output`` writes each copy over its input (through a rename; not for
an mbox).  The table's REASONS column lists whole reasons and ``+N`` for N that
do not fit (``--json`` has them all).  Exit status: 0, or 1 when a file could
not be read or written or is not a message (empty, binary data, no header
section and no HTML document; the others are still scanned).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from beacon_proxy.cli.common import add_config_option
from beacon_proxy.consent.policy import Policy

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scan", help="check newsletters for beacons offline",
        description="Show the beacons in .eml or HTML files and what a policy would do with "
        "them.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="messages (.eml, a Maildir's files, mbox files, HTML files) or directories "
                   "of them")
    p.add_argument("--recipient", metavar="ADDR",
                   help="also find URLs that carry this address (raw, encoded or hashed)")
    p.add_argument("--policy", choices=[p.value for p in Policy], default=None,
                   help="what to do with trackers (default: [policy] unknown)")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--output", metavar="FILE", type=Path,
                   help="write the rewritten message (a directory for several inputs); "
                   "never over an input without --in-place")
    p.add_argument("--in-place", action="store_true",
                   help="write each rewritten message over its input file (with --output: "
                   "allow OUTPUT to be an input)")
    add_config_option(p)
    p.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace) -> int:
    from beacon_proxy.cli.scanning import scan  # the engine, only when scanning

    return scan(args)
