from __future__ import annotations

import pytest

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
        ("a@xn--zz.org", "internationalised"),
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
