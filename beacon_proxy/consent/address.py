"""Recipient addresses and list ids as the store keys them.

Addresses follow the relay's own envelope rules (no spaces or control
characters, at most 64 octets of local part and 254 in all, a host name or an
address literal after the ``@``).  Each is stored in one canonical form and
looked up by a key:

* **canonical form** (``Address.text``, what listings show): the local part
  as written (a quoted one whose content needs no quotes without them:
  ``"ann"`` is ``ann``), Unicode-normalised to NFC, ``@``, the domain lower-cased and
  IDNA-encoded (UTS 46 mapping, IDNA 2008 A-labels: ``bücher.DE`` ->
  ``xn--bcher-kva.de``).  A domain the relay accepts but IDNA 2008 does not
  (an emoji label, an ``xn--`` label that is no valid Punycode, a right-to-left
  label mixed with Latin letters, a label longer than 63 octets once encoded) is
  keyed label by label: an ASCII label lower-cased, any other lower-cased and
  Punycode-encoded (``💩.la`` and ``xn--ls8h.la`` are one domain), so every
  address the relay delivers to can have a record, a suppression and a working
  preference link.  IPv4 literals are kept as written (they have one spelling);
  IPv6 literals are written in their RFC 5952 form (``[IPv6:2001:DB8:0::1]`` ->
  ``[IPv6:2001:db8::1]``).
* **key** (``Address.key``): the canonical form with the local part
  lower-cased as well.  RFC 5321 lets a server treat ``Ann`` and ``ann`` as
  different mailboxes, but no real one does, and a refusal must not be lost
  to a capital letter; so every lookup is case-insensitive.  ``str.lower``
  is used, not ``casefold``: ``ß`` stays distinct from ``ss``.

    >>> a = parse_address("Ann.Lee@Bücher.DE")
    >>> a.text, a.key
    ('Ann.Lee@xn--bcher-kva.de', 'ann.lee@xn--bcher-kva.de')
    >>> parse_address("ann@")
    Traceback (most recent call last):
    ...
    beacon_proxy.consent.address.AddressError: the domain is missing

List ids are the ``List-Id`` header's identifier (RFC 2919), lower-cased:

    >>> normalize_list_id("Weekly news <News.Example.org>")
    'news.example.org'
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import idna

from beacon_proxy.address import address_problem, plain_local_part

__all__ = [
    "Address",
    "AddressError",
    "ListIdError",
    "list_key",
    "lookup_key",
    "normalize_list_id",
    "parse_address",
]

MAX_LIST_ID = 255
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


class AddressError(ValueError):
    """Not an address the store accepts; the message says why."""


class ListIdError(ValueError):
    """Not a list id (the identifier of a ``List-Id`` header)."""


@dataclass(frozen=True, slots=True)
class Address:
    text: str  # canonical form, shown in listings and exports
    key: str  # what lookups compare: canonical form, local part lower-cased


def _problem(address: str) -> str | None:
    """Why ``address`` is not an envelope address (the relay's own RCPT rules), or ``None``."""
    return address_problem(address, smtputf8=True)


def _domain(domain: str) -> str:
    if domain.startswith("["):  # an address literal; _problem() checked it
        if domain[1:6].upper() == "IPV6:":
            return f"[IPv6:{ipaddress.IPv6Address(domain[6:-1]).compressed}]"
        return domain  # IPv4: one spelling (no leading zeros)
    if domain.isascii():
        ascii_domain = domain.lower()
        if not any(label.startswith("xn--") for label in ascii_domain.split(".")):
            return ascii_domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return _labelwise(domain)


def _labelwise(domain: str) -> str:
    """A domain IDNA 2008 refuses, keyed label by label (see the module docstring).

    >>> _labelwise("\N{PILE OF POO}.LA"), _labelwise("xn--ZZ.example")
    ('xn--ls8h.la', 'xn--zz.example')
    """
    return ".".join(label.lower() if label.isascii()
                    else "xn--" + label.lower().encode("punycode").decode("ascii")
                    for label in domain.split("."))


def parse_address(text: str) -> Address:
    """The canonical :class:`Address` for ``text``; raises :class:`AddressError`."""
    if not isinstance(text, str):
        raise AddressError("the address must be a string")
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text:
        raise AddressError("the address is empty")
    text = unicodedata.normalize("NFC", text)
    problem = _problem(text)
    if problem is not None:
        raise AddressError(problem)
    local, _, domain = text.rpartition("@")
    local = plain_local_part(local)
    canonical = f"{local}@{_domain(domain)}"
    if len(canonical.encode("utf-8")) > 254:
        raise AddressError("the address is longer than 254 octets once the domain is encoded")
    return Address(canonical, f"{local.lower()}@{canonical.rpartition('@')[2]}")


#: What keeps an ASCII address off :func:`lookup_key`'s shortcut: a character that
#: stripping, unquoting or an address literal would treat apart (whitespace is not
#: printable but for the space).
_NOT_PLAIN: Final = re.compile(r'[ "<>\[]|xn--', re.IGNORECASE)


def lookup_key(text: str) -> str:
    """The key for a recipient as the relay has it; never raises.

    Envelope addresses were checked when the mail was received; one that still
    does not parse is looked up by its lower-cased text.

    An address of printable ASCII with an ``@`` and no space, quote, angle bracket,
    ``[`` or ``xn--`` has the key ``text.lower()`` whether it parses or not (parsed:
    its local part is not quoted, so it stays as written, and its domain is neither a
    literal nor IDNA, so it is only lower-cased; not parsed: the fallback has nothing
    to strip), so it is not parsed (some 5 us a recipient, once a message).
    """
    if text.isascii() and text.isprintable() and "@" in text and not _NOT_PLAIN.search(text):
        return text.lower()
    try:
        return parse_address(text).key
    except AddressError:
        return text.strip().strip("<>").lower()


def normalize_list_id(value: str) -> str:
    """The list id of a ``List-Id`` header value (or of a bare id); raises :class:`ListIdError`."""
    if not isinstance(value, str):
        raise ListIdError("the list id must be a string")
    text = value.strip()
    start, end = text.rfind("<"), text.rfind(">")
    if start >= 0 and end > start:
        text = text[start + 1 : end].strip()
    if not text:
        raise ListIdError("the list id is empty")
    if len(text) > MAX_LIST_ID:
        raise ListIdError(f"the list id is longer than {MAX_LIST_ID} characters")
    if not _LIST_ID.match(text):
        raise ListIdError(f"not a list id (dot-atom such as news.example.org): {value!r}")
    return text.lower()


#: The last list id :func:`list_key` was asked for and its key (one tuple, replaced
#: whole): a list's messages come in runs, and the key is a pure function of the text.
_last_list: tuple[str, str] = ("", "")


def list_key(value: str | None) -> str:
    """The list id as the relay hands it to a lookup (``""`` for none); never raises."""
    global _last_list
    if not value:
        return ""
    last = _last_list
    if last[0] == value:
        return last[1]
    try:
        key = normalize_list_id(value)
    except ListIdError:
        key = value.strip().strip("<>").lower()
    _last_list = (value, key)
    return key
