from __future__ import annotations

import asyncio
import contextlib
import re
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.smtpd import data as data_module
from beacon_proxy.smtpd.data import (
    canonical,
    crlf_line_ends,
    drop_lone_dots,
    has_bare_lf,
    read_data,
    unstuff,
)


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
    ("smuggled", "canonical_form"),
    [
        (b"\n.\n", b"\r\n"),  # a lone "." next to a bare LF: dropped, as Postfix does
        (b"\n.\r\n", b"\r\n"),
        (b"\r\n.\n", b"\r\n"),
        (b"\r.\r", b"\r.\r"),  # no LF, no line end: content as it is
        (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n"),
        (b"\r.\r\n", b"\r.\r\n"),
    ],
)
async def test_smuggling_variants_do_not_end_data(smuggled: bytes, canonical_form: bytes) -> None:
    received = b"a" + smuggled + b"MAIL FROM:<x@y>\r\n"
    got, size, rest = await _read([received + b".\r\n"])  # sent as is: no dot-stuffing
    assert got == b"a" + canonical_form + b"MAIL FROM:<x@y>\r\n"  # one message, not two
    assert rest == b"QUIT\r\n" and size == len(received)


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


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"\r\n.", b"\\1",
                                 b"\\g<0>"]), max_size=50))
def test_unstuff_removes_each_lines_first_period_only(parts: list[bytes]) -> None:
    """The period that starts a line (after a CRLF, or at the very start) goes, one per
    line, nothing else changes (the substitution's template has no escapes to expand)."""
    content = b"".join(parts)
    lines = content.split(b"\r\n")
    assert unstuff(content) == b"\r\n".join(line.removeprefix(b".") for line in lines)


def test_crlf_line_ends() -> None:
    assert crlf_line_ends(b"a\nb\n\nc\r\nd\n") == b"a\r\nb\r\n\r\nc\r\nd\r\n"
    assert crlf_line_ends(b"\n") == b"\r\n"
    assert crlf_line_ends(b"a\r\r\nb\r\n") == b"a\r\r\nb\r\n"  # the bare CR stays bare
    assert crlf_line_ends(b"a\rb\r") == b"a\rb\r"
    assert crlf_line_ends(b"a\r\n\r\n\n\r") == b"a\r\n\r\n\r\n\r"


def test_crlf_line_ends_leaves_a_crlf_message_alone() -> None:
    message = b"Subject: x\r\n\r\n" + b"line\r\n" * 1000
    assert not has_bare_lf(message)
    assert crlf_line_ends(message) is message  # no copy
    assert has_bare_lf(message + b"\n") and has_bare_lf(b"\n\r") and not has_bare_lf(b"\r\r\n")
    assert crlf_line_ends(b"") == b""


def test_drop_lone_dots() -> None:
    assert drop_lone_dots(b"a\r\n.\r\nb\r\n") == b"a\r\nb\r\n"
    assert drop_lone_dots(b".\r\n.\r\n.\r\n.\r\n.\r\nb\r\n") == b"b\r\n"
    assert drop_lone_dots(b"a\r\n" + b".\r\n" * 1000) == b"a\r\n"
    kept = b"..\r\n.a\r\na.\r\n\r.\r\n \r\n.\r\r\n"
    assert drop_lone_dots(kept) is kept


