"""One parser for List-Id and Message-ID, used by the SMTP side, the engine and scan, and
one search for the end of the header section."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.headerfacts import (
    _value_start,
    body_start,
    field,
    header_block,
    list_id,
    message_id,
    one_click_url,
)
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.rules import load_rules


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Message-ID: <a@b>\r\n", "<a@b>"),
        (b"message-id:<a@b>\r\n", "<a@b>"),
        (b"MESSAGE-ID :  <a@b>  \r\n", "<a@b>"),
        (b"Message-ID:\r\n <folded@example.org>\r\nTo: x\r\n", "<folded@example.org>"),
        (b"Message-ID:\r\n\t<tab@example.org>\r\n", "<tab@example.org>"),
        (b"Message-ID: <a@\r\n\tb>\r\n", None),  # a tab inside is not printable
        (b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n", "<first@x>"),
        (b"X-Message-ID: <no@x>\r\n", None),
        (b"Subject: hi\r\n", None),
        (b"Message-ID:\r\n", None),
        (b"Message-ID: <\xc3\xbc@x>\r\n", None),
        (b"Message-ID: <a\x01@x>\r\n", None),
        (b"Message-ID: <" + b"a" * 1000 + b">\r\n", None),
        (b"Message-ID: <a\r\n" + b" b" * 600 + b">\r\n", None),
    ],
)
def test_message_id(header: bytes, expected: str | None) -> None:
    assert message_id(header) == expected


def test_list_id_label() -> None:
    assert list_id(b"List-Id: Shop news <news.shop.example>\r\n") == "news.shop.example"
    assert list_id(b"List-ID:\r\n <a.b.example>\r\n") == "a.b.example"
    assert list_id(b"List-Id: no brackets\r\n") is None
    assert list_id(b"Subject: x\r\n") is None
    assert list_id(b"List-Id: <bad label>\r\n") is None


@pytest.mark.parametrize(
    ("header", "label"),
    [
        (b"List-Id: =?UTF-8?Q?Caf=C3=A9_news?= <news.shop.example>\r\n", "news.shop.example"),
        (b'List-Id: "Caf\xc3\xa9 news" <news.shop.example>\r\n', "news.shop.example"),
        (b"List-Id: Caf\xe9 news\r\n <news.shop.example>\r\n", "news.shop.example"),
        (b"List-Id:\r\n\t<news.shop.example>\r\n", "news.shop.example"),
        (b"List-Id: news.shop.example\r\n", "news.shop.example"),
        (b"List-Id: <news.shop.example>\r\nList-Id: <other.example>\r\n", "news.shop.example"),
        (b"List-Id: Shop <news.shop.example>\n", "news.shop.example"),
    ],
)
def test_every_path_reads_the_same_list_id(header: bytes, label: str) -> None:
    message = header + b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n"
    assert list_id(header) == label
    assert list_id(message) == label
    assert Engine(load_rules()).analyse(message).list_id == label


def test_only_the_header_section_counts() -> None:
    assert header_block(b"A: 1\r\n\r\nList-Id: <x.example>\r\n") == b"A: 1\r\n"
    assert list_id(b"Subject: x\r\n\r\nList-Id: <body.example>\r\n") is None
    assert list_id(b"\r\nList-Id: <body.example>\r\n") is None


# -- the sender's one-click URL -----------------------------------------------

_POST = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"List-Unsubscribe: <https://s.example/u?id=1>\r\n" + _POST, "https://s.example/u?id=1"),
        (b"List-Unsubscribe: <mailto:u@s.example>, <https://s.example/u>\r\n" + _POST,
         "https://s.example/u"),
        (b"List-Unsubscribe:\r\n <https://s.example/folded>\r\n" + _POST,
         "https://s.example/folded"),
        (b"list-unsubscribe: <HTTPS://S.example/x>\r\nlist-unsubscribe-post:  "
         b"list-unsubscribe=one-click \r\n", "HTTPS://S.example/x"),
        # No one-click POST field: the URL is for a browser, not for a POST.
        (b"List-Unsubscribe: <https://s.example/u>\r\n", None),
        (b"List-Unsubscribe: <https://s.example/u>\r\nList-Unsubscribe-Post: yes\r\n", None),
        # Not HTTPS, no host, user info, too long, not ASCII, no brackets.
        (b"List-Unsubscribe: <http://s.example/u>\r\n" + _POST, None),
        (b"List-Unsubscribe: <mailto:u@s.example>\r\n" + _POST, None),
        (b"List-Unsubscribe: <https:///path>\r\n" + _POST, None),
        (b"List-Unsubscribe: <https://user:pw@s.example/u>\r\n" + _POST, None),
        (b"List-Unsubscribe: <https://s.example/" + b"a" * 1100 + b">\r\n" + _POST, None),
        (b"List-Unsubscribe: <https://s.example/\xc3\xa9>\r\n" + _POST, None),
        (b"List-Unsubscribe: https://s.example/u\r\n" + _POST, None),
        (b"List-Unsubscribe: <https://s.example:99999/u>\r\n" + _POST, None),
        (b"Subject: x\r\n" + _POST, None),
        # Only the header section counts.
        (b"Subject: x\r\n\r\nList-Unsubscribe: <https://s.example/u>\r\n" + _POST, None),
    ],
)
def test_one_click_url(header: bytes, expected: str | None) -> None:
    assert one_click_url(header + b"\r\nbody") == expected


# -- where the header section ends: one search for every reader ------------------


@pytest.mark.parametrize(
    ("data", "start", "block"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", 14, b"A: 1\r\nB: 2\r\n"),  # CRLF
        (b"A: 1\nB: 2\n\nbody\n", 11, b"A: 1\nB: 2\n"),  # bare LF
        (b"A: 1\r\n\nbody", 7, b"A: 1\r\n"),  # a CRLF line, then an empty LF one
        (b"A: 1\n\r\nbody", 7, b"A: 1\n"),  # an LF line, then an empty CRLF one
        (b"A: 1\n\n\r\nbody", 6, b"A: 1\n"),  # the LF one comes first (was 8)
        (b"A: 1\r\n\r\n", 8, b"A: 1\r\n"),  # no body
        (b"A: 1\n\n", 6, b"A: 1\n"),
        (b"A: 1\r\nB: 2\r\n", 0, b"A: 1\r\nB: 2\r\n"),  # a header only: no empty line
        (b"A: 1", 0, b"A: 1"),
        (b"\r\nbody\r\n\r\nmore", 2, b""),  # no header
        (b"\nbody", 1, b""),
        (b"", 0, b""),
        (b"A: 1\r\rB\r\n\r\n", 11, b"A: 1\r\rB\r\n"),  # a bare CR ends no line
    ],
)
def test_body_start_and_header_block(data: bytes, start: int, block: bytes) -> None:
    assert body_start(data) == start
    assert header_block(data) == block
    if start:  # the rewrite's MIME parser reads the same header section
        assert parse_message(data).root.body_span.start == start


def test_the_search_is_bounded_by_its_limit() -> None:
    data = b"A: 1\r\n\r\nbody"
    assert body_start(data, 8) == 8 and body_start(data, 7) == 0
    assert header_block(data, 8) == b"A: 1\r\n" and header_block(data, 7) == data[:7]
    long = b"X: " + b"x" * 100 + b"\r\n\r\nbody"
    assert header_block(long, 50) == long[:50]


def test_body_start_is_the_first_empty_line_of_any_line_ends() -> None:
    """Held to the rule written out line by line: a line ends at LF; an empty one is
    nothing or a lone CR before it."""

    def by_lines(data: bytes) -> int:
        at = 0
        while (nl := data.find(b"\n", at)) >= 0:
            if data[at:nl] in (b"", b"\r"):
                return nl + 1
            at = nl + 1
        return 0

    rng = random.Random(12)
    pieces = (b"A: 1", b"\r\n", b"\n", b"\r", b" b", b":")
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(9)))
        assert body_start(data) == by_lines(data), data


_NAMES = ("message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post", "to")


def _regex_value_start(header: bytes, name: str) -> int:
    """The search ``field`` made before (a regex per name), as the reference."""
    found = re.search(rb"(?:\A|\n)" + re.escape(name.encode("ascii")) + rb"[ \t]*:",
                      header, re.IGNORECASE)
    return -1 if found is None else found.end()


_LINE = st.one_of(
    st.tuples(
        st.sampled_from(["Message-ID", "MESSAGE-id", "message-i", "List-Id", "LIST-ID",
                         "List-Unsubscribe", "list-unsubscribe-POST", "To", "tO", "X-To",
                         "List-Unsubscribe-Post-X", ""]),
        st.sampled_from(["", " ", "\t", " \t ", "x", ": "]),
        st.sampled_from([":", "", " :"]),
        st.sampled_from(["", " <a@b>", "\xc4", " v\r\n x", "\r"]),
    ).map(lambda t: "".join(t).encode("latin-1")),
    st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"\t", b":", b"\xc4\xe9", b"\0"]),
)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(_LINE, st.sampled_from([b"\r\n", b"\n", b"\r", b""])),
                max_size=12),
       st.sampled_from(_NAMES))
def test_the_field_search_finds_what_the_regex_found(lines: list[tuple[bytes, bytes]],
                                                     name: str) -> None:
    """Headers of field lines (names in any case, blanks or junk before the colon, no
    colon), folds, bare CR and LF, non-ASCII bytes: the same start as the regex."""
    header = b"".join(line + end for line, end in lines)
    assert _value_start(header, name) == _regex_value_start(header, name)
    assert _value_start(bytes(header), name) == _regex_value_start(header, name)


@pytest.mark.parametrize(("header", "name", "start"), [
    (b"To:x", "to", 3),
    (b"tO \t :x", "to", 6),
    (b"To x\nTo\t:y", "to", 9),
    (b"\nTo:x", "to", 4),
    (b"X-To: a\nto : b", "to", 12),
    (b"Tox: a\r\nTo\r\n: b\r\nTO:c", "to", 20),
    (b"List-Unsubscribe-Post: a\nList-Unsubscribe: b", "list-unsubscribe", 42),
])
def test_the_field_search_at_the_edges(header: bytes, name: str, start: int) -> None:
    assert _regex_value_start(header, name) == start
    assert _value_start(header, name) == start


def test_the_lowered_header_is_not_reused_for_other_bytes() -> None:
    """The kept lowered copy answers only for equal bytes: a header of the same length
    read next gets its own."""
    assert field(b"Subject: a\r\nTo: b\r\n", "to") == "b"
    assert field(b"Subject: a\r\nXo: b\r\n", "to") is None  # the same length
    assert field(b"TO: c\r\nSubject: a\r\n", "to") == "c"
