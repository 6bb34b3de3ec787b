"""Encrypted, authenticated link tokens for the web endpoints (``/o/<token>``, ``/u/<token>``).

A token binds a purpose (open pixel or unsubscribe), the recipient, the list,
the queue id and the identity of the original URL it replaces, so any node
holding the secret can serve any link without a database lookup.  Tokens are
compact and URL-safe (base64url, no padding) and never show the address.

Primitive: AES-SIV (RFC 5297, ``cryptography``'s ``AESSIV``) with a 64-byte key,
that is AES-256 for both the S2V/CMAC half and the CTR half.  AES-SIV rather
than AES-GCM-SIV because it is deterministic and needs no nonce: a token
carries no 12-byte nonce (links stay short), there is no nonce to repeat, and
the same inputs always give the same token, which makes fixed test vectors
possible.  The only thing determinism shows is that two tokens are equal when
everything in them (issued-at second included) is equal.  AES-SIV takes a list
of associated-data strings, which binds the header and the purpose without
putting the purpose into the token.

Keys.  For every configured secret::

    key    = HKDF-SHA256(secret, salt=None, info=b"beacon-proxy token v2 AES-SIV key", L=64)
    key_id = HKDF-SHA256(secret, salt=None, info=b"beacon-proxy token v2 key id", L=1)[0]

The key id is one byte of a one-way function of the secret: it says which
configured secret made a token (so verification tries that one first) and
nothing about the secret that the ciphertext does not already.  Secrets must
be high-entropy (the generated one has 256 bits; configured ones at least 16
bytes): HKDF does not slow down guessing.

Token layout (before base64url without padding), version 2::

    offset  size  field
    0       1     version = 0x02 (version 1, the HMAC construction, kept its
                  version inside the encryption: its tokens fail here or at
                  authentication)
    1       1     key id
    2       16    SIV (the AES-SIV synthetic IV / tag)
    18      n     AES-SIV ciphertext of the claims below (n = their length)

    associated data: [bytes 0-1 of the token (version, key id), bytes([purpose])]

    claims (plaintext):
    4 bytes  issued_at, unsigned big-endian unix seconds
    1 + r    recipient, UTF-8, length-prefixed (at most 255 bytes)
    1 + l    list id, UTF-8, length-prefixed ("" = no list)
    1 + q    queue id, UTF-8, length-prefixed
    1 + u    url_identity() of the replaced URL, length-prefixed (u = 0 or 8)
    2 + f    optional: the forward URL, UTF-8, 2-byte big-endian length prefix
             (1 <= f <= 1024); absent (no bytes at all) when there is none

The forward URL is a URL the proxy itself put into the token, the only one the
web side ever contacts on the token's behalf: for an open token with
``[policy] forward_opens``, the original tracker URL the pixel replaced; for an
unsubscribe token, the sender's own RFC 8058 one-click URL that the proxy's
``List-Unsubscribe`` replaced.  It is encrypted like every other claim, so it
neither shows in the link nor can be changed without breaking the token.

The purpose (1 = open, 2 = unsubscribe) is only associated data: a token made
for one purpose fails authentication for the other.

Verification refuses, before any decryption, what can be judged from public
bytes: empty or longer than 2560 characters, not canonical base64url, too
short, another version.  Then it makes one AES-SIV decryption attempt per
configured key, the key with the token's key id first, and stops at the first
that authenticates.  A token that authenticates under no key costs exactly one
attempt per key whatever its key id says.  Every failure (format, forgery, wrong
key, retired key, other purpose, expiry) raises :class:`TokenError` with the same
message.

Keys rotate: :class:`Tokens` mints with the first secret and accepts tokens
made with any of them.

Form tokens.  The preference page's forms carry a second, short value bound to
the page's own token: ``base64url(HMAC-SHA256(form_key, token)[:16])`` with
``form_key = HKDF-SHA256(secret, salt=None, info=b"beacon-proxy form token v1",
L=32)`` (:meth:`Tokens.form_token`; any configured secret is accepted).  A
page action must send it back (:mod:`beacon_proxy.web.recipient`).

    >>> t = Tokens(["current secret", "previous secret"])
    >>> token = t.mint(Claims(Purpose.OPEN, "ann@example.org", "news.example.org", "Q1"))
    >>> t.verify(token, Purpose.OPEN).recipient
    'ann@example.org'
    >>> "ann" in token
    False
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from beacon_proxy.config import ConfigError, TokensConfig

__all__ = ["MAX_FORWARD", "Claims", "Purpose", "TokenError", "Tokens", "load_secrets",
           "url_identity"]

VERSION = 2
_KEY_INFO = b"beacon-proxy token v2 AES-SIV key"
_KEY_ID_INFO = b"beacon-proxy token v2 key id"
_FORM_INFO = b"beacon-proxy form token v1"
_FORM_MAC = 16  # bytes of the HMAC kept in a form token
_HEADER = 2  # version, key id
_SIV = 16
_MIN_CLAIMS = 4 + 1 + 1 + 1 + 1
_URL_ID = 8
MAX_FORWARD = 1024  # bytes of a forward URL in a token
_MAX_TOKEN = 2560  # characters (the longest claims fit); anything longer is refused unread
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_REFUSED = "invalid or expired token"


class TokenError(ValueError):
    """The token is malformed, forged, made for another purpose or key, or too old."""


class Purpose(enum.IntEnum):
    OPEN = 1
    UNSUBSCRIBE = 2


@dataclass(frozen=True, slots=True)
class Claims:
    purpose: Purpose
    recipient: str
    list_id: str | None
    queue_id: str
    url_id: bytes = b""  # url_identity() of the URL a pixel token replaces
    issued_at: int = 0  # unix time; 0 means "now" when minting
    forward: str = ""  # a URL the web side may contact for this token ("" = none)


def url_identity(url: str) -> bytes:
    """A short, stable fingerprint of a URL (what a token says it replaced)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()[:_URL_ID]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: the one canonical spelling of the bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError(_REFUSED)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(_REFUSED) from None
    if _b64(raw) != text:  # non-zero padding bits: another spelling of the same bytes
        raise TokenError(_REFUSED)
    return raw


