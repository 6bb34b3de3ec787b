"""The spool of several worker processes: parts, and adoption when the count changes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

import pytest

from beacon_proxy.spool import parts
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.parts import (
    adopt,
    all_roots,
    leave_request,
    lock_within,
    owner_of,
    part_root,
    sources_for,
)
from beacon_proxy.spool.queue import Spool, SpoolInUse

DATA = b"Subject: hi\r\n\r\nbody\r\n"


def _put(root: Path, *, delivered_first: bool = False) -> str:
    spool = Spool(root)
    spool.open()
    env = Envelope(new_queue_id(), "s@example.org", ("a@example.net", "b@example.net"),
                   size=len(DATA))

    async def go() -> None:
        await spool.put(env, DATA)
        if delivered_first:
            await spool.record(env.queue_id, 0, "delivered", "250 ok")

    try:
        asyncio.run(go())
    finally:
        spool.close()
    return env.queue_id


def _recover(root: Path) -> dict[str, list[str]]:
    spool = Spool(root)
    spool.open()
    try:
        entries = asyncio.run(spool.recover())
    finally:
        spool.close()
    return {e.queue_id: [r.state for r in e.recipients] for e in entries}


def test_sources_for_each_worker(tmp_path: Path) -> None:
    for j in range(5):
        part_root(tmp_path, j).mkdir(parents=True)
    assert sources_for(tmp_path, 0, 2) == [tmp_path, part_root(tmp_path, 2),
                                           part_root(tmp_path, 4)]
    assert sources_for(tmp_path, 1, 2) == [part_root(tmp_path, 3)]
    assert sources_for(tmp_path, 1, 5) == []
    assert sources_for(tmp_path, None, 1) == [part_root(tmp_path, j) for j in range(5)]
    assert all_roots(tmp_path) == [tmp_path, *(part_root(tmp_path, j) for j in range(5))]


def test_adopt_moves_messages_with_their_journals(tmp_path: Path) -> None:
    old = part_root(tmp_path, 3)
    qid = _put(old, delivered_first=True)
    (old / "tmp" / "half-written").write_bytes(b"never acknowledged")
    Spool(old).request_sync("retry", qid)
    into = part_root(tmp_path, 1)
    into.mkdir(parents=True)
    assert adopt(into, old) == 1
    assert _recover(into) == {qid: ["delivered", "pending"]}  # the journal came along
    assert _recover(old) == {}
    assert os.listdir(old / "tmp") == [] and os.listdir(old / "journal") == []
    assert os.listdir(into / "control") == [f"retry.{qid}"]
    assert adopt(into, old) == 0  # nothing left


def test_a_crash_after_the_journal_link_loses_nothing(tmp_path: Path) -> None:
    """Adoption died between linking the journal and renaming the queue file: the
    message is still in its old part, whole; the next adoption finishes the move."""
    old, into = part_root(tmp_path, 2), part_root(tmp_path, 0)
    qid = _put(old, delivered_first=True)
    (into / "journal").mkdir(parents=True)
    os.link(old / "journal" / f"{qid}.log", into / "journal" / f"{qid}.log")
    assert adopt(into, old) == 1
    assert _recover(into) == {qid: ["delivered", "pending"]}


def test_single_process_adopts_every_part_and_workers_adopt_the_root(tmp_path: Path) -> None:
    legacy = _put(tmp_path)
    in_part = _put(part_root(tmp_path, 1))
    assert adopt(part_root(tmp_path, 0), tmp_path) == 1  # worker 0 of a new N
    found = owner_of(tmp_path, legacy)
    assert found is not None and found[0].root == part_root(tmp_path, 0)
    for source in sources_for(tmp_path, None, 1):  # back to one process
        adopt(tmp_path, source)
    assert set(_recover(tmp_path)) == {legacy, in_part}
    assert owner_of(tmp_path, "NOSUCHID") is None


def _adopted_after_the_look_up(monkeypatch: pytest.MonkeyPatch, into: Path,
                                source: Path) -> None:
    """A worker starting between an operator's look-up and its request: the first
    ``owner_of`` answers the old part, then the message is adopted away."""
    real = parts.owner_of
    calls = []

    def owner_then_adopt(root: Path, queue_id: str) -> object:
        found = real(root, queue_id)
        calls.append(found)
        if len(calls) == 1:
            assert adopt(into, source) == 1
        return found

    monkeypatch.setattr(parts, "owner_of", owner_then_adopt)


@pytest.mark.parametrize("action", ["retry", "delete"])
def test_a_request_follows_a_message_adopted_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: Literal["retry", "delete"]
) -> None:
    old, into = part_root(tmp_path, 2), part_root(tmp_path, 0)
    qid = _put(old)
    into.mkdir(parents=True)
    _adopted_after_the_look_up(monkeypatch, into, old)
    assert leave_request(tmp_path, action, qid)
    monkeypatch.undo()
    assert os.listdir(into / "control") == [f"{action}.{qid}"]  # with the worker that has it
    assert os.listdir(old / "control") == []  # not left in a part no worker owns
    found = owner_of(tmp_path, qid)
    if action == "delete":
        assert found is None and os.listdir(into / "journal") == []
    else:
        assert found is not None and found[0].root == into


def test_a_request_for_no_message_is_refused(tmp_path: Path) -> None:
    qid = _put(part_root(tmp_path, 1))
    assert not leave_request(tmp_path, "retry", "NOSUCHID")
    assert not leave_request(tmp_path, "delete", "NOSUCHID")
    assert leave_request(tmp_path, "delete", qid)
    assert not leave_request(tmp_path, "delete", qid)  # gone


def test_adoption_skips_a_message_deleted_meanwhile(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's delete between adoption's listing and its rename: the message is
    skipped (no journal link left behind), the others move, the worker starts."""
    old, into = part_root(tmp_path, 2), part_root(tmp_path, 0)
    gone, kept = _put(old, delivered_first=True), _put(old)  # gone has a journal
    assert (old / "journal" / f"{gone}.log").exists()
    real_rename = os.rename

    def delete_first(src: str | Path, dst: str | Path) -> None:
        if Path(src).name == gone:
            assert Spool(old).delete_sync(gone)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", delete_first)
    assert adopt(into, old) == 1
    monkeypatch.undo()
    assert set(_recover(into)) == {kept}
    assert os.listdir(into / "journal") == []  # the deleted one's link went too
    assert _recover(old) == {}


def test_lock_within_waits_then_gives_up(tmp_path: Path) -> None:
    holder = Spool(tmp_path)
    holder.lock()
    try:
        with pytest.raises(SpoolInUse):
            lock_within(Spool(tmp_path), 0.2)
    finally:
        holder.unlock()
    other = Spool(tmp_path)
    lock_within(other, 0.2)
    other.unlock()
