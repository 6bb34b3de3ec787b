from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.smtpd.data import read_data, unstuff


def _stuff(content: bytes) -> bytes:
    """What a client sends for ``content`` (which ends with CRLF or is empty)."""
    stuffed = (b"." if content.startswith(b".") else b"") + content.replace(b"\r\n.", b"\r\n..")
    return stuffed + b".\r\n"


async def _read(pieces: list[bytes], limit: int | None = None,
                reader_limit: int = 1 << 16) -> tuple[bytes | None, int, bytes]:
    reader = asyncio.StreamReader(limit=reader_limit)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_data(b"QUIT\r\n")
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    content, size = await asyncio.wait_for(read_data(reader, limit), 5)
    await feeder
    return content, size, await reader.read()


async def test_empty_message() -> None:
    assert await _read([b".\r\n"]) == (b"", 0, b"QUIT\r\n")


async def test_dot_lines_and_pipelined_commands() -> None:
    content = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend.\r\n"
    got, size, rest = await _read([_stuff(content)])
    assert got == content and rest == b"QUIT\r\n"
    assert size == len(_stuff(content)) - 3


@pytest.mark.parametrize(
    "smuggled", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n\x00.\r\n", b"\r.\r\n"]
)
async def test_smuggling_variants_are_content(smuggled: bytes) -> None:
    content = b"a" + smuggled + b"MAIL FROM:<x@y>\r\n"
    got, _, _ = await _read([_stuff(content)])
    assert got == content


async def test_oversize_is_read_to_the_end_and_dropped() -> None:
    got, size, rest = await _read([b"x" * 70 + b"\r\n"] * 100 + [b".\r\n"], limit=1000)
    assert got is None and size == 7200 and rest == b"QUIT\r\n"


async def test_lines_longer_than_the_reader_buffer() -> None:
    content = b"y" * 300_000 + b"\r\n"
    got, _, _ = await _read([content[:100_000], content[100_000:], b".\r\n"], reader_limit=1024)
    assert got == content


async def test_disconnect_in_data_raises() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"partial\r\n")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await read_data(reader, None)


def test_unstuff() -> None:
    assert unstuff(b"..a\r\n..b\r\n.c\r\n") == b".a\r\n.b\r\nc\r\n"


@given(
    st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\r", b"\n", b"..", b"\r\n.", b"x" * 50]),
             max_size=60),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20),
)
def test_any_split_reads_back_the_content(parts: list[bytes], cuts: list[int]) -> None:
    content = b"".join(parts)
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    wire = _stuff(content)
    pieces, pos = [], 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        if pos >= len(wire):
            break
        pieces.append(wire[pos : pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    got, _, rest = asyncio.run(_read(pieces))
    assert got == content
    assert rest == b"QUIT\r\n"