def test_header_injection_becomes_two_header_lines() -> None:
    got = canonical(b"Subject: a\nBcc: x@example.org\r\n\nbody\n")
    assert got == b"Subject: a\r\nBcc: x@example.org\r\n\r\nbody\r\n"


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        if pos >= len(wire):
            break
        pieces.append(wire[pos : pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    return pieces


def _postfix(stream: bytes) -> tuple[bytes, int, bytes]:
    """(message, bytes received, rest) for what follows DATA, read line by line.

    The reference: Postfix 3.9's smtpd loop with ``smtpd_forbid_bare_newline =
    normal``.  A line ends at LF (CRLF or bare); a lone "." ends the data only
    when it and the line before end in CRLF; otherwise it is dropped; any
    other line loses a leading "."; every line is stored with CRLF.
    """
    out: list[bytes] = []
    prev_bare, pos = False, 0
    while True:
        end = stream.index(b"\n", pos) + 1
        line, start, pos = stream[pos:end], pos, end
        crlf = line.endswith(b"\r\n")
        text = line[:-2] if crlf else line[:-1]
        if text == b"." and crlf and not prev_bare:
            return b"".join(out), start, stream[pos:]
        prev_bare = not crlf
        if text == b".":
            continue
        out.append(text.removeprefix(b".") + b"\r\n")


_PARTS = st.sampled_from([
    b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\n.", b"\n..", b"\n.\n", b"\n.\r\n",
    b"\r\n.\n", b".\r\n", b"\r\n.\r\n", b"\x00", b"x" * 50,
])
_CUTS = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20)


@given(st.lists(_PARTS, max_size=60), _CUTS)
def test_any_input_any_split_reads_as_postfix_does(parts: list[bytes], cuts: list[int]) -> None:
    sent = b"".join(parts) + b"\r\n.\r\n"  # the stream holds an end of data, maybe earlier
    message, size, rest = _postfix(sent + b"QUIT\r\n")
    got, got_size, got_rest = asyncio.run(_read(_split(sent, cuts)))
    assert got == message
    assert b"\n" not in got.replace(b"\r\n", b"")  # every LF is part of a CRLF
    assert (got_size, got_rest) == (size, rest)


def _smtplib_wire(content: bytes) -> bytes:
    """What ``smtplib.SMTP.data()`` sends for bytes: "." doubled after any LF, CRLF, "."."""
    quoted = re.sub(rb"(?m)^\.", b"..", content)
    return quoted + (b"" if quoted.endswith(b"\r\n") else b"\r\n") + b".\r\n"


@given(st.lists(_PARTS, max_size=60), _CUTS)
def test_what_smtplib_sends_reads_back_with_crlf(parts: list[bytes], cuts: list[int]) -> None:
    content = b"".join(parts)
    got, _, rest = asyncio.run(_read(_split(_smtplib_wire(content), cuts)))
    assert got == crlf_line_ends(content if content.endswith(b"\r\n") else content + b"\r\n")
    assert rest == b"QUIT\r\n"


def test_lf_only_message_with_dot_lines() -> None:
    wire = _smtplib_wire(b"Subject: x\n\n.leading dot\n.\n..two\nend\n")
    assert wire == b"Subject: x\n\n..leading dot\n..\n...two\nend\n\r\n.\r\n"
    got, size, rest = asyncio.run(_read([wire]))
    assert got == b"Subject: x\r\n\r\n.leading dot\r\n.\r\n..two\r\nend\r\n\r\n"
    assert size == len(wire) - 3 and rest == b"QUIT\r\n"


_LINE_BYTES = bytes(b"\r\na."[i % 4] for i in range(256))  # any byte -> CR, LF, a or .


@given(st.binary(max_size=64).map(lambda b: b.translate(_LINE_BYTES)))
def test_has_bare_lf_is_an_lf_without_a_cr_before_it(data: bytes) -> None:
    """The search agrees with the definition (and with the counts it replaced)."""
    expected = any(c == 10 and (i == 0 or data[i - 1] != 13) for i, c in enumerate(data))
    assert has_bare_lf(data) is expected
    assert expected == (data.count(b"\n") != data.count(b"\r\n"))


# -- the one-pass reader's own paths: taking out of the buffer, the slow path --

def _settings(max_dots: int, take_at: int) -> contextlib.AbstractContextManager[object]:
    """read_data with ``MAX_DOTS`` and ``_TAKE_AT`` set (1 and 4: every message
    with a stuffed line goes the slow way, the buffer is taken out at each wake)."""
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(data_module, "MAX_DOTS", max_dots))
    stack.enter_context(mock.patch.object(data_module, "_TAKE_AT", take_at))
    return stack