_HEAD: Final = struct.Struct(">IB")  # issued_at and the recipient's length
_BYTE: Final = tuple(bytes([n]) for n in range(256))  # a length as one byte


def _pack(c: Claims, issued_at: int) -> bytes:
    """The claims' plaintext, issued at ``issued_at`` (not ``c.issued_at``)."""
    if len(c.url_id) not in (0, _URL_ID):
        raise ValueError("url_id must come from url_identity()")
    if not 0 < issued_at < 2**32:
        raise ValueError("issued_at must be a positive 32-bit unix time")
    # Each claim encoded and checked in turn (the first too long raises), each led by
    # its length in one byte, then one join: a copy's link packs this once (3.3 us
    # with a concatenation per claim).
    recipient = c.recipient.encode("utf-8")
    if len(recipient) > 255:
        raise ValueError("claim longer than 255 bytes")
    list_id = (c.list_id or "").encode("utf-8")
    if len(list_id) > 255:
        raise ValueError("claim longer than 255 bytes")
    queue_id = c.queue_id.encode("utf-8")
    if len(queue_id) > 255:
        raise ValueError("claim longer than 255 bytes")
    out = b"".join((_HEAD.pack(issued_at, len(recipient)), recipient, _BYTE[len(list_id)],
                    list_id, _BYTE[len(queue_id)], queue_id, _BYTE[len(c.url_id)], c.url_id))
    if c.forward:
        raw = c.forward.encode("utf-8")
        if len(raw) > MAX_FORWARD:
            raise ValueError(f"forward URL longer than {MAX_FORWARD} bytes")
        out += struct.pack(">H", len(raw)) + raw
    return out


