"""The DKIM step: every copy leaves signed by the domain in its ``From``.

Rewriting a copy (a tracker removed, the footer, our ``List-Unsubscribe``)
breaks the sender's DKIM signature, and Gmail's and Yahoo's bulk-sender rules
want ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` under a valid
signature aligned with ``From`` (DMARC).  :class:`DkimSigner` is the last
:data:`~beacon_proxy.rewrite.step.CopyStep` of every copy (after the trace
header), so it signs the final bytes:

* the copy's line ends are made CRLF first (what the courier sends anyway,
  ``deliver.smtp.wire_data``), and those are the bytes that leave; a further
  copy of a message is known to have them when its header block has and its
  body was compared with the last copy's
  (:class:`~beacon_proxy.rewrite.dkimbody.BodyHashes`).  The signed copy says
  so (:attr:`Copy.crlf <beacon_proxy.rewrite.step.Copy.crlf>`), and the
  courier does not check its line ends again.  Messages with equal bytes share
  one ``original`` object (:mod:`~beacon_proxy.rewrite.beacons`), so the
  first copy of a newsletter sent as one message per recipient is a further
  copy too.  Its line-start periods, which the courier stuffs, are carried
  from the last copy's through the same comparison (searched only in the
  header and the changed stretches:
  :func:`~beacon_proxy.rewrite.lineends.carried_dots`), and given with it
  (:attr:`Copy.dots <beacon_proxy.rewrite.step.Copy.dots>`): the courier
  does not search the copy for them (0.035 ms for 70 KB);
* ``c=relaxed/relaxed``, ``rsa-sha256`` or ``ed25519-sha256`` (RFC 8463), no
  ``l=``; ``h=`` lists From, To, Subject, Date, Message-ID, List-Id,
  List-Unsubscribe, List-Unsubscribe-Post, MIME-Version, Content-Type and
  Content-Transfer-Encoding, each as often as the copy has it, and ``From``
  once more (over-signed: nobody can add a second ``From`` that a mail client
  would show instead);
* the key: the one whose domain is the ``From`` domain or its closest parent
  (``d=`` aligned with ``From``); several keys of that domain (an RSA and an
  Ed25519 key, as RFC 8463 advises) each add a signature; no key: the copy
  leaves unsigned.  The relay's own bounces (``From: MAILER-DAEMON@<hostname>``)
  are signed the same way when a key covers the relay's host name;
* the sender's ``DKIM-Signature`` fields are removed when the copy changed
  what they sign (body, or a field their ``h=`` names) and kept when those
  are byte-identical to the message as received
  (:attr:`~beacon_proxy.rewrite.step.Recipient.original`).

The report (relay log, ``dkim``): ``"signed d=example.com s=news"`` (several
selectors: ``s=a,b``), ``"no key for example.org"``, ``"no From domain"``,
followed by ``"; sender signature removed"`` / ``"kept"`` when the copy had one.

Cost (``bench/dkim_sign.py``, ``docs/dkim.md``; 70 KB newsletter, idle core):
the relay signs many copies of one message, and a further copy's body is
checked and hashed against the last copy's (:mod:`~beacon_proxy.rewrite.dkimbody`:
only the changed stretches are searched, the SHA-256 of the shared beginning is
reused), 0.09 ms; the header side remembers what every copy of a message
shares (the ``From`` domain, each signed field's canonical form, our field but
for ``t=`` and ``bh=``).  A further RSA-2048 copy then costs 0.89 ms (best;
median 1.0), of which the signature is 0.74 (median 0.82): OpenSSL's through
``cryptography``, not dkimpy's pure-Python RSA.  A first copy, or one the last
copy cannot vouch for, takes the whole-body path: :func:`crlf`, relaxed
canonicalisation in a few whole-buffer ``bytes`` operations, one SHA-256
(1.07 ms with RSA-2048).  Ed25519: 0.16 ms a further copy.

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> key = SigningKey("example.com", "ed1", Ed25519PrivateKey.generate())
>>> signer = DkimSigner([key], clock=lambda: 1_700_000_000)
>>> data, report = signer.sign(b"From: a@news.example.com\\r\\nSubject: hi\\r\\n\\r\\nHello\\r\\n")
>>> report
'signed d=example.com s=ed1'
>>> data.split(b";")[:3]
[b'DKIM-Signature: v=1', b' a=ed25519-sha256', b' c=relaxed/relaxed']
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from beacon_proxy.config import ConfigError, DkimConfig, DkimKeyConfig
from beacon_proxy.log import event
from beacon_proxy.rewrite.dkimbody import BodyHashes, crlf_header_at, relaxed_body
from beacon_proxy.rewrite.lineends import MAX_DOTS, carried_dots, crlf_lines, line_dots
from beacon_proxy.rewrite.step import Copy, Recipient

__all__ = ["SIGNED_HEADERS", "DkimSigner", "SigningKey", "dns_record", "load_keys",
           "relaxed_body", "relaxed_header"]

log = logging.getLogger(__name__)

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SIGNED_HEADERS: Final = ("From", "To", "Subject", "Date", "Message-ID", "List-Id",
                         "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version",
                         "Content-Type", "Content-Transfer-Encoding")
"""The fields ``h=`` covers (those present, as often as present; From once more)."""

_OVERSIGNED: Final = frozenset({"from"})
_SIGNED: Final = {name.lower(): name for name in SIGNED_HEADERS}
_SIGNED_LOWER: Final = frozenset(name.encode() for name in _SIGNED)
_SIGNED_ORDER: Final = tuple((low.encode(), name, int(low in _OVERSIGNED))
                             for low, name in _SIGNED.items())
_MIN_RSA_BITS: Final = 1024  # refused below (RFC 8301)
_GOOD_RSA_BITS: Final = 2048  # warned below
_FOLD: Final = 72  # b= and h= are folded into lines of about this many characters


# --------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One loaded key: ``d=``, ``s=`` and the private key (its ``a=`` follows from it)."""

    domain: str
    selector: str
    private: PrivateKey = field(repr=False)

    @property
    def algorithm(self) -> Algorithm:
        return "rsa-sha256" if isinstance(self.private, rsa.RSAPrivateKey) else "ed25519-sha256"

    def sign(self, data: bytes) -> bytes:
        """The signature of ``data`` (the canonical header block to sign)."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463: Ed25519 (PureEdDSA) over the SHA-256 hash of the data.
        return self.private.sign(hashlib.sha256(data).digest())


def dns_record(key: SigningKey) -> str:
    """The TXT record to publish at ``<selector>._domainkey.<domain>``.

    >>> k = SigningKey("example.com", "ed1", ed25519.Ed25519PrivateKey.from_private_bytes(
    ...     bytes(32)))
    >>> dns_record(k)
    'v=DKIM1; k=ed25519; p=O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik='
    """
    public = key.private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def _read_private_key(where: str, path: Path) -> PrivateKey:
    key_name = f"{where}.private_key_file"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(key_name, f"{path}: {exc.strerror or exc}") from None
    # dkimpy's dknewkey (and OpenDKIM's tools) write an Ed25519 key as the base64 of
    # its 32-byte seed; openssl writes PEM.
    text = raw.strip()
    if len(text) == 44 and not text.startswith(b"-"):
        try:
            seed = base64.b64decode(text, validate=True)
        except binascii.Error:
            seed = b""
        if len(seed) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    try:
        loaded = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise ConfigError(key_name, f"{path}: an encrypted key; give it without a "
                          "passphrase (readable by the relay's user only)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(key_name, f"{path}: not a PEM private key (RSA or Ed25519)") from None
    if not isinstance(loaded, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        kind = type(loaded).__name__.removeprefix("_").replace("PrivateKey", "")
        raise ConfigError(key_name, f"{path}: an {kind} key; DKIM signs with RSA "
                          "(rsa-sha256) or Ed25519 (ed25519-sha256)")
    return loaded


def load_key(conf: DkimKeyConfig) -> SigningKey:
    """Read and check one configured key; raises :class:`ConfigError` naming it."""
    key = SigningKey(conf.domain, conf.selector, _read_private_key(conf.key,
                                                                   conf.private_key_file))
    if conf.algorithm is not None and conf.algorithm != key.algorithm:
        raise ConfigError(f"{conf.key}.algorithm", f"{conf.algorithm}, but "
                          f"{conf.private_key_file} is a key for {key.algorithm}")
    if isinstance(key.private, rsa.RSAPrivateKey):
        bits = key.private.key_size
        if bits < _MIN_RSA_BITS:
            raise ConfigError(f"{conf.key}.private_key_file",
                              f"{conf.private_key_file}: a {bits}-bit RSA key; verifiers "
                              f"ignore signatures by keys under {_MIN_RSA_BITS} bits (RFC 8301)")
        if bits < _GOOD_RSA_BITS:
            event("notice", logging.WARNING, key=f"{conf.key}.private_key_file",
                  message=f"DKIM key {conf.selector}._domainkey.{conf.domain} has {bits} "
                  f"bits; use {_GOOD_RSA_BITS} (some receivers treat shorter keys as weak)")
    return key


def load_keys(conf: DkimConfig) -> tuple[SigningKey, ...]:
    """Every configured key, read and checked (at start-up)."""
    return tuple(load_key(k) for k in conf.all_keys)


# --------------------------------------------------------------------------
# Canonicalisation (RFC 6376 section 3.4, "relaxed")

_HEADER_BLANKS: Final = re.compile(rb"[ \t]+")


def crlf(data: bytes) -> bytes:
    """``data`` with CRLF line ends only (a bare CR or LF becomes CRLF), ending in CRLF
    (:func:`~beacon_proxy.rewrite.lineends.crlf_lines`); empty stays empty."""
    return crlf_lines(data) if data else data


def relaxed_header(raw: bytes) -> bytes:
    r"""The relaxed canonical form of one header field (with its CRLF).

    >>> relaxed_header(b"SUBJect \t:  Hello\r\n \t world  \r\n")
    b'subject:Hello world\r\n'
    """
    name, _, value = raw.partition(b":")
    value = _HEADER_BLANKS.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def _fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """A CRLF header block as (lower-cased name, raw field with its line ends)."""
    out: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\r\n")[:-1]:  # the block ends in CRLF
        if out and line[:1] in (b" ", b"\t"):
            out[-1] = (out[-1][0], out[-1][1] + line + b"\r\n")
        else:
            out.append((line.partition(b":")[0].rstrip(b" \t").lower(), line + b"\r\n"))
    return out


def _body_at(data: bytes) -> int:
    """Where the body of a CRLF message starts (after the empty line; the end when the
    message has none); the header block is ``data[: at - 2]``, ending in CRLF."""
    if data.startswith(b"\r\n"):
        return 2
    end = data.find(b"\r\n\r\n")
    return len(data) + 2 if end < 0 else end + 4


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header block ending in CRLF, body) of a CRLF message."""
    at = _body_at(data)
    return data[: at - 2], data[at:]


