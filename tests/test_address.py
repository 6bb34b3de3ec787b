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
        "=1+2@x.test",  # atext: a formula in a spreadsheet, a valid mailbox here
        "-a@x.test",
        "'=x@x.test",
        "!#$%&'*+-/=?^_`{|}~@x.test",
        '"a<b>"@x.test',
        '"a@b"@x.test',
        '"a\\"b"@x.test',  # quoted-pair: an escaped quote
        '"a..b"@x.test',
        '"(x),;:[]"@x.test',
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
        ("\ud800@example.org", "not valid UTF-8"),
        ("a<b>@x.test", "'<' outside quotes"),
        ("<a@x.test>", "'<' outside quotes"),
        ("a>@x.test", "'>' outside quotes"),
        ("a@b@x.test", "more than one @"),
        ('"a"@b@x.test', "more than one @"),
        ("a(b)@x.test", "'(' outside quotes"),
        ("a,b@x.test", "',' outside quotes"),
        ("a;b@x.test", "';' outside quotes"),
        ("a:b@x.test", "':' outside quotes"),
        ("a[b]@x.test", "'[' outside quotes"),
        ("a\\b@x.test", "'\\\\' outside quotes"),
        ('a"b@x.test', "'\"' outside quotes"),
        (".a@x.test", "dot at its start"),
        ("a.@x.test", "dot at its start"),
        ("a..b@x.test", "two in a row"),
        ('"a@x.test', "quoted local part is not closed"),
        ('"a\\"@x.test', "quoted local part is not closed"),
        ('"a"b@x.test', "not followed by @domain"),
        ('""@x.test', "local part is missing"),
        ("a@x.test\x00", "spaces or control"),
        ("a\tb@x.test", "spaces or control"),
        ("a\u0085b@x.test", "spaces or control"),  # a C1 control (NEL)
        ("a\u00a0b@x.test", "spaces or control"),  # no-break space
        ("a\u2028b@x.test", "spaces or control"),  # line separator
        ('"' + "a" * 63 + '"@x.test', "local part is longer than 64"),
        ("a@" + ("b" * 63 + ".") * 4 + "c", "longer than 254"),
        ("a@x.test>", "not a valid host name"),
        ("a@[192.0.2.1", "not a valid host name"),
        ("a@x_y.test;", "not a valid host name"),
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


def test_quoted_non_ascii_needs_smtputf8() -> None:
    assert address_problem('"jörg x"@example.de', smtputf8=True) is not None  # the space
    assert address_problem('"jörg"@example.de', smtputf8=False) == (
        "non-ASCII address needs SMTPUTF8")
    assert address_problem('"jörg"@example.de', smtputf8=True) is None
