"""Envelope address rules, shared by the SMTP side, the command line and the API.

One rule, RFC 5321's ``Mailbox`` (section 4.1.2), decides what may go into
an envelope at MAIL FROM and RCPT TO, and so also which addresses the
consent store accepts (from the command line, a CSV import or the admin
API):

* the local part is a *dot-string* (atoms of letters, digits and
  ``!#$%&'*+-/=?^_`{|}~`` joined by single dots) or a *quoted string*
  (``"..."`` where ``\\`` escapes the next character); anything else --
  ``<``, ``>``, a second ``@``, ``(``, ``,``, ``;``, ``[`` ... -- must be
  inside quotes;
* the domain is a host name (labels of letters, digits, ``-`` and ``_``) or
  an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``);
* at most 64 octets of local part, 255 of domain and 254 in all (a 256-octet
  path less its angle brackets);
* never a control character or a space, not even quoted (RFC 5321 allows a
  quoted space, but such addresses only ever come from mistakes and break
  the tools downstream), and never an empty quoted local part (``""``).

Non-ASCII letters (RFC 6531: UTF-8 in atoms, quoted strings and domain
labels) are accepted only with ``smtputf8``: on the SMTP side when the
client gave ``SMTPUTF8`` on MAIL FROM (which the relay advertises), always
in the store, which keeps whatever the relay may receive.  They answer with
a short reason, or ``None`` when the address is acceptable:

    >>> address_problem("alice@example.org", smtputf8=False) is None
    True
    >>> address_problem("bob@", smtputf8=False)
    'the domain is missing'
    >>> address_problem("a<b>@example.org", smtputf8=False)
    "the local part has '<' outside quotes"
    >>> address_problem("jörg@example.de", smtputf8=False)
    'non-ASCII address needs SMTPUTF8'
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

__all__ = ["MAX_ADDRESS", "MAX_DOMAIN", "MAX_LOCAL_PART", "address_problem", "plain_local_part",
           "split_path"]

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1, in octets
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_ADDRESS = 254  # a 256-octet path, less the angle brackets

# Controls, space and DEL never belong in an address (not even quoted); nor do
# their non-ASCII relatives (C1 controls, no-break and other spaces, line and
# paragraph separators).
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-/=?^_`{|}~")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


def address_problem(address: str, *, smtputf8: bool) -> str | None:
    """Why ``address`` (``local@domain``, no brackets) is unacceptable, or ``None``."""
    try:
        raw = address.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: not UTF-8 at all
        return "the address is not valid UTF-8"
    if _FORBIDDEN.search(address) or (
            not address.isascii()
            and any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in address)):
        return "the address contains spaces or control characters"
    if not address.isascii() and not smtputf8:
        return "non-ASCII address needs SMTPUTF8"
    if len(raw) > MAX_ADDRESS:
        return f"the address is longer than {MAX_ADDRESS} octets"
    split = _split(address)
    if isinstance(split, str):
        return split
    local, domain = split
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        return f"the local part is longer than {MAX_LOCAL_PART} octets"
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        return f"the domain is longer than {MAX_DOMAIN} octets"
    if not _domain_ok(domain):
        return "the domain is not a valid host name or address literal"
    return None


def split_path(arg: str) -> tuple[str, str] | None:
    """The address of an SMTP command's path as written, and the parameters after it.

    ``<a@b> SIZE=10`` -> ``("a@b", " SIZE=10")``; ``<>`` -> ``("<>", "")``.  The
    path ends at the first ``>`` outside quotes that ends the argument or is
    followed by a space, so ``<a<b>@x>`` is the address ``a<b>@x`` (which
    :func:`address_problem` then refuses, saying why).  A source route
    (``<@relay:a@b>``) is dropped, as RFC 5321 4.1.2 asks.  An argument without
    angle brackets is taken up to the first space (as Postfix does by
    default).  ``None`` when no ``>`` closes the path.

    Nothing is normalised: the RFC 5322 parser aiosmtpd uses would drop
    comments and blanks and re-quote (``<"a"b@x>`` became ``ab@x``), so the
    address judged would not be the one the client sent.
    """
    text = arg.lstrip(" ")
    if not text.startswith("<"):
        address, space, rest = text.partition(" ")
        return address, space + rest
    quoted, i = False, 1
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted and text[i + 1 : i + 2] in ("", " "):
            path = text[1:i]
            if path.startswith("@") and ":" in path:
                path = path.partition(":")[2]
            return path or "<>", text[i + 1 :]
        i += 1
    return None


def _split(address: str) -> tuple[str, str] | str:
    """(local part, domain) of a syntactically valid mailbox, or why it is not one."""
    if address.startswith('"'):
        end = _quoted_end(address)
        if end is None:
            return "the quoted local part is not closed"
        if end == 1:
            return "the local part is missing"
        local, rest = address[: end + 1], address[end + 1 :]
        if not rest.startswith("@"):
            return "the quoted local part is not followed by @domain"
        domain = rest[1:]
    else:
        local, at, domain = address.partition("@")
        if not at:
            return "the address has no @domain"
        if not local:
            return "the local part is missing"
        problem = _dot_string_problem(local)
        if problem is not None:
            return problem
    if not domain:
        return "the domain is missing"
    if "@" in domain:
        return "the address has more than one @ (quote the local part)"
    return local, domain


def plain_local_part(local: str) -> str:
    r"""A valid local part in its plain form: a quoted string whose content is a dot-string
    loses its quotes and escapes (RFC 5321 4.1.2: ``"ann"`` and ``ann`` name one mailbox,
    and the dot-string form is the one to use); any other stays as written.

    >>> plain_local_part('"ann.lee"'), plain_local_part('"a\\nn"'), plain_local_part('"a b"')
    ('ann.lee', 'ann', '"a b"')
    """
    if not (len(local) > 2 and local.startswith('"') and local.endswith('"')):
        return local
    content = re.sub(r"\\(.)", r"\1", local[1:-1])
    return content if content and _dot_string_problem(content) is None else local


def _quoted_end(address: str) -> int | None:
    """The index of the quote closing the quoted string that starts ``address``."""
    i = 1
    while i < len(address):
        c = address[i]
        if c == "\\":
            i += 2  # quoted-pair: the next character, whatever it is
            continue
        if c == '"':
            return i
        i += 1
    return None


def _dot_string_problem(local: str) -> str | None:
    for c in local:
        if c not in _ATEXT and c != "." and c.isascii():
            return f"the local part has {c!r} outside quotes"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the local part has a dot at its start or end or two in a row (quote it)"
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
