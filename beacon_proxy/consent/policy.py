"""Beacon policy: what a recipient's copy gets.

``REFUSED`` copies lose every beacon; ``GRANTED`` copies get first-party
beacons.  Until the consent store is wired in, every recipient gets the
configured default for unknown recipients (``[policy] unknown``), which is
``refused``: privacy by default.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = ["ConsentLookup", "DefaultConsent", "Policy"]


class Policy(enum.StrEnum):
    REFUSED = "refused"
    GRANTED = "granted"


class ConsentLookup(Protocol):
    async def policies(self, recipients: Sequence[str]) -> Mapping[str, Policy]:
        """The policy for each recipient, in one round trip for all of them."""
        ...


class DefaultConsent:
    """Every recipient gets the configured default."""

    def __init__(self, default: Policy) -> None:
        self.default = default

    async def policies(self, recipients: Sequence[str]) -> Mapping[str, Policy]:
        return dict.fromkeys(recipients, self.default)
