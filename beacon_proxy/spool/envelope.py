"""The envelope: what the SMTP transaction said about a message.

It is the hand-off record between receiving and delivering, stored as the
first line (JSON) of every queue file.  Addresses are kept exactly as the
client gave them, without angle brackets; the null reverse-path is ``""``.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Envelope", "new_queue_id"]

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U


# The random part of queue ids: a per-process generator seeded from os.urandom, so
# an id costs no system call (os.urandom per id released the GIL: a thread hand-off
# per message on a busy worker).  Seeded again in a forked child, which must not
# repeat its parent's sequence; a spawned worker imports this module afresh.
_rng = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_rng.seed)
_last = 0  # the last id's value made from the clock in this process


def new_queue_id(now_ns: int | None = None) -> str:
    """A unique, time-ordered id: 11 characters of time, 5 of randomness.

    Unique: within a process the ids made from the clock strictly increase (one
    made in the same microsecond as the last, or after the clock stepped back, is
    the last plus one), so two never collide.  Across processes (worker
    processes, restarts) each has its own seed from ``os.urandom`` (a fork re-seeds),
    so two ids collide only if made in the same microsecond *and* their 25 random
    bits match: 1 in 33 million for such a pair, as with ``os.urandom`` per id.
    And each worker process has a spool part of its own, so even then no queue
    file is shared.

    >>> len(new_queue_id()), new_queue_id(0) < new_queue_id(10**18)
    (16, True)
    """
    global _last
    n = (time.time_ns() if now_ns is None else now_ns) // 1000  # microseconds
    value = (n << 25) | _rng.getrandbits(25)
    if now_ns is None:
        if value <= _last:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(16):
        chars.append(_B32[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True, slots=True)
class Envelope:
    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    received_at: float = field(default_factory=time.time)
    client_address: str = ""
    client_helo: str = ""
    protocol: str = "ESMTP"  # as for the Received header: ESMTP, ESMTPS, ESMTPSA, ...
    auth_user: str | None = None
    message_id: str | None = None
    list_id: str | None = None  # the List-Id label: suppressions can be per list
    one_click: str | None = None  # the sender's RFC 8058 one-click URL (forwarded to)
    size: int = 0
    smtputf8: bool = False
    body_type: str | None = None  # "8BITMIME" or "7BIT" when the client declared it
    bounce_of: str | None = None  # for a DSN we generated: the original queue id

    def to_json(self) -> bytes:
        # The fields in order, as dataclasses.asdict gave them, without its recursive
        # deep copy of every value (strings, numbers, None and one tuple here), and
        # one encoder for every envelope: 18 -> 6 us a message (each is stored once).
        data = {name: getattr(self, name) for name in _FIELDS}
        data["recipients"] = list(self.recipients)
        return _ENCODE(data).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        """Parse a stored envelope; raises ``ValueError`` when it is not one."""
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("envelope is not a JSON object")
        try:
            recipients = data.pop("recipients", None)
            if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
                raise ValueError("recipients is not a list of strings")
            env = cls(recipients=tuple(recipients), **data)
        except TypeError as exc:
            raise ValueError(f"bad envelope fields: {exc}") from None
        if not isinstance(env.queue_id, str) or not isinstance(env.sender, str):
            raise ValueError("bad queue_id or sender")
        return env


_FIELDS = tuple(f.name for f in fields(Envelope))
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
