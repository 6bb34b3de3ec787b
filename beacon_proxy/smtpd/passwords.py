"""Password hashes for SMTP AUTH users, with the standard library's scrypt.

The stored form is ``scrypt$N$r$p$<salt b64>$<hash b64>``; ``beacon-proxy
hash-password`` prints one.  Verification is CPU-heavy on purpose, so callers
on the event loop run :func:`verify_password` in a thread.

    >>> h = hash_password("s3cret", n=2**10)
    >>> verify_password("s3cret", h), verify_password("guess", h)
    (True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["hash_password", "is_password_hash", "verify_password"]

_SCHEME = "scrypt"
_DKLEN = 32
_MAXMEM = 2**27  # scrypt needs about 128 * n * r * p bytes; refuse settings above this


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    salt = os.urandom(16)
    if not _cost_ok(n, r, p):
        raise ValueError(f"scrypt parameters n={n} r={r} p={p} need too much memory")
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
                            maxmem=_MAXMEM)
    return f"{_SCHEME}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _cost_ok(n: int, r: int, p: int) -> bool:
    return n >= 2 and not n & (n - 1) and 1 <= r <= 64 and 1 <= p <= 16 and (
        130 * n * r * p <= _MAXMEM)


def _parse(hashed: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not _cost_ok(n, r, p) or len(digest) != _DKLEN:
        return None
    return n, r, p, salt, digest


def is_password_hash(text: str) -> bool:
    return _parse(text) is not None


def verify_password(password: str | bytes, hashed: str) -> bool:
    """Constant-time check of ``password`` against a stored hash."""
    parsed = _parse(hashed)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    secret = password.encode("utf-8") if isinstance(password, str) else password
    candidate = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=_MAXMEM)
    return hmac.compare_digest(candidate, digest)