# --------------------------------------------------------------------------
# The sender's signatures

_TAG: Final = re.compile(rb"(?:^|;)\s*h\s*=([^;]*)")


def _signed_names(raw: bytes) -> frozenset[bytes]:
    """The field names a DKIM-Signature's ``h=`` lists (lower case)."""
    value = raw.partition(b":")[2]
    m = _TAG.search(value)
    if m is None:
        return frozenset()
    names = re.sub(rb"\s+", b"", m.group(1)).lower().split(b":")
    return frozenset(n for n in names if n)


_Parsed = tuple[list[tuple[bytes, bytes]], bytes]
"""A message's header fields and body (CRLF line ends)."""


def _parse(data: bytes) -> _Parsed:
    header, body = _split(crlf(data))
    return _fields(header), body


def _keep_sender(fields: list[tuple[bytes, bytes]], data: bytes, at: int,
                 original: _Parsed | None) -> list[bool]:
    """Whether each ``dkim-signature`` field of the copy still signs what it signed:
    the body (``data[at:]``) and every field named in its ``h=`` (and every
    DKIM-Signature) are byte-identical to the original's.  Without the original:
    none is kept."""
    sigs = [raw for name, raw in fields if name == b"dkim-signature"]
    if original is None or len(original[1]) != len(data) - at or not data.endswith(original[1]):
        return [False] * len(sigs)
    o_fields = original[0]
    keep = []
    for raw in sigs:
        names = _signed_names(raw)
        covered = names | {b"dkim-signature"}
        keep.append(bool(names) and [f for f in fields if f[0] in covered]
                    == [f for f in o_fields if f[0] in covered])
    if not all(keep):  # a signature over a removed one breaks with it
        keep = [k and b"dkim-signature" not in _signed_names(raw)
                for k, raw in zip(keep, sigs, strict=True)]
    return keep


