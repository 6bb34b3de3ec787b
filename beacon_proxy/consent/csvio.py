"""CSV import and export of consent records and suppressions.

Formats (UTF-8, a byte-order mark is allowed; comma-separated, RFC 4180
quoting; a header row is required, columns in any order)::

    address,beacons,source                 consent: beacons = granted|refused|unknown
    address,list,reason                    suppressions: empty list = every list

Exports write these columns first and then informational ones (consent:
``actor,updated_at``; suppressions: ``source,actor,created_at``), which an
import accepts and ignores, so an export imports again as it is.

Cells a spreadsheet would run as a formula are exported with a leading
``'`` (the OWASP advice for CSV injection): a cell starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return -- ``=1+2@x.test`` is a
valid address, ``source`` and ``reason`` are free text.  Any run of ``'``
before such a character is prefixed too (``'=x`` is exported as ``''=x``),
so an import can always take exactly one ``'`` back off a cell that is a run
of ``'`` and then one of those characters: an export imports as the very
values that were exported.  A hand-written file follows the same rule (a
``source`` of ``'=x`` imports as ``=x``; write ``''=x`` to keep the quote).

Imports stream: :class:`CsvReader` reads a binary file a batch at a time (in
a thread, see :func:`read_batches`), so memory does not grow with the file.
The first bad row raises :class:`CsvError` naming its line; the store applies
an import in one transaction, so nothing is applied.  A physical line is read
only up to :data:`MAX_LINE` bytes (a longer one is a bad row).  Blank lines are
skipped.  Within a file a later row for the same address (and list) wins.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, Literal, TypeVar

from beacon_proxy.consent.address import AddressError, ListIdError, normalize_list_id, parse_address
from beacon_proxy.consent.model import (
    Beacons,
    Consent,
    ConsentInput,
    Imported,
    InvalidValue,
    Suppression,
    SuppressionInput,
    check_text,
    iso,
)
from beacon_proxy.threadio import open_binary

if TYPE_CHECKING:
    from beacon_proxy.consent.store import Store

__all__ = [
    "BATCH",
    "HEADERS",
    "MAX_LINE",
    "CsvError",
    "CsvReader",
    "Kind",
    "consent_reader",
    "export_csv",
    "import_file",
    "neutralise",
    "prepend",
    "read_batches",
    "restore",
    "suppression_reader",
]

Kind = Literal["consent", "suppressions"]
T = TypeVar("T", ConsentInput, SuppressionInput)
BATCH = 5000
# Bytes of one physical line (its line end included): a valid row is a few hundred bytes,
# and a hostile file of one endless line must not be read into memory whole.
MAX_LINE = 1 << 16
HEADERS: dict[str, tuple[str, ...]] = {
    "consent": ("address", "beacons", "source"),
    "suppressions": ("address", "list", "reason"),
}
_EXTRA: dict[str, tuple[str, ...]] = {
    "consent": ("actor", "updated_at"),
    "suppressions": ("source", "actor", "created_at"),
}


_FORMULA = frozenset("=+-@\t\r")


def _formula_like(cell: str) -> bool:
    """A formula character, after any number of ``'``."""
    return cell.lstrip("'")[:1] in _FORMULA


def neutralise(cell: str) -> str:
    """The cell as exported: prefixed with ``'`` when a spreadsheet could run it."""
    return "'" + cell if _formula_like(cell) else cell


def restore(cell: str) -> str:
    """The value of an exported cell: :func:`neutralise` undone."""
    return cell[1:] if cell[:1] == "'" and _formula_like(cell[1:]) else cell


