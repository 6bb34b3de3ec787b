from __future__ import annotations

from beacon_proxy.consent.policy import Decision, DefaultConsent, Policy, policy_of


async def test_default_consent_answers_the_default_for_everyone() -> None:
    consent = DefaultConsent(Policy.GRANTED)
    assert await consent.decisions(["a@x.org", "B@x.org"], "news.x.org") == {
        "a@x.org": Decision.GRANTED, "B@x.org": Decision.GRANTED}
    assert await DefaultConsent(Policy.REFUSED).decisions(["a@x.org"], None) == {
        "a@x.org": Decision.REFUSED}


def test_a_suppressed_recipient_is_never_tracked() -> None:
    assert policy_of(Decision.SUPPRESSED) is Policy.REFUSED
    assert policy_of(Decision.GRANTED) is Policy.GRANTED