# --------------------------------------------------------------------------
# Signing

_DOMAIN: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


def _from_domain(fields: list[tuple[bytes, bytes]]) -> str | None:
    """The one domain of the ``From`` addresses (A-labels, lower case), or None."""
    return _domain_of(tuple(raw for name, raw in fields if name == b"from"))


@functools.lru_cache(maxsize=256)
def _domain_of(from_fields: tuple[bytes, ...]) -> str | None:
    """:func:`_from_domain` of these ``From`` fields, remembered: every copy of a
    message has the same (``getaddresses`` is a parser in Python)."""
    values = [raw.partition(b":")[2].replace(b"\r\n", b"").decode("utf-8", "replace")
              for raw in from_fields]
    domains = set()
    for _, address in getaddresses(values):
        local, at, domain = address.rpartition("@")
        if not at or not local:
            return None
        domains.add(domain.strip().rstrip(".").lower())
    if len(domains) != 1:
        return None
    domain = domains.pop()
    if not domain.isascii():
        try:
            import idna  # only for an internationalised From domain

            domain = idna.encode(domain, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError):
            return None
    return domain if _DOMAIN.fullmatch(domain) else None


@functools.lru_cache(maxsize=64)
def _our_field(algorithm: str, domain: str, selector: str, names: tuple[str, ...]
               ) -> tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes]]:
    """Our ``DKIM-Signature`` field up to ``b=``, in three pieces around ``t=``'s and
    ``bh=``'s values, and the same pieces of its relaxed form (what is signed):
    only those two values change from copy to copy.  Relaxed canonicalisation
    cannot join a value to the pieces (it only touches blanks and line ends, and
    neither value has any), so the pieces are cut at two NUL placeholders."""
    field = (f"DKIM-Signature: v=1; a={algorithm}; c=relaxed/relaxed; d={domain};"
             f" s={selector}; t=\0;\r\n\th=").encode("ascii")
    field += _h_value(names) + b";\r\n\tbh=\0;\r\n\tb="
    a, b, c = field.split(b"\0")
    ca, cb, cc = relaxed_header(field)[:-2].split(b"\0")
    return (a, b, c), (ca, cb, cc)