_SETTINGS = [(64, 1 << 17), (64, 4), (1, 1 << 17), (1, 4), (0, 1)]


@pytest.mark.parametrize(("max_dots", "take_at"), _SETTINGS)
@given(parts=st.lists(_PARTS, max_size=60), cuts=_CUTS,
       limit=st.none() | st.integers(min_value=0, max_value=400))
def test_every_path_reads_as_postfix_does(max_dots: int, take_at: int, parts: list[bytes],
                                          cuts: list[int], limit: int | None) -> None:
    """Split terminators, bare LFs, stuffed lines, sizes around the limit: whichever
    way the reader goes, the message, the size and what follows are Postfix's."""
    sent = b"".join(parts) + b"\r\n.\r\n"
    message, size, rest = _postfix(sent + b"QUIT\r\n")
    with _settings(max_dots, take_at):
        got, got_size, got_rest = asyncio.run(_read(_split(sent, cuts), limit))
    assert (got_size, got_rest) == (size, rest)
    assert got == (None if limit is not None and size > limit else message)


@pytest.mark.parametrize(("max_dots", "take_at"), _SETTINGS)
async def test_a_byte_at_a_time(max_dots: int, take_at: int) -> None:
    """A client dribbling the message a byte per read, the terminator included."""
    content = b".a\r\n..\r\nb.\r\n.\r\r\n.c\r\n"
    wire = _stuff(content)
    with _settings(max_dots, take_at):
        got, size, rest = await _read([wire[i : i + 1] for i in range(len(wire))])
    assert (got, size, rest) == (content, len(wire) - 3, b"QUIT\r\n")


@pytest.mark.parametrize("cut", range(1, 12))
async def test_the_terminator_split_anywhere(cut: int) -> None:
    wire = b"x\r\n..y\r\n.\r\nMAIL FROM:<a@b>\r\n"
    got, size, rest = await _read([wire[:cut], wire[cut:]])
    assert (got, size) == (b"x\r\n.y\r\n", 8)
    assert rest == b"MAIL FROM:<a@b>\r\nQUIT\r\n"


async def test_many_stuffed_lines_go_the_slow_way() -> None:
    content = b"".join(b".%d\r\n" % i for i in range(5000))
    got, size, rest = await _read([_stuff(content)])
    assert (got, rest) == (content, b"QUIT\r\n") and size == len(_stuff(content)) - 3


async def test_a_bare_lf_after_stuffed_lines_goes_the_slow_way() -> None:
    wire = b"..a\r\n..b\r\nc\nd\r\n\n.\n..e\r\n.\r\n"
    got, size, rest = await _read([wire[:12], wire[12:]])
    assert got == b".a\r\n.b\r\nc\r\nd\r\n\r\n.e\r\n" and rest == b"QUIT\r\n"
    assert size == len(wire) - 3


@pytest.mark.parametrize("line_end", [b"", b"\r\n", b"\n"])
async def test_the_reader_holds_no_more_than_it_did(line_end: bytes) -> None:
    """A 3 MB message (one line, or many) fed in 64 KB pieces: the reader's buffer
    never holds more than ``_TAKE_AT`` and a piece; an oversize one is dropped."""
    reader = asyncio.StreamReader(limit=1 << 16)
    line = b"z" * 998 + line_end
    body = line * (3_000_000 // len(line))
    wire = body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n"
    most = 0
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]

    async def feed() -> None:
        nonlocal most
        for start in range(0, len(wire), 1 << 16):
            while len(buffer) > 1 << 17:  # as the paused transport would
                await asyncio.sleep(0)
            reader.feed_data(wire[start : start + (1 << 16)])
            most = max(most, len(buffer))
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    got, size = await asyncio.wait_for(read_data(reader, 1_000_000), 30)
    await feeder
    assert got is None and size == len(wire) - 3
    assert most <= data_module._TAKE_AT + (1 << 16)


