"""The courier interface: deliver one copy to one recipient, say how it went.

A courier knows nothing of queues, retries or HTML.  The scheduler gives each
delivery worker its own courier (so an SMTP courier can keep its connection
open between messages without sharing it) and decides what a result means:
``DELIVERED`` is final, ``TEMPORARY`` is retried later, ``PERMANENT`` bounces.

Implementations: :class:`~beacon_proxy.deliver.smtp.SmtpCourier` (upstream
smarthost), :class:`~beacon_proxy.deliver.maildir.MaildirCourier` (local
outbox).  Tests use an in-memory fake with the same two methods.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Courier", "CourierFactory", "Outcome", "Result"]


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one recipient's copy.

    ``code`` is the SMTP reply code (or a synthetic one: 250 for a local
    delivery, 451 for a connection failure); ``reply`` is the text to log
    and to quote in a bounce, e.g. ``"550 5.1.1 <x@example.org>: no such user"``.
    ``status`` is the RFC 3463 enhanced status code, such as ``"5.1.1"``.
    ``session`` is true when no session could be had (no connection, no
    greeting, EHLO refused, TLS failed): a failure of the destination that
    every recipient would meet, so the scheduler does not try the rest.
    """

    outcome: Outcome
    code: int
    reply: str
    status: str = ""
    remote: str = ""  # who answered: "127.0.0.1:2600", or "maildir"
    session: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED


class Courier(Protocol):
    async def deliver(self, sender: str, recipient: str, data: bytes, *,
                      smtputf8: bool = False, body_type: str | None = None,
                      crlf: bool = False, dots: tuple[int, ...] | None = None) -> Result:
        """Hand ``data`` (the final bytes, CRLF line endings) to ``recipient``.

        ``crlf``: the caller has proven that ``data`` has CRLF line ends only and
        ends in one (:attr:`~beacon_proxy.rewrite.step.Copy.crlf`); a courier may
        then skip its own check.  False: the courier makes sure itself.  ``dots``:
        with ``crlf``, the proven offsets of every line-start period
        (:attr:`~beacon_proxy.rewrite.step.Copy.dots`; None: not known), for a
        courier that stuffs them.

        Never raises for delivery failures: every failure is a :class:`Result`
        whose outcome says whether it is permanent.
        """
        ...

    async def close(self) -> None:
        """Release connections; the courier may be used again afterwards."""
        ...


class CourierFactory(Protocol):
    def __call__(self) -> Courier: ...