def _b64_folded(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n\t ".join(text[i : i + _FOLD] for i in range(0, len(text), _FOLD))


def _h_value(names: tuple[str, ...]) -> bytes:
    """``h=``'s value, folded between names."""
    lines, line = [], ""
    for name in names:
        if line and len(line) + len(name) + 1 > _FOLD:
            lines.append(line + ":")
            line = name
        else:
            line = f"{line}:{name}" if line else name
    lines.append(line)
    return "\r\n\t ".join(lines).encode("ascii")


class DkimSigner:
    """The copy step that signs each copy (see the module docstring).

    ``cache``: how many messages' last copies are remembered to check and hash a
    further copy against (:class:`~beacon_proxy.rewrite.dkimbody.BodyHashes`; 0:
    none, every copy takes the whole-body path).  Threads may share the step."""

    def __init__(self, keys: Iterable[SigningKey], *,
                 clock: Callable[[], float] = time.time, cache: int = 4) -> None:
        self.clock = clock
        # The last message's original, parsed: every copy of a message shares the object.
        self._original: tuple[bytes, _Parsed] | None = None
        self._bodies = BodyHashes(cache)
        self._keyring: tuple[tuple[SigningKey, ...], dict[str, tuple[SigningKey, ...]]]
        self.replace(keys)

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keyring[0]

    def replace(self, keys: Iterable[SigningKey]) -> None:
        """Sign with ``keys`` from now on (``SIGHUP``: a key rotation without a restart).
        One assignment: a copy being signed in another thread takes the old set or the
        new one, never half of each."""
        keys = tuple(keys)
        by_domain: dict[str, tuple[SigningKey, ...]] = {}
        for k in keys:
            by_domain[k.domain] = (*by_domain.get(k.domain, ()), k)
        self._keyring = (keys, by_domain)

    def keys_for(self, domain: str) -> tuple[SigningKey, ...]:
        """The keys of ``domain`` or of its closest configured parent."""
        labels = domain.split(".")
        by_domain = self._keyring[1]
        for i in range(len(labels)):
            keys = by_domain.get(".".join(labels[i:]))
            if keys:
                return keys
        return ()

    def _parsed(self, original: bytes) -> _Parsed | None:
        if not original:
            return None
        last = self._original  # one read: copies may be rendered in threads
        if last is not None and last[0] is original:
            return last[1]
        parsed = _parse(original)
        self._original = (original, parsed)
        return parsed

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        data, report, dots = self.signed(copy.data, recipient.original)
        # signed() returns CRLF-only bytes ending in CRLF on every path (crlf(), or a
        # header block and a body proven tidy by byte comparison), and their line-start
        # periods: the courier skips its own check and search (Copy.crlf, Copy.dots).
        return Copy(data, {**copy.report, "dkim": report}, copy.held, copy.wait, crlf=True,
                    dots=dots)

    def sign(self, data: bytes, original: bytes = b"") -> tuple[bytes, str]:
        """``data`` with CRLF line ends, the sender's broken signatures removed and
        ours on top; and the report.  ``original``: the message as received (its
        further copies are checked and hashed against the last one: ``BodyHashes``)."""
        signed, report, _ = self.signed(data, original)
        return signed, report

    def signed(self, data: bytes, original: bytes = b""
               ) -> tuple[bytes, str, tuple[int, ...] | None]:
        """:meth:`sign`, and the offsets of the signed copy's line-start periods (what
        the courier stuffs: :attr:`Copy.dots <beacon_proxy.rewrite.step.Copy.dots>`;
        None: more than :data:`~beacon_proxy.rewrite.lineends.MAX_DOTS`).  A further
        copy's are carried from the last copy's through the same comparison that
        proves its body (:func:`~beacon_proxy.rewrite.lineends.carried_dots`), a first
        copy's searched once, instead of the courier searching every copy whole."""
        # Where the body starts when the header block is CRLF only: the body is then
        # all crlf() may have to fix, and a further copy's is checked against the last
        # copy's (BodyHashes).
        at = crlf_header_at(data)
        like = self._bodies.like_last(data, at, original) if at > 0 else None
        if like is None:  # not known to be CRLF only: the whole-buffer check
            data = crlf(data)
            if not data.startswith(b"\r\n") and b"\r\n\r\n" not in data:
                data += b"\r\n"  # a header section without a body: end it
            at = _body_at(data)
            body_dots = _in_body(line_dots(data, limit=MAX_DOTS), at)
        else:
            seen = like.seen.dots
            body_dots = None if seen is None else _in_body(
                carried_dots(data, at, like.pieces, like.gaps, seen), at)
        header = data[: at - 2]
        fields = _fields(header)
        notes = ""
        if any(name == b"dkim-signature" for name, _ in fields):
            keep = iter(_keep_sender(fields, data, at, self._parsed(original)))
            kept = [(n, raw) for n, raw in fields if n != b"dkim-signature" or next(keep)]
            if len(kept) < len(fields):
                header = b"".join(raw for _, raw in kept)
                data, at = header + data[at - 2 :], len(header) + 2
                fields = kept
                notes = "; sender signature removed"
            else:
                notes = "; sender signature kept"
        dots = _with_header(data, at, body_dots)
        domain = _from_domain(fields)
        if domain is None:
            return data, "no From domain" + notes, dots
        keys = self.keys_for(domain)
        if not keys:
            return data, f"no key for {domain}" + notes, dots
        body_hash = base64.b64encode(self._bodies.digest(data, at, original, like, dots))
        names, signed = _signed(fields)
        t = str(int(self.clock())).encode("ascii")
        out = []
        for key in keys:
            (a, b, c), (ca, cb, cc) = _our_field(key.algorithm, key.domain, key.selector, names)
            signature = key.sign(signed + ca + t + cb + body_hash + cc)
            out.append(a + t + b + body_hash + c + _b64_folded(signature) + b"\r\n")
        selectors = ",".join(k.selector for k in keys)
        # No line of our fields starts with a period (each starts "DKIM-" or a tab): the
        # copy's periods move down by their length.
        ours = b"".join(out)
        moved = None if dots is None else tuple(dot + len(ours) for dot in dots)
        return ours + data, f"signed d={keys[0].domain} s={selectors}" + notes, moved


def _in_body(dots: Sequence[int] | None, at: int) -> tuple[int, ...] | None:
    """The line-start periods among ``dots`` that lie in the body (``at`` on), as offsets
    from its start (they stay valid when the header changes); None for None or more
    than :data:`~beacon_proxy.rewrite.lineends.MAX_DOTS`."""
    if dots is None or len(dots) > MAX_DOTS:
        return None
    return tuple(dot - at for dot in dots if dot >= at)


def _with_header(data: bytes, at: int, body: tuple[int, ...] | None
                 ) -> tuple[int, ...] | None:
    """Every line-start period of the CRLF message ``data`` whose body starts at ``at``:
    the header's, searched (with the body's first byte), and the body's ``body`` (from
    :func:`_in_body`; None: not known, nor then are these)."""
    if body is None:
        return None
    dots = set(line_dots(data, 0, min(at + 1, len(data))))
    dots.update(at + dot for dot in body)
    return tuple(sorted(dots)) if len(dots) <= MAX_DOTS else None


def _signed(fields: list[tuple[bytes, bytes]]) -> tuple[tuple[str, ...], bytes]:
    """``h=`` and the canonical fields it selects.

    ``h=`` lists each signed field as often as the copy has it, From once more.
    Each name takes the next instance from the bottom (RFC 6376 section 5.4.2),
    so a name's instances are signed bottom up; the over-signed From finds none
    left and selects nothing.  The canonical form of a field is looked up by
    its bytes: most fields are the same in every copy of a message."""
    present: dict[bytes, list[bytes]] = {}
    for low, raw in fields:
        if low in _SIGNED_LOWER:
            present.setdefault(low, []).append(raw)
    names: list[str] = []
    out: list[bytes] = []
    for low, name, extra in _SIGNED_ORDER:
        raws = present.get(low)
        if raws is None:
            names += [name] * extra
            continue
        names += [name] * (len(raws) + extra)
        for raw in reversed(raws):
            out.append(_relaxed_field(raw))
    return tuple(names), b"".join(out)


_relaxed_field: Final = functools.lru_cache(maxsize=256)(relaxed_header)
"""relaxed_header, remembered: To, Subject, Date... are the same bytes in every copy."""