async def test_a_disconnect_after_part_was_taken_raises() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"..a\r\n" * 100)
    reader.feed_eof()
    with _settings(64, 4), pytest.raises(asyncio.IncompleteReadError):
        await read_data(reader, None)


async def test_an_error_on_the_stream_is_raised() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"a\r\n")
    reader.set_exception(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        await read_data(reader, None)


@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\r\n.", b"\r\n..", b"x" * 50]),
                max_size=60), _CUTS)
def test_crlf_messages_with_few_stuffed_lines_take_one_pass(parts: list[bytes],
                                                            cuts: list[int]) -> None:
    """All CRLF and under ``MAX_DOTS`` stuffed lines, however split and taken out of
    the buffer (a CRLF split between two takes included): never the slow way."""
    content = b"".join(parts) + b"\r\n"
    wire = _stuff(content)
    slow = mock.AsyncMock(side_effect=AssertionError("went the slow way"))
    with _settings(64, 4), mock.patch.object(data_module, "_slow", slow):
        got, _, rest = asyncio.run(_read(_split(wire, cuts)))
    assert (got, rest) == (content, b"QUIT\r\n")


async def test_more_than_max_dots_go_the_slow_way() -> None:
    content = b".a\r\n" * 65
    real = data_module._slow
    slow = mock.AsyncMock(side_effect=real)
    with mock.patch.object(data_module, "_slow", slow):
        got, _, _ = await _read([_stuff(content)])
    assert got == content and slow.await_count == 1


async def test_past_the_limit_a_stuffed_line_goes_the_slow_way() -> None:
    """Past the limit nothing is kept: the rest is read the old way (the Python
    steps stay bounded by MAX_DOTS however many stuffed lines follow)."""
    content = b"x" * 198 + b"\r\n" + b"..\r\n" * 1000
    slow = mock.AsyncMock(side_effect=data_module._slow)
    with _settings(10_000, 4), mock.patch.object(data_module, "_slow", slow):
        got, size, rest = await _read([_stuff(content)[:150], _stuff(content)[150:]], limit=60)
    assert (got, size, rest) == (None, len(_stuff(content)) - 3, b"QUIT\r\n")
    assert slow.await_count == 1


def _over_a_socket(wire: bytes, loop: str, reader_limit: int) -> tuple[bytes | None, int, bytes]:
    """``wire`` sent through a real TCP connection in one write (so the transport's flow
    control pauses and resumes reading around the reader's buffer), read as the relay's
    protocol reads DATA, on asyncio's loop or uvloop: (message, size, what followed)."""
    from beacon_proxy.eventloop import loop_factory

    if loop == "uvloop":
        pytest.importorskip("uvloop")
    factory, _ = loop_factory(loop)

    async def run() -> tuple[bytes | None, int, bytes]:
        got: asyncio.Future[tuple[bytes | None, int, bytes]] = (
            asyncio.get_running_loop().create_future())

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                content, size = await read_data(reader, None)
                got.set_result((content, size, await reader.read()))
            except Exception as exc:  # pragma: no cover - told to the test
                got.set_exception(exc)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=reader_limit)
        try:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(wire)
            writer.write_eof()
            try:
                return await asyncio.wait_for(got, 30)
            finally:
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run())


@pytest.mark.parametrize("reader_limit", [1 << 16, 1001])  # the protocol's; pauses often
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_message_over_a_socket_on_either_loop(loop: str, reader_limit: int) -> None:
    """A 1.5 MB message (taken out of the reader's buffer many times) with stuffed lines
    spread through it, then the same with a bare LF near its end (the slow way after
    many takes), each with the next commands in the same write: Postfix's reading."""
    line = b"q" * 76 + b"\r\n"
    body = b"".join(line if i % 700 else b"..stuffed\r\n" for i in range(20_000))
    for content in (body, body[:-300_000] + b"bare\n" + body[-300_000:]):
        wire = content + b".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
        assert _over_a_socket(wire, loop, reader_limit) == _postfix(wire)
