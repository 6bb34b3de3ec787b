"""Bearer tokens for the admin API.

The configuration holds only hashes (``[api.tokens] ops = "sha256:<hex>"``),
so a leaked config file does not leak a token.  Tokens are random (``beacon-proxy
hash-token`` makes one: 256 bits), so one SHA-256 is the right hash -- a slow
password hash would only slow every API call.  A presented token is hashed
and compared with every configured hash in constant time; all are compared,
so the time taken does not tell which, if any, matched.

    >>> token = new_token()
    >>> tokens = ApiTokens({"ops": hash_token(token)})
    >>> tokens.check(token), tokens.check("guess")
    ('ops', None)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

__all__ = ["MIN_TOKEN_LENGTH", "ApiTokens", "bearer_token", "hash_token", "is_token_hash",
           "new_token"]

MIN_TOKEN_LENGTH = 20
_HASH = re.compile(r"sha256:[0-9a-f]{64}\Z")


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a token, as the configuration stores it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token_hash(text: str) -> bool:
    return bool(_HASH.match(text))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class ApiTokens:
    """The configured tokens: name -> hash."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes = self._parse(hashes)
        self._credentials = self._pairs(self._hashes)

    @staticmethod
    def _pairs(hashes: list[tuple[str, bytes]]) -> frozenset[tuple[str, str]]:
        return frozenset((name, "sha256:" + digest.hex()) for name, digest in hashes)

    @staticmethod
    def _parse(hashes: Mapping[str, str]) -> list[tuple[str, bytes]]:
        for name, h in hashes.items():
            if not is_token_hash(h):
                raise ValueError(f"token {name!r}: not a sha256:<hex> token hash")
        return [(name, bytes.fromhex(h[7:])) for name, h in hashes.items()]

    def replace(self, hashes: Mapping[str, str]) -> None:
        """Accept these tokens from now on (a reload: ``SIGHUP``); ``ValueError`` keeps the
        old ones."""
        parsed = self._parse(hashes)
        self._hashes, self._credentials = parsed, self._pairs(parsed)

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def credentials(self) -> frozenset[tuple[str, str]]:
        """``(name, hash)`` of each token accepted now: a console session ends with the
        token it was opened with, also when another token takes over its name."""
        return self._credentials

    def check(self, token: str) -> str | None:
        """The name of the matching token, or ``None``."""
        found = self.identify(token)
        return found[0] if found is not None else None

    def identify(self, token: str) -> tuple[str, str] | None:
        """``(name, hash)`` of the matching token (see :meth:`credentials`), or ``None``."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: tuple[str, str] | None = None
        for name, expected in self._hashes:
            if hmac.compare_digest(digest, expected) and found is None:
                found = (name, "sha256:" + expected.hex())
        return found
