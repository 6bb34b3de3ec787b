from __future__ import annotations

import pytest

from beacon_proxy import headerfacts
from beacon_proxy.smtpd.data import canonical
from beacon_proxy.smtpd.message import (
    has_bare_cr_or_lf,
    header_section,
    printable_ascii,
)


def test_header_section_ends_after_first_empty_line() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n"
    assert header_section(msg, 1024) == b"A: 1\r\nB: 2\r\n"


def test_header_section_without_body_is_the_whole_message() -> None:
    assert header_section(b"A: 1\r\n", 1024) == b"A: 1\r\n"
    assert header_section(b"", 1024) == b""


def test_empty_header_section() -> None:
    assert header_section(b"\r\nbody\r\n", 1024) == b""


def test_header_section_limit_is_inclusive() -> None:
    header = b"X: " + b"a" * 13 + b"\r\n"  # 18 bytes
    assert header_section(header + b"\r\nbody", 18) == header
    assert header_section(header + b"\r\nbody", 17) is None
    assert header_section(header, 18) == header
    assert header_section(header, 17) is None


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: a\nBcc: x@example.org\r\n",
        b"Subject: a\rBcc: x@example.org\r\n",
        b"Subject: a\r\r\n",
        b"Subject: a\r\n\n",
        b"\n",
    ],
)
def test_bare_cr_or_lf(header: bytes) -> None:
    assert has_bare_cr_or_lf(header)


def test_crlf_only_is_fine() -> None:
    assert not has_bare_cr_or_lf(b"Subject: a\r\n b\r\nTo: x\r\n")


def test_a_canonical_lf_header_parses_like_a_crlf_one() -> None:
    message = canonical(b"Subject: a\nMessage-ID:\n <lf@example.org>\nList-Id: <l.example>\n\nb\n")
    header = header_section(message, 1024)
    assert header == b"Subject: a\r\nMessage-ID:\r\n <lf@example.org>\r\nList-Id: <l.example>\r\n"
    assert not has_bare_cr_or_lf(header)
    assert headerfacts.message_id(header) == "<lf@example.org>"
    assert has_bare_cr_or_lf(canonical(b"Subject: a\rb\n\n"))  # a bare CR stays bare


def test_printable_ascii() -> None:
    assert printable_ascii("mail.example.org") == "mail.example.org"
    assert printable_ascii("a\x00b\r\nc\udcffü") == "a?b??c??"
    assert printable_ascii("x" * 300) == "x" * 255