def _unpack(purpose: Purpose, raw: bytes) -> Claims:
    try:
        (issued,) = struct.unpack_from(">I", raw)
        pos = 4
        fields: list[bytes] = []
        for _ in range(4):
            n = raw[pos]
            fields.append(raw[pos + 1 : pos + 1 + n])
            pos += 1 + n
        forward = ""
        if pos < len(raw):
            (n,) = struct.unpack_from(">H", raw, pos)
            forward = raw[pos + 2 : pos + 2 + n].decode("utf-8")
            if not 0 < n <= MAX_FORWARD or pos + 2 + n != len(raw):
                raise ValueError("bad layout")
            pos = len(raw)
        if pos != len(raw) or len(fields[3]) not in (0, _URL_ID):
            raise ValueError("bad layout")
        recipient, list_id, queue_id = (f.decode("utf-8") for f in fields[:3])
        return Claims(purpose, recipient, list_id or None, queue_id, fields[3], issued, forward)
    except (struct.error, IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        raise TokenError(_REFUSED) from None


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class _Key:
    key_id: int
    aead: AESSIV
    form_key: bytes

    @classmethod
    def derive(cls, secret: bytes) -> _Key:
        return cls(_hkdf(secret, _KEY_ID_INFO, 1)[0], AESSIV(_hkdf(secret, _KEY_INFO, 64)),
                   _hkdf(secret, _FORM_INFO, 32))

    def form_mac(self, token: str) -> bytes:
        message = token.encode("utf-8", "surrogatepass")
        return hmac.new(self.form_key, message, hashlib.sha256).digest()[:_FORM_MAC]


class Tokens:
    """Mint with the first secret, verify with any of them."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        self._keys = self._derive(secrets)

    @staticmethod
    def _derive(secrets: Sequence[str | bytes]) -> list[_Key]:
        keys = [s.encode("utf-8") if isinstance(s, str) else s for s in secrets]
        if not keys or any(len(k) < 8 for k in keys):
            raise ValueError("token secrets must be at least 8 bytes")
        return [_Key.derive(k) for k in keys]

    def replace(self, secrets: Sequence[str | bytes]) -> None:
        """Use new secrets from now on (a reload: ``SIGHUP``); ``ValueError`` keeps the old."""
        self._keys = self._derive(secrets)

    def mint(self, claims: Claims) -> str:
        # issued_at 0 is "now": passed to _pack rather than a replace()d Claims (a few
        # microseconds of dataclass machinery per copy, for the same bytes).
        key = self._keys[0]
        header = bytes([VERSION, key.key_id])
        plain = _pack(claims, claims.issued_at or int(time.time()))
        sealed = key.aead.encrypt(plain, [header, bytes([int(claims.purpose)])])
        return _b64(header + sealed)

    def form_token(self, token: str) -> str:
        """The form token of a page reached by ``token`` (made with the current secret)."""
        return _b64(self._keys[0].form_mac(token))

    def check_form_token(self, token: str, value: str) -> bool:
        """Whether ``value`` is the form token of ``token`` under any configured secret."""
        try:
            presented = _unb64(value)
        except TokenError:
            return False
        matches = [hmac.compare_digest(presented, k.form_mac(token)) for k in self._keys]
        return any(matches)  # every key compared: the time does not tell which matched

    def verify(self, token: str, purpose: Purpose, *, max_age: float | None = None) -> Claims:
        """The claims of a genuine token for ``purpose``; raises :class:`TokenError`."""
        if not token or len(token) > _MAX_TOKEN:
            raise TokenError(_REFUSED)
        raw = _unb64(token)
        if len(raw) < _HEADER + _SIV + _MIN_CLAIMS or raw[0] != VERSION:
            raise TokenError(_REFUSED)
        header, sealed = raw[:_HEADER], raw[_HEADER:]
        associated = [header, bytes([int(purpose)])]
        ordered = sorted(self._keys, key=lambda k: k.key_id != header[1])  # stable
        for key in ordered:
            try:
                plain = key.aead.decrypt(sealed, associated)
            except InvalidTag:
                continue
            claims = _unpack(purpose, plain)
            if max_age is not None and time.time() - claims.issued_at > max_age:
                raise TokenError(_REFUSED)
            return claims
        raise TokenError(_REFUSED)


def load_secrets(cfg: TokensConfig, generated: Path, *,
                 shared_store: bool = False) -> tuple[list[str], bool]:
    """The configured secrets, current first; ``(secrets, True)`` when generated.

    Without ``[tokens] secret`` or ``secret_file`` a random secret is kept in
    ``generated`` (created 0600 on first use), so links survive restarts of a
    single node.  With ``shared_store`` (a PostgreSQL store: several nodes
    serve each other's links) that would break links, so it is a
    :class:`ConfigError` naming ``tokens.secret``.  Raises ``OSError`` when a
    file cannot be read or written, :class:`ConfigError` when the secret file
    holds no usable secret.
    """
    if cfg.secret:
        return [cfg.secret, *cfg.previous], False
    if cfg.secret_file is not None:
        lines = [line.strip() for line in cfg.secret_file.read_text("utf-8").splitlines()]
        found = [line for line in lines if line and not line.startswith("#")]
        if not found or any(len(line) < 16 for line in found):
            raise ConfigError("tokens.secret_file",
                              f"{cfg.secret_file}: needs secrets of at least 16 characters")
        return found, False
    if shared_store:
        raise ConfigError("tokens.secret",
                          "required with a PostgreSQL [store] url (several nodes share it and "
                          "must share one token secret; set tokens.secret or "
                          "tokens.secret_file)")
    try:
        return [generated.read_text("ascii").strip()], True
    except FileNotFoundError:
        pass
    generated.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return [secret], True
