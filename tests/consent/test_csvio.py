"""CSV reading: header, encoding, bad rows with their line, streaming in bounded batches."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator

import pytest

from beacon_proxy.consent.csvio import (
    MAX_LINE,
    CsvError,
    consent_reader,
    read_batches,
    suppression_reader,
)
from beacon_proxy.consent.model import Beacons


def _rows(data: bytes) -> list[tuple[str, str, str | None]]:
    reader = consent_reader(io.BytesIO(data))
    out = []
    while batch := reader.read_batch(2):
        out += [(r.address.text, r.beacons.value, r.source) for r in batch]
    return out


def _read_all(data: bytes, kind: str) -> None:
    reader = (consent_reader if kind == "consent" else suppression_reader)(io.BytesIO(data))
    while reader.read_batch(10):
        pass


def _error(data: bytes, kind: str = "consent") -> CsvError:
    with pytest.raises(CsvError) as info:
        _read_all(data, kind)
    return info.value


def test_reads_rows_with_any_column_order_bom_quoting_and_blank_lines() -> None:
    data = ("\ufeffSource,Address,BEACONS\r\n"
            'form,Ann@Example.org,Granted\r\n'
            "\r\n"
            '"crm, import",bob@example.org, refused \r\n'
            ',"c@example.org",unknown\r\n').encode()
    assert _rows(data) == [("Ann@example.org", "granted", "form"),
                           ("bob@example.org", "refused", "crm, import"),
                           ("c@example.org", "unknown", None)]


def test_an_export_imports_again() -> None:
    data = (b"address,beacons,source,actor,updated_at\r\n"
            b"a@x.org,granted,form,cli:root,2026-11-28T10:00:00.000000Z\r\n")
    assert _rows(data) == [("a@x.org", "granted", "form")]


def test_suppression_rows() -> None:
    reader = suppression_reader(io.BytesIO(
        b"address,list,reason\na@x.org,,complaint\nb@x.org,News <News.X.org>,\n"))
    rows = reader.read_batch()
    assert [(r.address.text, r.list_id, r.reason) for r in rows] == [
        ("a@x.org", None, "complaint"), ("b@x.org", "news.x.org", None)]


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", 1, "the file is empty: expected the header row address,beacons,source"),
        (b"\n", 1, "wrong header"),
        (b"email,state\na@x.org,granted\n", 1, "wrong header: expected address,beacons,source"),
        (b"address,beacons\n", 1, "wrong header"),
        (b"address,beacons,source,colour\n", 1, "wrong header"),
        (b"address,address,beacons,source\n", 1, "wrong header"),
        (b"address,beacons,source\na@x.org,granted\n", 2, "expected 3 fields, got 2"),
        (b"address,beacons,source\na@x.org,yes,x\n", 2, "beacons: must be granted, refused or "
                                                       "unknown, got 'yes'"),
        (b"address,beacons,source\nann,granted,x\n", 2, "bad address 'ann': the address has "
                                                        "no @domain"),
        (b"address,beacons,source\na@x.org,granted,\"a\nb\"\n", 2, "source: must not contain"),
        (b"address,beacons,source\n\"a@x.org,granted,x\n", 2, "malformed CSV"),
        (b"address,beacons,source\na@x.org,granted,\xe9t\xe9\n", 2, "not UTF-8 text (byte 0xe9 "
                                                                    "at column 17)"),
        (b"addr\xe8ss,beacons,source\n", 1, "not UTF-8"),
    ],
)
def test_errors_name_the_line_and_the_reason(data: bytes, line: int, reason: str) -> None:
    err = _error(data)
    assert err.line == line
    assert reason in err.reason
    assert str(err).startswith(f"line {line}: ")


def test_suppression_errors() -> None:
    assert "wrong header: expected address,list,reason" in str(
        _error(b"address,beacons,source\n", "suppressions"))
    err = _error(b"address,list,reason\na@x.org,two words,\n", "suppressions")
    assert err.line == 2 and "list" in err.reason


def test_the_line_of_a_row_after_a_multiline_field() -> None:
    data = b'address,beacons,source\na@x.org,granted,"x"\r\nb@x.org,granted,"y"\r\nc,granted,z\r\n'
    assert _error(data).line == 4


class _Generated(io.RawIOBase):
    """A CSV file of ``rows`` rows, produced on the fly (never held in memory)."""

    def __init__(self, rows: int) -> None:
        self._lines: Iterator[bytes] = self._make(rows)
        self._buf = b""

    @staticmethod
    def _make(rows: int) -> Iterator[bytes]:
        yield b"address,beacons,source\n"
        for i in range(rows):
            yield f"user{i:07d}@example.org,{'granted' if i % 3 else 'refused'},gen\n".encode()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while len(self._buf) < len(b):
            try:
                self._buf += next(self._lines)
            except StopIteration:
                break
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


async def test_reading_streams_in_bounded_batches() -> None:
    """50 000 rows pass through with memory for one batch, not for the file."""
    reader = consent_reader(io.BufferedReader(_Generated(50_000)))
    sizes: list[int] = []
    tracemalloc.start()
    try:
        async for batch in read_batches(reader, size=5000):
            sizes.append(len(batch))
            assert batch[0].beacons in (Beacons.GRANTED, Beacons.REFUSED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == 50_000 and max(sizes) == 5000
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"  # all the rows would take ~20 MB


class _OneLongLine(io.RawIOBase):
    """A header and then ``size`` bytes without a line end, made on the fly."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._head = b"address,beacons,source\n"

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n], self._head = self._head[:n], self._head[n:]
            return n
        n = min(len(b), self._left)
        b[:n] = b"a" * n
        self._left -= n
        return n


def test_a_huge_line_is_refused_without_reading_it_into_memory() -> None:
    """A hostile file of one 64 MiB line: refused at its line, memory stays small."""
    tracemalloc.start()
    try:
        with pytest.raises(CsvError) as info:
            _read_stream(io.BufferedReader(_OneLongLine(64 << 20)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.line == 2 and f"longer than {MAX_LINE} bytes" in info.value.reason
    assert peak < 4 * MAX_LINE + (1 << 20), f"peak {peak} bytes"


def _read_stream(stream: io.BufferedReader) -> None:
    reader = consent_reader(stream)
    while reader.read_batch(10):
        pass
