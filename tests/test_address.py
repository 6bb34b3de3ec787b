from __future__ import annotations

import pytest

from beacon_proxy.address import address_problem


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org",
        "first.last+tag@sub.example.co.uk",
        '"quoted@local"@example.org',
        "x@[192.0.2.1]",
        "x@[IPv6:2001:db8::1]",
        "under_score@host_name.example",
        "a" * 64 + "@example.org",
        "postmaster@localhost",
    ],
)
def test_acceptable(address: str) -> None:
    assert address_problem(address, smtputf8=False) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("ab", "no @domain"),
        ("@example.org", "local part is missing"),
        ("a@", "domain is missing"),
        ('"a b"@example.org', "spaces or control"),
        ("a\r\nb@example.org", "spaces or control"),
        ("a\x00@example.org", "spaces or control"),
        ("a\x7f@example.org", "spaces or control"),
        ("a" * 65 + "@example.org", "local part is longer than 64"),
        ("a@" + "b" * 60 + "." + "c" * 200, "longer than 254"),
        ("a@" + "b" * 64 + ".org", "not a valid host name"),
        ("a@example..org", "not a valid host name"),
        ("a@example.org.", "not a valid host name"),
        ("a@-example.org", "not a valid host name"),
        ("a@exa$mple.org", "not a valid host name"),
        ("a@[300.1.1.1]", "not a valid host name"),
        ("a@[IPv6:nope]", "not a valid host name"),
        ("a\udcff@example.org", "not valid UTF-8"),
    ],
)
def test_problems(address: str, reason: str) -> None:
    problem = address_problem(address, smtputf8=True)
    assert problem is not None
    assert reason in problem


def test_non_ascii_needs_smtputf8() -> None:
    for address in ("jörg@example.de", "info@bücher.example"):
        assert address_problem(address, smtputf8=False) == "non-ASCII address needs SMTPUTF8"
        assert address_problem(address, smtputf8=True) is None


def test_lengths_count_octets() -> None:
    local = "ü" * 33  # 66 octets in UTF-8
    problem = address_problem(local + "@example.org", smtputf8=True)
    assert problem is not None
    assert "longer than 64 octets" in problem
