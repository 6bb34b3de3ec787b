from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.address import (
    AddressError,
    ListIdError,
    list_key,
    lookup_key,
    normalize_list_id,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "canonical", "key"),
    [
        ("ann@example.org", "ann@example.org", "ann@example.org"),
        ("Ann.Lee@EXAMPLE.Org", "Ann.Lee@example.org", "ann.lee@example.org"),
        ("<ann@example.org>", "ann@example.org", "ann@example.org"),
        ("  ann@example.org ", "ann@example.org", "ann@example.org"),
        ("Jörg@Bücher.DE", "Jörg@xn--bcher-kva.de", "jörg@xn--bcher-kva.de"),
        ("j@XN--BCHER-KVA.de", "j@xn--bcher-kva.de", "j@xn--bcher-kva.de"),
        ("jo\u0308rg@example.org", "jörg@example.org", "jörg@example.org"),  # NFC
        ("x@[192.0.2.1]", "x@[192.0.2.1]", "x@[192.0.2.1]"),
        ("x@[IPv6:2001:DB8:0::1]", "x@[IPv6:2001:db8::1]", "x@[IPv6:2001:db8::1]"),
        ("x@[ipv6:2001:db8:0:0:0:0:0:1]", "x@[IPv6:2001:db8::1]", "x@[IPv6:2001:db8::1]"),
        # domains the relay accepts and IDNA 2008 refuses: keyed label by label
        ("X@XN--LS8H.la", "X@xn--ls8h.la", "x@xn--ls8h.la"),  # an emoji label
        ("a@xn--zz.org", "a@xn--zz.org", "a@xn--zz.org"),  # no valid Punycode
        ("a@\u05d0a.com", "a@xn--a-zhc.com", "a@xn--a-zhc.com"),  # right-to-left and Latin
        ("Straße@example.org", "Straße@example.org", "straße@example.org"),  # not casefolded
        # A quoted local part that needs no quotes is the same mailbox as the plain one.
        ('"Ann"@example.org', "Ann@example.org", "ann@example.org"),
        ('"a\\.b"@example.org', "a.b@example.org", "a.b@example.org"),
        ('"a..b"@example.org', '"a..b"@example.org', '"a..b"@example.org'),
        ('"a@b"@example.org', '"a@b"@example.org', '"a@b"@example.org'),
    ],
)
def test_canonical_form_and_key(text: str, canonical: str, key: str) -> None:
    a = parse_address(text)
    assert (a.text, a.key) == (canonical, key)
    assert lookup_key(text) == key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("nobody", "no @domain"),
        ("a@", "domain is missing"),
        ("@example.org", "local part is missing"),
        ("a b@example.org", "spaces"),
        ("a@exa mple.org", "spaces"),
        ("a@-bad-.org", "not a valid host name"),
        ("a@[IPv6:2001:db8::g]", "not a valid host name or address literal"),
        ("a" * 65 + "@example.org", "longer than 64"),
    ],
)
def test_bad_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_address(text)


def test_lookup_key_never_raises() -> None:
    assert lookup_key("Not An Address") == "not an address"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("news.example.org", "news.example.org"),
        ("Weekly News <News.Example.ORG>", "news.example.org"),
        ("<list-1.example.org>", "list-1.example.org"),
    ],
)
def test_list_ids(value: str, expected: str) -> None:
    assert normalize_list_id(value) == expected
    assert list_key(value) == expected


@pytest.mark.parametrize("value", ["", "  ", "two words", "a..b", ".a", "x" * 256])
def test_bad_list_ids(value: str) -> None:
    with pytest.raises(ListIdError):
        normalize_list_id(value)


def test_list_key_never_raises() -> None:
    assert list_key(None) == "" and list_key("") == ""
    assert list_key("Two Words") == "two words"


def test_free_text_refuses_control_characters_at_the_ends_too() -> None:
    from beacon_proxy.consent.model import InvalidValue, check_text

    assert check_text("reason", " moved away\t") == "moved away"
    for bad in ("moved\x1f", "\x1cmoved", "a\x00b", "x\x7f"):
        with pytest.raises(InvalidValue, match="control characters"):
            check_text("reason", bad)


def _parsed_key(text: str) -> str:
    """``lookup_key`` before its shortcut: always parsed (the reference)."""
    try:
        return parse_address(text).key
    except AddressError:
        return text.strip().strip("<>").lower()


_ADDRESS_PIECES = st.lists(
    st.sampled_from([*"aZ09.-_+@@[]<>\"\\ \t\n\x00\x7fxXnN-", "xn--", "XN--", "x" * 64]),
    max_size=24).map("".join)


@settings(max_examples=500)
@given(st.one_of(
    _ADDRESS_PIECES,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30),
    st.builds(lambda local, labels: f"{local}@{'.'.join(labels)}",
              st.text(st.sampled_from(list("aZ0.-_+!#'\"")), min_size=0, max_size=70),
              st.lists(st.text(st.sampled_from(list("aZ0-x")), max_size=64) | st.just("xn--a"),
                       min_size=1, max_size=5)),
    st.text(max_size=20),
    st.builds(lambda local, literal: f"{local}@[{literal}]",
              st.sampled_from(["A", "ann", '"A"']),
              st.sampled_from(["192.0.2.1", "IPv6:ABCD::1", "ipv6:abcd::1", "X"])),
))
@example("x@[IPv6:ABCD::1]")
@example("Ann@[192.0.2.1]")
@example("j@XN--BCHER-KVA.de")
@example("j@xn--bcher-kva.DE")
@example('"Ann"@Example.org')
@example(" Ann@example.org")
@example("<Ann@example.org>")
@example("Ann@example.org")
def test_lookup_key_shortcut_is_the_parsed_key(text: str) -> None:
    """The ASCII shortcut gives the key parsing gives, or its fallback, for every text
    (over-long parts, quotes, literals, IDNA labels, controls, brackets)."""
    assert lookup_key(text) == _parsed_key(text)


def test_list_key_remembers_only_equal_text() -> None:
    assert list_key("News <A.Example.org>") == "a.example.org"
    assert list_key("News <A.Example.org>") == "a.example.org"
    assert list_key("B.example.org") == "b.example.org"
    assert list_key("Two Words") == "two words" and list_key(None) == ""
    assert list_key("News <A.Example.org>") == "a.example.org"
