"""Consent stage: each recipient's beacon consent, suppressions, audit trail and open events.

The relay asks a :class:`ConsentLookup` for each message's recipients; the
command line and the admin API work on a :class:`Store` (SQLite or
PostgreSQL, see :mod:`beacon_proxy.consent.store`).
"""

from beacon_proxy.consent.policy import ConsentLookup, Decision, DefaultConsent, Policy

__all__ = ["ConsentLookup", "Decision", "DefaultConsent", "Policy"]
