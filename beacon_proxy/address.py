"""Envelope address rules, shared by the SMTP side and the consent store.

aiosmtpd's parser is lenient (it accepts ``<a@b`` or a local part with a
space); these checks decide what may go into an envelope at MAIL FROM and
RCPT TO, and so also which addresses the consent store accepts.  They answer
with a short reason, or ``None`` when the address is acceptable:

    >>> address_problem("alice@example.org", smtputf8=False) is None
    True
    >>> address_problem("bob@", smtputf8=False)
    'the domain is missing'
    >>> address_problem("jörg@example.de", smtputf8=False)
    'non-ASCII address needs SMTPUTF8'
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["MAX_ADDRESS", "MAX_DOMAIN", "MAX_LOCAL_PART", "address_problem"]

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1, in octets
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_ADDRESS = 254  # a 256-octet path, less the angle brackets

# Controls, space and DEL never belong in an address (not even quoted).
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


def address_problem(address: str, *, smtputf8: bool) -> str | None:
    """Why ``address`` (``local@domain``, no brackets) is unacceptable, or ``None``."""
    try:
        raw = address.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: not UTF-8 at all
        return "the address is not valid UTF-8"
    if _FORBIDDEN.search(address):
        return "the address contains spaces or control characters"
    if not address.isascii() and not smtputf8:
        return "non-ASCII address needs SMTPUTF8"
    if len(raw) > MAX_ADDRESS:
        return f"the address is longer than {MAX_ADDRESS} octets"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "the local part is missing" if at else "the address has no @domain"
    if not domain:
        return "the domain is missing"
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        return f"the local part is longer than {MAX_LOCAL_PART} octets"
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        return f"the domain is longer than {MAX_DOMAIN} octets"
    if not _domain_ok(domain):
        return "the domain is not a valid host name or address literal"
    return None


def _domain_ok(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].upper() == "IPV6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    # Non-ASCII labels (U-labels) are allowed here only because the caller has
    # already refused non-ASCII addresses without SMTPUTF8.
    return all(
        _LABEL.match(label) or (not label.isascii() and _ulabel_ok(label))
        for label in domain.split(".")
    )


def _ulabel_ok(label: str) -> bool:
    return label[0] != "-" and label[-1] != "-" and all(c.isalnum() or c == "-" for c in label)
