from __future__ import annotations

import logging

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.links import MAX_LINK, PreferenceLinks, open_links
from beacon_proxy.rewrite.step import Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity

TOKENS = Tokens(["links test secret 0123456789"])
BASE = "https://prefs.example.com"


def _recipient(address: str = "ann@example.org", **kw: object) -> Recipient:
    env = Envelope("Q1", "news@sender.example", (address,), 0.0, list_id="news.sender.example",
                   **kw)  # type: ignore[arg-type]
    return Recipient(env, address, Policy.REFUSED)


def _claims(url: str, purpose: Purpose) -> Claims:
    assert url.startswith(BASE + ("/u/" if purpose is Purpose.UNSUBSCRIBE else "/o/"))
    return TOKENS.verify(url.rsplit("/", 1)[1], purpose)


def test_preference_link_binds_recipient_list_and_queue() -> None:
    url = PreferenceLinks(TOKENS, BASE + "/")(_recipient())
    assert url is not None
    claims = _claims(url, Purpose.UNSUBSCRIBE)
    assert (claims.recipient, claims.list_id, claims.queue_id, claims.forward) == (
        "ann@example.org", "news.sender.example", "Q1", "")


def test_preference_link_carries_the_senders_one_click_url_only_when_replacing() -> None:
    r = _recipient(one_click="https://sender.example/unsub?s=42")
    url = PreferenceLinks(TOKENS, BASE)(r)
    assert url is not None
    assert _claims(url, Purpose.UNSUBSCRIBE).forward == "https://sender.example/unsub?s=42"
    kept = PreferenceLinks(TOKENS, BASE, forward=False)(r)
    assert kept is not None
    assert _claims(kept, Purpose.UNSUBSCRIBE).forward == ""


def test_a_one_click_url_too_long_for_a_header_line_is_left_out() -> None:
    r = _recipient(one_click="https://sender.example/" + "a" * 800)
    url = PreferenceLinks(TOKENS, BASE)(r)
    assert url is not None
    assert len(url) <= MAX_LINK
    assert _claims(url, Purpose.UNSUBSCRIBE).forward == ""


def test_the_link_is_minted_once_per_copy() -> None:
    links = PreferenceLinks(TOKENS, BASE)
    r = _recipient()
    first = links(r)
    assert links(r) is first
    other = links(_recipient("bob@example.org"))
    assert other != first


def test_no_link_for_an_address_longer_than_a_claim() -> None:
    assert PreferenceLinks(TOKENS, BASE)(_recipient("a" * 250 + "@" + "b" * 10 + ".org")) is None


def test_open_links_carry_the_tracker_url_only_when_forwarding() -> None:
    tracker = "https://t.example/open?u=42"
    plain = open_links(TOKENS, BASE, "ann@example.org", "l.example", "Q1")(tracker)
    claims = _claims(plain, Purpose.OPEN)
    assert (claims.url_id, claims.forward) == (url_identity(tracker), "")
    forwarded = open_links(TOKENS, BASE, "ann@example.org", "l.example", "Q1",
                           forward=True)(tracker)
    assert _claims(forwarded, Purpose.OPEN).forward == tracker
    huge = "https://t.example/" + "x" * 2000
    long_link = open_links(TOKENS, BASE, "ann@example.org", None, "Q1", forward=True)(huge)
    assert _claims(long_link, Purpose.OPEN).forward == ""


class _Counting(Tokens):
    def __init__(self) -> None:
        super().__init__(["links test secret 0123456789"])
        self.minted = 0

    def mint(self, claims: Claims) -> str:
        self.minted += 1
        return super().mint(claims)


def _plain_first(tokens: Tokens, r: Recipient, forward: bool) -> tuple[str | None, list[str]]:
    """The link and the warnings as the step made them before: the plain token first,
    then the one carrying the sender's one-click URL."""
    env, warnings = r.envelope, list[str]()
    try:
        plain = BASE + "/u/" + tokens.mint(Claims(Purpose.UNSUBSCRIBE, r.address, env.list_id,
                                                 env.queue_id))
    except ValueError:
        return None, ["no preference link"]
    if not (forward and env.one_click):
        return plain, warnings
    try:
        url = BASE + "/u/" + tokens.mint(Claims(Purpose.UNSUBSCRIBE, r.address, env.list_id,
                                               env.queue_id, forward=env.one_click))
    except ValueError:
        url = ""
    if not url or len(url) > MAX_LINK:
        return plain, ["one-click URL is too long"]
    return url, warnings


def test_the_carrying_token_first_gives_the_same_links_and_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    """Minting the token that carries the sender's one-click URL first (and the plain
    one only when that cannot be used) gives the link and the warnings of the plain one
    first, for addresses and one-click URLs of every length that matters, and mints
    once when the carrying link is used."""
    addresses = ["ann@example.org", "a" * 240 + "@b.org", "a" * 250 + "@" + "b" * 10 + ".org"]
    clicks = [None, "https://sender.example/u?s=1", "https://sender.example/" + "a" * 400,
              "https://sender.example/" + "a" * 800, "https://sender.example/" + "a" * 3000]
    for address in addresses:
        for one_click in clicks:
            for forward in (True, False):
                r = _recipient(address, one_click=one_click)
                want, want_warnings = _plain_first(TOKENS, r, forward)
                tokens = _Counting()
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="beacon_proxy.rewrite.links"):
                    got = PreferenceLinks(tokens, BASE, forward=forward)(r)
                messages = [rec.getMessage() for rec in caplog.records]
                assert len(messages) == len(want_warnings)
                assert all(w in m for w, m in zip(want_warnings, messages, strict=True))
                if want is None:
                    assert got is None
                    continue
                assert got is not None
                a, b = (_claims(u, Purpose.UNSUBSCRIBE) for u in (got, want))
                assert (a.recipient, a.list_id, a.queue_id, a.forward) == (
                    b.recipient, b.list_id, b.queue_id, b.forward)
                if b.forward:
                    assert tokens.minted == 1
