from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy import headerfacts
from beacon_proxy.smtpd.data import canonical
from beacon_proxy.smtpd.message import (
    has_bare_cr_or_lf,
    header_section,
    line_number,
    long_line,
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


def _first_long_line(data: bytes, limit: int) -> int | None:
    """The obvious definition, line by line (lines end at any CR or LF)."""
    start = 0
    for segment in re.split(rb"[\r\n]", data):
        if len(segment) > limit:
            return start
        start += len(segment) + 1
    return None


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"x", b"yy" * 3, b"z" * 9]),
                max_size=60),
       st.integers(min_value=1, max_value=12))
def test_long_line_finds_the_first_line_over_the_limit(pieces: list[bytes], limit: int) -> None:
    data = b"".join(pieces)
    assert long_line(data, limit) == _first_long_line(data, limit)


class _Counted(bytes):
    """Bytes that count the ``rfind`` calls made on them."""

    calls = 0

    def rfind(self, *args: Any) -> int:
        type(self).calls += 1
        return super().rfind(*args)


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"\n\n", b"\r\r", b"x", b"z" * 9]),
                max_size=200),
       st.integers(min_value=1, max_value=12))
def test_long_line_steps_are_linear(pieces: list[bytes], limit: int) -> None:
    """LF first, CR only without an LF: within three steps the start passes the
    first window's end, so at most two rfind calls per step and three steps per
    ``limit`` octets (and the answer stays the definition's)."""
    data = _Counted(b"".join(pieces))
    _Counted.calls = 0
    assert long_line(data, limit) == _first_long_line(data, limit)
    assert _Counted.calls <= 2 * (3 * (len(data) // limit + 1))


def test_long_line_at_rfc_limits() -> None:
    assert long_line(b"a" * 998) is None
    assert long_line(b"a" * 999) == 0
    assert long_line(b"ok\r\n" + b"a" * 998 + b"\r\n" + b"b" * 999 + b"\r\n") == 1004
    assert long_line(b"") is None


def test_line_number() -> None:
    data = b"a\r\nb\r\nc\r\n"
    assert [line_number(data, i) for i in (0, 1, 3, 6, 9)] == [1, 1, 2, 3, 4]
