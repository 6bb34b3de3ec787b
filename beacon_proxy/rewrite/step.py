"""The per-recipient rewrite step: (envelope, message) -> prepared; (recipient, policy) -> copy.

Delivery calls :meth:`RewriteStep.prepare` once per attempt (the
recipient-independent work, which may run off the event loop under a CPU
budget) and :meth:`PreparedMessage.render` for every recipient at dispatch
time, so a recipient's copy always reflects the policy in force when it
leaves.  A step never talks SMTP and never touches the spool; it returns the
bytes to send (or says the copy is held) and a small report for the relay
log.

:class:`TraceStep` is the base every copy gets: the ``Received`` trace
header (RFC 5321 section 4.4) in front of the message, which is otherwise
passed through byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from beacon_proxy.consent.policy import Policy
from beacon_proxy.spool.envelope import Envelope

__all__ = ["Copy", "PreparedMessage", "RewriteStep", "TraceStep", "received_header"]


@dataclass(frozen=True, slots=True)
class Copy:
    """One recipient's rendered copy and what was done to it (for the log).

    ``held`` (a reason) instead of a copy: nothing may be sent to this recipient
    now; delivery defers it and, at the queue lifetime, bounces it.
    """

    data: bytes
    report: Mapping[str, Any] = field(default_factory=dict)
    held: str | None = None


class PreparedMessage(Protocol):
    """One message, ready for its recipients' copies."""

    @property
    def size(self) -> int:
        """Bytes of the message (delivery renders big ones in a thread)."""
        ...

    def render(self, recipient: str, policy: Policy) -> Copy: ...


class RewriteStep(Protocol):
    async def prepare(self, envelope: Envelope, data: bytes) -> PreparedMessage: ...


def _clean(text: str, limit: int = 255) -> str:
    """Printable ASCII without spaces or parentheses, for a trace-header token."""
    out = "".join(c for c in text if "!" <= c <= "~" and c not in "()[];<>\\")
    return out[:limit] or "unknown"


def _address(addr: str) -> str:
    return "".join(c for c in addr if c >= " " and c not in "<>\x7f")[:320]


def received_header(envelope: Envelope, recipient: str | None, hostname: str) -> bytes:
    """The ``Received`` line for one copy, built only from validated values.

    >>> env = Envelope("Q1", "a@x.org", ("b@y.org",), received_at=0, client_address="127.0.0.1",
    ...                client_helo="client.example")
    >>> received_header(env, "b@y.org", "relay.example").decode().splitlines()[0]
    'Received: from client.example ([127.0.0.1])'
    """
    ip = _clean(envelope.client_address, 64)
    prefix = "IPv6:" if ":" in ip else ""
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(envelope.received_at))
    lines = [
        f"Received: from {_clean(envelope.client_helo)} ([{prefix}{ip}])",
        f"\tby {_clean(hostname)} (beacon-proxy) with {_clean(envelope.protocol, 16)}"
        f" id {_clean(envelope.queue_id, 64)}",
    ]
    if recipient is not None:
        lines.append(f"\tfor <{_address(recipient)}>; {when}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{when}")
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("utf-8" if envelope.smtputf8 else "ascii", "replace")


class _Traced:
    def __init__(self, envelope: Envelope, data: bytes, hostname: str) -> None:
        self.envelope, self.data, self.hostname = envelope, data, hostname

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self, recipient: str, policy: Policy) -> Copy:
        return Copy(received_header(self.envelope, recipient, self.hostname) + self.data)


class TraceStep:
    """Adds the trace header and changes nothing else."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    async def prepare(self, envelope: Envelope, data: bytes) -> PreparedMessage:
        return _Traced(envelope, data, self.hostname)
