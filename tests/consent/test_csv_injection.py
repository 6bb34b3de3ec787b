"""Spreadsheet formula injection: exports neutralise, imports restore, on both backends.

Every free-text column (source, reason, actor), the list id and the address
can start with a character a spreadsheet runs as a formula; the export
prefixes ``'`` and an import of that export gets the very values back.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from beacon_proxy.consent.csvio import (
    HEADERS,
    CsvError,
    Kind,
    consent_reader,
    export_csv,
    import_file,
    neutralise,
    restore,
)
from beacon_proxy.consent.model import InvalidValue
from beacon_proxy.consent.store import Store, open_store
from tests.consent.pg import fresh_schema

FORMULA = ("=", "+", "-", "@", "\t", "\r")

#: Valid addresses (RFC 5321 atext) a spreadsheet would read as a formula.
ADDRESSES = ("=1+2@x.test", "-a@x.test", "+b@x.test", "'=c@x.test", "''-d@x.test",
             "'e@x.test", "f@x.test")
#: Free text: source, reason, actor.
TEXTS = ("=1+2", "+SUM(A1)", "-3", "@cmd", "'=quoted", "''+twice", "'", "'plain", "=HYPERLINK("
         '"http://evil.test","x")', "plain")
#: List ids (dot-atoms) that start like formulas.
LISTS = ("=cmd.x.test", "-l.x.test", "+p.x.test", "'=r.x.test", "news.x.test")


@pytest.mark.parametrize(
    ("value", "exported"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),  # a real quote before a formula: one more, taken off on import
        ("''@x", "'''@x"),
        ("'x", "'x"),  # a quote before anything else is left alone
        ("'", "'"),
        ("''", "''"),
        ("a=b", "a=b"),
        ("", ""),
        (" =x", " =x"),
    ],
)
def test_neutralise_and_restore(value: str, exported: str) -> None:
    assert neutralise(value) == exported
    assert restore(exported) == value


def test_restore_of_a_hand_written_file() -> None:
    data = "address,beacons,source\r\n'=a@x.test,granted,'=crm\r\n'b@x.test,granted,'x\r\n"
    rows = consent_reader(io.BytesIO(data.encode())).read_batch()
    assert [(r.address.text, r.source) for r in rows] == [("=a@x.test", "=crm"),
                                                         ("'b@x.test", "'x")]


async def _second_store(backend: tuple[str, str], tmp_path: Path) -> Store:
    kind, where = backend
    url = (await fresh_schema(where) if kind == "postgresql"
           else f"sqlite:///{tmp_path / 'second' / 'consent.db'}")
    store = open_store(url)
    await store.open()
    return store


async def _export(store: Store, kind: Kind) -> str:
    parts: list[str] = []

    async def write(text: str) -> None:
        parts.append(text)

    items = store.iter_consent() if kind == "consent" else store.iter_suppressions()
    await export_csv(kind, items, write)
    return "".join(parts)


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _no_formula_cell(text: str) -> None:
    for row in _cells(text):
        for cell in row:
            assert cell[:1] not in FORMULA, (cell, row)


async def _fill(store: Store) -> None:
    for i, address in enumerate(ADDRESSES):
        text = TEXTS[i % len(TEXTS)]
        await store.set_consent(address, "granted" if i % 2 else "refused", source=text,
                                actor=TEXTS[(i + 1) % len(TEXTS)])
        await store.suppress(address, LISTS[i % len(LISTS)], reason=TEXTS[(i + 2) % len(TEXTS)],
                             source="=src", actor=text)
    await store.suppress(ADDRESSES[0], None, reason="-global", source="=src", actor="@actor")


@pytest.mark.parametrize("kind", ["consent", "suppressions"])
async def test_export_import_export_round_trip(store: Store, backend: tuple[str, str],
                                               tmp_path: Path, kind: Kind) -> None:
    await _fill(store)
    first = await _export(store, kind)
    _no_formula_cell(first)
    assert len(_cells(first)) > len(ADDRESSES)
    path = tmp_path / f"{kind}.csv"
    path.write_text(first, encoding="utf-8", newline="")
    again = await _second_store(backend, tmp_path)
    try:
        await import_file(again, path, kind, actor="importer", source="=src")
        second = await _export(again, kind)
    finally:
        await again.close()
    _no_formula_cell(second)
    width = len(HEADERS[kind])  # the columns an import reads; the rest is who and when
    assert [row[:width] for row in _cells(second)] == [row[:width] for row in _cells(first)]
    # and the store holds the values themselves, not their exported spelling
    if kind == "consent":
        got = {c.address: c.source async for c in store.iter_consent()}
        assert got["=1+2@x.test"] == TEXTS[0] and got["'=c@x.test"] == TEXTS[3]


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"address,beacons,source\r\na@x.test,granted,\r\nb@x.test,granted,a\x00b\r\n", 3,
         "source: must not contain control characters"),
        (b"address,beacons,source\r\na\x00@x.test,granted,\r\n", 2, "bad address"),
        (b"address,beacons,source\r\na@x.test,gran\x00ted,\r\n", 2, "beacons: must be"),
        (b"address,beacons,source\r\na@x.test,granted,\xed\xa0\x80\r\n", 2, "not UTF-8"),
        (b"address,beacons,source\r\na<b>@x.test,granted,\r\n", 2,
         "bad address 'a<b>@x.test': the local part has '<' outside quotes"),
        (b"address,beacons,source\r\na@b@x.test,granted,\r\n", 2, "more than one @"),
    ],
)
async def test_a_nul_or_broken_text_names_its_line(store: Store, tmp_path: Path, data: bytes,
                                                   line: int, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(CsvError) as info:
        await import_file(store, path, "consent", actor="t")
    assert info.value.line == line and reason in info.value.reason
    assert [c async for c in store.iter_consent()] == []


@pytest.mark.parametrize(("source", "reason"), [("a\x00b", "control characters"),
                                                ("crm\udcff", r"lone surrogate U\+DCFF")])
async def test_the_import_source_is_checked(store: Store, tmp_path: Path, source: str,
                                            reason: str) -> None:
    path = tmp_path / "ok.csv"
    path.write_bytes(b"address,beacons,source\r\na@x.test,granted,\r\n")
    with pytest.raises(InvalidValue, match=reason):
        await import_file(store, path, "consent", actor="t", source=source)
    assert [c async for c in store.iter_consent()] == []


async def test_lone_surrogates_in_free_text_are_invalid_values(store: Store) -> None:
    with pytest.raises(InvalidValue, match=r"source: .*lone surrogate U\+D800"):
        await store.set_consent("a@x.test", "granted", source="x\ud800")
    with pytest.raises(InvalidValue, match=r"reason: .*lone surrogate U\+DC00"):
        await store.suppress("a@x.test", reason="\udc00")
