"""Signed, encrypted link tokens for the web endpoints (``/o/<token>``, ``/u/<token>``).

A token binds a purpose (open pixel or unsubscribe), the recipient, the list,
the queue id and the identity of the original URL it replaces, so any node
holding the secret can serve any link without a database lookup.  Tokens are
compact and URL-safe (base64url, no padding) and never show the address:
the claims are encrypted with a synthetic IV (SIV): ``tag = HMAC-SHA256(k_mac,
claims)[:16]``, ``ciphertext = claims XOR HMAC-SHA256-CTR(k_enc, tag)``.  The
tag authenticates the claims; verification recomputes it and compares in
constant time.

Keys rotate: :class:`Tokens` mints with the first secret and accepts tokens
made with any of them.

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
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from beacon_proxy.config import ConfigError, TokensConfig

__all__ = ["Claims", "Purpose", "TokenError", "Tokens", "load_secrets", "url_identity"]

_VERSION = 1
_TAG = 16  # bytes of HMAC-SHA256 kept: 128-bit forgery resistance
_URL_ID = 8
_MAX_TOKEN = 2048  # characters; anything longer is refused before decoding


class TokenError(ValueError):
    """The token is malformed, forged, made for another purpose, or too old."""


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


def url_identity(url: str) -> bytes:
    """A short, stable fingerprint of a URL (what a token says it replaced)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()[:_URL_ID]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("not base64url") from None


def _pack_str(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("claim longer than 255 bytes")
    return bytes([len(raw)]) + raw


def _pack(c: Claims) -> bytes:
    if len(c.url_id) not in (0, _URL_ID):
        raise ValueError("url_id must come from url_identity()")
    return (
        struct.pack(">BBI", _VERSION, int(c.purpose), c.issued_at)
        + _pack_str(c.recipient)
        + _pack_str(c.list_id or "")
        + _pack_str(c.queue_id)
        + bytes([len(c.url_id)]) + c.url_id
    )


def _unpack(raw: bytes) -> Claims:
    try:
        version, purpose, issued = struct.unpack_from(">BBI", raw)
        pos = 6
        fields: list[str] = []
        for _ in range(3):
            n = raw[pos]
            fields.append(raw[pos + 1 : pos + 1 + n].decode("utf-8"))
            pos += 1 + n
        n = raw[pos]
        url_id = raw[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if version != _VERSION or pos != len(raw) or len(url_id) != n:
            raise ValueError("bad layout")
        return Claims(Purpose(purpose), fields[0], fields[1] or None, fields[2], url_id, issued)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise TokenError("malformed claims") from None


class _Key:
    def __init__(self, secret: bytes) -> None:
        self.mac = hmac.new(secret, b"beacon-proxy token mac v1", hashlib.sha256).digest()
        self.enc = hmac.new(secret, b"beacon-proxy token enc v1", hashlib.sha256).digest()

    def tag(self, plain: bytes) -> bytes:
        return hmac.new(self.mac, plain, hashlib.sha256).digest()[:_TAG]

    def stream(self, tag: bytes, length: int) -> bytes:
        blocks = [hmac.new(self.enc, tag + struct.pack(">I", i), hashlib.sha256).digest()
                  for i in range((length + 31) // 32)]
        return b"".join(blocks)[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class Tokens:
    """Mint with the first secret, verify with any of them."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        keys = [s.encode("utf-8") if isinstance(s, str) else s for s in secrets]
        if not keys or any(len(k) < 8 for k in keys):
            raise ValueError("token secrets must be at least 8 bytes")
        self._keys = [_Key(k) for k in keys]

    def mint(self, claims: Claims) -> str:
        if not claims.issued_at:
            claims = Claims(claims.purpose, claims.recipient, claims.list_id, claims.queue_id,
                            claims.url_id, int(time.time()))
        plain = _pack(claims)
        key = self._keys[0]
        tag = key.tag(plain)
        return _b64(tag + _xor(plain, key.stream(tag, len(plain))))

    def verify(self, token: str, purpose: Purpose, *, max_age: float | None = None) -> Claims:
        """The claims of a genuine token for ``purpose``; raises :class:`TokenError`."""
        if not token or len(token) > _MAX_TOKEN or not token.isascii():
            raise TokenError("bad token length")
        raw = _unb64(token)
        if len(raw) <= _TAG:
            raise TokenError("token too short")
        tag, body = raw[:_TAG], raw[_TAG:]
        found: Claims | None = None
        for key in self._keys:  # every key is tried: timing does not tell which matched
            plain = _xor(body, key.stream(tag, len(body)))
            if hmac.compare_digest(key.tag(plain), tag) and found is None:
                found = _unpack(plain)
        if found is None:
            raise TokenError("forged or made with an unknown key")
        if found.purpose is not purpose:
            raise TokenError("token made for another purpose")
        if max_age is not None and time.time() - found.issued_at > max_age:
            raise TokenError("token expired")
        return found


def load_secrets(cfg: TokensConfig, generated: Path) -> tuple[list[str], bool]:
    """The configured secrets, current first; ``(secrets, True)`` when generated.

    Without ``[tokens] secret`` or ``secret_file`` a random secret is kept in
    ``generated`` (created 0600 on first use), so links survive restarts of a
    single node; several nodes must share a configured secret.  Raises
    ``OSError`` when a file cannot be read or written, :class:`ConfigError` when
    the secret file holds no usable secret.
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
