"""Consent stage: each recipient's beacon consent and the resulting policy."""

from beacon_proxy.consent.policy import ConsentLookup, DefaultConsent, Policy

__all__ = ["ConsentLookup", "DefaultConsent", "Policy"]
