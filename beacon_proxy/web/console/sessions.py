"""The console's server-side sessions: a random cookie for an API token's name.

A session is created by a login with a valid admin API token
(:class:`~beacon_proxy.web.auth.ApiTokens`); the cookie holds only a random
value, the server keeps its SHA-256 (so neither a memory dump nor a log of
keys gives a usable cookie).  A session ends after ``idle`` seconds without
a request, ``max_age`` seconds after login, at logout, and when its token is
no longer configured (a reload), also when a new token of the same name
replaces it.  At most ``capacity`` sessions are kept;
a new one pushes out the least recently used.

Each session has its own CSRF token (``csrf``), sent back by every console
form and compared in constant time.

    >>> now = [0.0]
    >>> sessions = Sessions(idle=10, max_age=100, clock=lambda: now[0])
    >>> cookie, s = sessions.create("ops")
    >>> sessions.get(cookie).name
    'ops'
    >>> now[0] = 11.0
    >>> sessions.get(cookie) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Session", "Sessions"]


@dataclass(slots=True)
class Session:
    """One logged-in console user."""

    name: str  # the API token's name: who the audit trail names
    csrf: str  # the token every form of this session sends back
    created: float
    seen: float
    lang: str | None = None  # the language chosen with the switch, if any
    credential: str = ""  # the hash of the token it was opened with

    def check_csrf(self, value: str) -> bool:
        return hmac.compare_digest(self.csrf.encode("ascii"),
                                   value.encode("utf-8", "surrogatepass"))


def _key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The bounded, expiring session store (one per console)."""

    def __init__(self, *, idle: float = 1800.0, max_age: float = 8 * 3600.0,
                 capacity: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        if idle <= 0 or max_age <= 0 or capacity < 1:
            raise ValueError("idle, max_age and capacity must be positive")
        self.idle, self.max_age, self.capacity = idle, max_age, capacity
        self._clock = clock
        self._sessions: dict[str, Session] = {}  # insertion order is recency

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, name: str, lang: str | None = None,
               credential: str = "") -> tuple[str, Session]:
        """A new session for ``name``, opened with the token whose hash is
        ``credential``: ``(cookie value, session)``."""
        now = self._clock()
        cookie = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), now, now, lang, credential)
        self._sessions[_key(cookie)] = session
        while len(self._sessions) > self.capacity:
            del self._sessions[next(iter(self._sessions))]
        return cookie, session

    def get(self, cookie: str | None,
            accepted: frozenset[tuple[str, str]] | None = None) -> Session | None:
        """The live session of a cookie (its idle time starts again), or ``None``.

        ``accepted``: ``(name, credential)`` of the tokens accepted now
        (:meth:`~beacon_proxy.web.auth.ApiTokens.credentials`); a session opened with
        another token ends."""
        if not cookie or len(cookie) > 100:
            return None
        key = _key(cookie)
        session = self._sessions.pop(key, None)
        if session is None:
            return None
        now = self._clock()
        if (now - session.seen > self.idle or now - session.created > self.max_age
                or (accepted is not None
                    and (session.name, session.credential) not in accepted)):
            return None
        session.seen = now
        self._sessions[key] = session
        return session

    def drop(self, cookie: str | None) -> bool:
        """End a session (logout); whether there was one."""
        if not cookie:
            return False
        return self._sessions.pop(_key(cookie), None) is not None
