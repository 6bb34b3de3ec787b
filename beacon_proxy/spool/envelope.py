"""The envelope: what the SMTP transaction said about a message.

It is the hand-off record between receiving and delivering, stored as the
first line (JSON) of every queue file.  Addresses are kept exactly as the
client gave them, without angle brackets; the null reverse-path is ``""``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Envelope", "new_queue_id"]

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U


def new_queue_id(now_ns: int | None = None) -> str:
    """A unique, time-ordered id: 11 characters of time, 5 of randomness.

    >>> len(new_queue_id()), new_queue_id(0) < new_queue_id(10**18)
    (16, True)
    """
    n = (time.time_ns() if now_ns is None else now_ns) // 1000  # microseconds
    rnd = int.from_bytes(os.urandom(4), "big") >> 7  # 25 bits
    value = (n << 25) | rnd
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
        data = asdict(self)
        data["recipients"] = list(self.recipients)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

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
