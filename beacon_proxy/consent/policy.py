"""Beacon policy and delivery decisions: what a recipient's copy gets.

``REFUSED`` copies lose every beacon; ``GRANTED`` copies get first-party
beacons; ``SUPPRESSED`` recipients get nothing (delivery suspended, for the
message's list or globally).  Recipients without a consent record get the
configured default (``[policy] unknown``), which is ``refused``: privacy by
default.

The relay asks a :class:`ConsentLookup` once per message attempt, for all
pending recipients at once:

    >>> import asyncio
    >>> asyncio.run(DefaultConsent(Policy.REFUSED).decisions(["a@x.org"], None))
    {'a@x.org': <Decision.REFUSED: 'refused'>}

The store (:mod:`beacon_proxy.consent.store`) implements the same protocol
from the database, through an exact cache (:mod:`~beacon_proxy.consent.cache`):
a change made on any node applies to the next message every node delivers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = ["ConsentLookup", "Decision", "DefaultConsent", "Policy", "policy_of"]


class Policy(enum.StrEnum):
    REFUSED = "refused"
    GRANTED = "granted"


class Decision(enum.StrEnum):
    GRANTED = "granted"
    REFUSED = "refused"
    SUPPRESSED = "suppressed"  # delivery suspended for every list
    SUPPRESSED_LIST = "suppressed-list"  # ... for the message's list (its List-Id)

    @property
    def suppressed(self) -> bool:
        """Whether delivery is suspended (for every list or for this one)."""
        return self in (Decision.SUPPRESSED, Decision.SUPPRESSED_LIST)


def policy_of(decision: Decision) -> Policy:
    """The rewrite policy for a decision; a suppressed recipient counts as refused."""
    return Policy.GRANTED if decision is Decision.GRANTED else Policy.REFUSED


class ConsentLookup(Protocol):
    async def decisions(
        self, recipients: Sequence[str], list_id: str | None
    ) -> Mapping[str, Decision]:
        """One round trip for all recipients of a message.

        Suppressed for every list -> ``SUPPRESSED``; else for this list (its
        ``List-Id``) -> ``SUPPRESSED_LIST``; else the consent state, unknown ->
        the configured default.  The keys are the recipient strings exactly as passed.
        """
        ...


class DefaultConsent:
    """Every recipient gets the configured default; nobody is suppressed."""

    def __init__(self, default: Policy) -> None:
        self.default = default

    async def decisions(
        self, recipients: Sequence[str], list_id: str | None
    ) -> Mapping[str, Decision]:
        return dict.fromkeys(recipients, Decision(self.default.value))
