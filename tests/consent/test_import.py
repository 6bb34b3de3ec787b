"""CSV import and export through the store, on both backends: all rows or none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beacon_proxy.consent.address import parse_address
from beacon_proxy.consent.csvio import CsvError, export_csv, import_file
from beacon_proxy.consent.model import Beacons, ConsentInput, Imported
from beacon_proxy.consent.policy import Decision
from beacon_proxy.consent.store import Store


def _consent_csv(path: Path, rows: int, bad_line: int | None = None) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("address,beacons,source\r\n")
        for i in range(rows):
            line = i + 2
            address = "not-an-address" if line == bad_line else f"user{i}@example.org"
            fh.write(f"{address},{'granted' if i % 2 else 'refused'},bulk\r\n")
    return path


async def test_import_applies_every_row_with_audit(store: Store, tmp_path: Path) -> None:
    path = _consent_csv(tmp_path / "c.csv", 12_000)  # more than two batches
    assert await import_file(store, path, "consent", actor="cli:test",
                             source="default") == Imported(12_000, 12_000)
    got = await store.decisions(["user0@example.org", "user1@example.org"], None)
    assert got == {"user0@example.org": Decision.REFUSED, "user1@example.org": Decision.GRANTED}
    rec = await store.get_consent("user11999@example.org")
    assert rec is not None and rec.source == "bulk" and rec.actor == "cli:test"
    history = (await store.history("user1@example.org")).items
    assert [(e.action, e.old, e.new, e.source) for e in history] == [
        ("consent.set", None, "granted", "bulk")]


async def test_a_bad_row_in_the_middle_applies_nothing(store: Store, tmp_path: Path) -> None:
    await store.set_consent("user3@example.org", "granted")
    path = _consent_csv(tmp_path / "bad.csv", 12_000, bad_line=9_001)
    with pytest.raises(CsvError) as info:
        await import_file(store, path, "consent")
    assert info.value.line == 9_001
    assert "bad address 'not-an-address'" in str(info.value)
    page = await store.list_consent(limit=10)
    assert [c.address for c in page.items] == ["user3@example.org"]  # batches 1 and 2 undone
    assert len((await store.history()).items) == 1


async def test_dry_run_validates_without_touching_the_store(store: Store, tmp_path: Path) -> None:
    path = _consent_csv(tmp_path / "c.csv", 100)
    assert (await import_file(store, path, "consent", dry_run=True)).rows == 100
    assert (await store.list_consent()).items == []
    with pytest.raises(CsvError, match="line 51"):
        await import_file(None, _consent_csv(tmp_path / "b.csv", 100, bad_line=51), "consent")


async def test_later_rows_win_and_the_audit_says_what_changed(store: Store,
                                                              tmp_path: Path) -> None:
    await store.set_consent("a@example.org", "refused")
    path = tmp_path / "c.csv"
    path.write_text("address,beacons,source\na@example.org,granted,x\nA@EXAMPLE.org,unknown,y\n")
    assert (await import_file(store, path, "consent")).rows == 2
    rec = await store.get_consent("a@example.org")
    assert rec is not None and (rec.address, rec.beacons, rec.source) == (
        "A@example.org", "unknown", "y")
    last = (await store.history("a@example.org")).items[-1]
    assert (last.old, last.new) == ("refused", "unknown")


async def test_suppression_import_and_export_round_trip(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("address,list,reason\na@example.org,,complaint\n"
                    "b@example.org,News <news.example.org>,clicked\n", encoding="utf-8")
    assert (await import_file(store, path, "suppressions", actor="t", source="csv:s.csv")).rows == 2
    got = await store.decisions(["a@example.org", "b@example.org"], "news.example.org")
    assert got == {"a@example.org": Decision.SUPPRESSED,
                   "b@example.org": Decision.SUPPRESSED_LIST}
    await store.suppress("gone@example.org")
    await store.forget("gone@example.org")  # a hash only: not exported
    chunks: list[str] = []

    async def write(text: str) -> None:
        chunks.append(text)

    assert await export_csv("suppressions", store.iter_suppressions(), write, chunk=1) == 2
    text = "".join(chunks)
    lines = text.splitlines()
    assert lines[0] == "address,list,reason,source,actor,created_at"
    assert lines[1].startswith("a@example.org,,complaint,csv:s.csv,t,")
    assert lines[2].startswith("b@example.org,news.example.org,clicked,")
    again = tmp_path / "again.csv"
    again.write_text(text, encoding="utf-8")
    assert (await import_file(store, again, "suppressions")).rows == 2


async def test_consent_export_round_trips(store: Store, tmp_path: Path) -> None:
    await import_file(store, _consent_csv(tmp_path / "c.csv", 2500), "consent")
    chunks: list[str] = []

    async def write(text: str) -> None:
        chunks.append(text)

    assert await export_csv("consent", store.iter_consent(), write) == 2500
    out = tmp_path / "out.csv"
    out.write_text("".join(chunks), encoding="utf-8")
    assert (await import_file(store, out, "consent", dry_run=True)).rows == 2500


async def test_lookups_do_not_wait_for_an_import(store: Store) -> None:
    """While an import's transaction is open, lookups answer from committed data."""
    started, release = asyncio.Event(), asyncio.Event()

    async def batches() -> AsyncIterator[list[ConsentInput]]:
        yield [ConsentInput(parse_address("slow@example.org"), Beacons.GRANTED, None)]
        started.set()
        await release.wait()

    task = asyncio.create_task(store.import_consent(batches()))
    await asyncio.wait_for(started.wait(), 5)
    got = await asyncio.wait_for(store.decisions(["slow@example.org"], None), 5)
    assert got["slow@example.org"] == Decision.REFUSED  # not committed yet
    release.set()
    assert await task == Imported(1, 1)
    got = await store.decisions(["slow@example.org"], None)
    assert got["slow@example.org"] == Decision.GRANTED


async def test_reimporting_unchanged_rows_writes_and_audits_nothing(store: Store,
                                                                     tmp_path: Path) -> None:
    consent = tmp_path / "c.csv"
    consent.write_text("address,beacons,source\na@example.org,granted,crm\n"
                       "b@example.org,refused,\n")
    assert await import_file(store, consent, "consent", source="csv:c.csv") == Imported(2, 2)
    sups = tmp_path / "s.csv"
    sups.write_text("address,list,reason\na@example.org,,complaint\n"
                    "b@example.org,news.example.org,clicked\n")
    assert await import_file(store, sups, "suppressions", source="csv:s.csv") == Imported(2, 2)
    audit = len((await store.history()).items)
    before = await store.get_consent("a@example.org")
    assert await import_file(store, consent, "consent", source="csv:c.csv") == Imported(2, 0)
    assert await import_file(store, sups, "suppressions", source="csv:s.csv") == Imported(2, 0)
    assert len((await store.history()).items) == audit
    assert await store.get_consent("a@example.org") == before  # not even updated_at
    consent.write_text("address,beacons,source\na@example.org,granted,crm\n"
                       "b@example.org,granted,\n")
    assert await import_file(store, consent, "consent", source="csv:c.csv") == Imported(2, 1)
    [last] = (await store.history()).items[audit:]
    assert (last.address, last.old, last.new) == ("b@example.org", "refused", "granted")