class CsvError(ValueError):
    """A CSV file cannot be imported; ``line`` is the physical line (1 = header)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class CsvReader(Generic[T]):
    """Validated rows of one CSV file, read synchronously (run it in a thread)."""

    def __init__(self, stream: BinaryIO, kind: Kind) -> None:
        self.kind = kind
        self.rows = 0  # data rows read so far
        self._stream = stream
        self._physical = 0
        self._reader = csv.reader(self._lines(), strict=True)
        self._columns = self._header()

    def _lines(self) -> Iterator[str]:
        while raw := self._stream.readline(MAX_LINE + 1):
            self._physical += 1
            if len(raw) > MAX_LINE:
                raise CsvError(self._physical, f"a line longer than {MAX_LINE} bytes")
            if self._physical == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CsvError(self._physical, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                               f"column {exc.start + 1}); save the file as UTF-8"
                               ) from None

    def _next(self) -> tuple[int, list[str]] | None:
        start = self._physical + 1
        try:
            fields = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise CsvError(start, f"malformed CSV: {exc}") from None
        return start, fields

    def _header(self) -> dict[str, int]:
        expected = ",".join(HEADERS[self.kind])
        first = self._next()
        if first is None:
            raise CsvError(1, f"the file is empty: expected the header row {expected}")
        line, fields = first
        names = [f.strip().lower() for f in fields]
        allowed = set(HEADERS[self.kind]) | set(_EXTRA[self.kind])
        if (set(HEADERS[self.kind]) - set(names) or set(names) - allowed
                or len(set(names)) != len(names)):
            raise CsvError(line, f"wrong header: expected {expected}, got {','.join(fields)!r}")
        return {name: i for i, name in enumerate(names)}

    def read_batch(self, size: int = BATCH) -> list[T]:
        """Up to ``size`` validated rows; an empty list at the end of the file."""
        out: list[T] = []
        while len(out) < size:
            item = self._next()
            if item is None:
                break
            line, fields = item
            if not fields or fields == [""]:
                continue
            if len(fields) != len(self._columns):
                raise CsvError(line, f"expected {len(self._columns)} fields, got {len(fields)}")
            try:
                out.append(self._row({n: restore(fields[i]) for n, i in self._columns.items()}))
            except AddressError as exc:
                raise CsvError(line, f"bad address {fields[self._columns['address']]!r}: "
                                     f"{exc}") from None
            except (ListIdError, InvalidValue) as exc:
                raise CsvError(line, str(exc)) from None
            self.rows += 1
        return out

    def _row(self, cells: dict[str, str]) -> T:
        raise NotImplementedError


class _ConsentReader(CsvReader[ConsentInput]):
    def _row(self, cells: dict[str, str]) -> ConsentInput:
        address = parse_address(cells["address"])
        state = cells["beacons"].strip().lower()
        if state not in set(Beacons):
            raise InvalidValue("beacons", f"must be granted, refused or unknown, got "
                                          f"{cells['beacons']!r}")
        return ConsentInput(address, Beacons(state), check_text("source", cells["source"]))


class _SuppressionReader(CsvReader[SuppressionInput]):
    def _row(self, cells: dict[str, str]) -> SuppressionInput:
        address = parse_address(cells["address"])
        raw_list = cells["list"].strip()
        try:
            list_id = normalize_list_id(raw_list) if raw_list else None
        except ListIdError as exc:
            raise InvalidValue("list", str(exc)) from None
        return SuppressionInput(address, list_id, check_text("reason", cells["reason"], 500))


def consent_reader(stream: BinaryIO) -> CsvReader[ConsentInput]:
    return _ConsentReader(stream, "consent")


def suppression_reader(stream: BinaryIO) -> CsvReader[SuppressionInput]:
    return _SuppressionReader(stream, "suppressions")


async def read_batches(reader: CsvReader[T], *, size: int = BATCH,
                       progress: Callable[[int], None] | None = None
                       ) -> AsyncIterator[list[T]]:
    """The reader's batches, each read in a thread (no file I/O on the event loop)."""
    while True:
        batch = await asyncio.to_thread(reader.read_batch, size)
        if not batch:
            return
        yield batch
        if progress is not None:
            progress(reader.rows)


def _consent_cells(c: Consent) -> list[str]:
    return [neutralise(cell) for cell in (
        c.address, c.beacons.value, c.source or "", c.actor or "", iso(c.updated_at))]


def _suppression_cells(s: Suppression) -> list[str]:
    return [neutralise(cell) for cell in (
        s.address or "", s.list_id or "", s.reason or "", s.source or "", s.actor or "",
        iso(s.created_at))]


async def export_csv(kind: Kind, items: AsyncIterator[Consent] | AsyncIterator[Suppression],
                     write: Callable[[str], Awaitable[None]], *, chunk: int = 1000) -> int:
    """Write a header and every item as CSV text through ``write``, ``chunk`` rows at a time.

    Suppressions kept only as a hash after erasure have no address and are
    not exported.  Returns the number of rows written.
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(HEADERS[kind] + _EXTRA[kind])
    rows = pending = 0
    async for item in items:
        if isinstance(item, Consent):
            out.writerow(_consent_cells(item))
        elif item.address is not None:
            out.writerow(_suppression_cells(item))
        else:
            continue
        rows += 1
        pending += 1
        if pending >= chunk:
            await write(buf.getvalue())
            buf.seek(0)
            buf.truncate()
            pending = 0
    await write(buf.getvalue())
    return rows


async def import_file(store: Store | None, path: Path, kind: Kind, *, dry_run: bool = False,
                      actor: str | None = None, source: str | None = None,
                      progress: Callable[[int], None] | None = None) -> Imported:
    """Validate (``dry_run`` or no store) or import a CSV file: the rows read and how
    many changed something (0 when only validated).

    Raises :class:`CsvError` for the first bad row (nothing is applied),
    :class:`InvalidValue` for a bad ``source`` and ``OSError`` when the file
    cannot be read.
    """
    source = check_text("source", source)
    fh = await open_binary(path)
    try:
        if kind == "consent":
            creader = await asyncio.to_thread(consent_reader, fh)
            cbatches = read_batches(creader, progress=progress)
            if store is not None and not dry_run:
                return await store.import_consent(cbatches, actor=actor, source=source)
            return await _count(cbatches)
        sreader = await asyncio.to_thread(suppression_reader, fh)
        sbatches = read_batches(sreader, progress=progress)
        if store is not None and not dry_run:
            return await store.import_suppressions(sbatches, actor=actor, source=source)
        return await _count(sbatches)
    finally:
        await asyncio.to_thread(fh.close)


async def _count(batches: AsyncIterator[list[T]]) -> Imported:
    n = 0
    async for batch in batches:
        n += len(batch)
    return Imported(n, 0)


async def prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first`` and then ``rest``; nothing when ``first`` is None (an export reads its
    first row before it answers, so a store failure can still be a clean error)."""
    if first is None:
        return
    yield first
    async for item in rest:
        yield item
