"""The spool's log of new messages: group commit, records, recovery, readers."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.log import add_event_tap, remove_event_tap
from beacon_proxy.spool import log as seglog
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.log import SegmentLog, live_records, record_bytes, segments
from beacon_proxy.spool.parts import adopt, part_root
from beacon_proxy.spool.queue import Spool

DATA = b"Subject: hi\r\n\r\nbody\r\n.line\r\n"


def _env(*rcpts: str) -> Envelope:
    return Envelope(new_queue_id(), "s@example.org", rcpts or ("a@example.net",),
                    client_address="127.0.0.1", size=len(DATA))


def _relay(root: Path, **kwargs: Any) -> Spool:
    """A spool as the relay holds it: locked and open."""
    spool = Spool(root, **kwargs)
    spool.lock()
    spool.open()
    return spool


def _log_dir(spool: Spool) -> Path:
    return spool.root / "log"


async def test_a_put_is_one_record_and_recovery_writes_it_out(tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    assert os.listdir(spool.root / "active") == []  # no queue file
    (record,) = live_records(_log_dir(spool))
    assert record.queue_id == env.queue_id
    assert seglog.read_record(record) == (env.to_json(), DATA)
    spool.record_soon(env.queue_id, 0, "delivered", "250 ok")
    await spool.settled()
    spool.close()  # as a crash would leave it, with the lock released
    spool.unlock()

    again = _relay(tmp_path / "spool")
    (entry,) = await again.recover()
    assert entry.envelope == env and entry.state == "active"
    assert [r.state for r in entry.recipients] == ["delivered", "pending"]
    assert await again.read_data(entry) == DATA
    assert (again.root / "active" / env.queue_id).exists()  # a queue file from now on
    assert segments(_log_dir(again)) == []
    again.close()


async def test_concurrent_puts_share_one_data_sync(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """20 puts at once while the first batch's ``fdatasync`` is held: the 19 others
    queue behind it and go in one batch, so the 20 cost 2 syncs; no put returns before
    the sync of its own record has ended."""
    spool = _relay(tmp_path / "spool")
    release = threading.Event()
    synced: list[int] = []
    real = os.fdatasync
    lock = threading.Lock()

    def fdatasync(fd: int) -> None:
        with lock:
            first = not synced
            synced.append(fd)
        if first:
            assert release.wait(60)  # a guard against a hang, not a timing
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    sizes: list[int] = []
    assert spool._lane is not None
    spool._lane.on_sync = sizes.append
    envs = [_env() for _ in range(20)]
    first = asyncio.ensure_future(spool.put(envs[0], DATA))
    while not synced:
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(spool.put(e, DATA)) for e in envs[1:]]
    await asyncio.sleep(0)
    assert not any(t.done() for t in (first, *rest))
    # every put handed over before the held sync ends
    while spool._lane._queue.qsize() < 19:
        await asyncio.sleep(0.001)
    release.set()
    await asyncio.gather(first, *rest)
    assert sizes == [1, 19]
    assert len(synced) == 2
    assert {r.queue_id for r in live_records(_log_dir(spool))} == {e.queue_id for e in envs}
    spool.close()


async def test_a_finished_message_leaves_nothing_to_recover(tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    one, two = _env(), _env()
    await spool.put(one, DATA)
    await spool.put(two, DATA)
    spool.remove_soon(one.queue_id, (0, "250 ok"))
    await spool.remove(two.queue_id)
    await spool.settled()
    assert live_records(_log_dir(spool)) == []
    spool.close()
    assert segments(_log_dir(spool)) == []  # nothing live in it: removed at close
    spool.unlock()
    again = _relay(tmp_path / "spool")
    assert await again.recover() == []
    again.close()


async def test_full_segments_are_removed_once_nothing_in_them_is_live(tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    assert spool._lane is not None
    spool._lane.segment_bytes = 200  # a record or two each
    envs = [_env() for _ in range(6)]
    for env in envs:
        await spool.put(env, DATA)
    assert len(segments(_log_dir(spool))) >= 3
    for env in envs[:-1]:
        await spool.remove(env.queue_id)
    # only the segment written to, holding the last message, is left
    assert [p for _, p in segments(_log_dir(spool))] == [
        spool._lane.find(envs[-1].queue_id).segment]  # type: ignore[union-attr]
    spool.close()


async def test_a_message_still_queued_after_its_attempt_becomes_a_queue_file(
        tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    (entry,) = spool.list_sync()
    entry.state = "deferred"
    entry.attempts = 1
    spool.record_soon(env.queue_id, 0, "delivered", "250 ok")
    spool.record_soon(env.queue_id, 1, "deferred", "451 later")
    await spool.finish_attempt(entry)
    assert (spool.root / "deferred" / env.queue_id).exists()
    assert live_records(_log_dir(spool)) == []  # let go of, after the file was durable
    assert await spool.read_data(entry) == DATA
    spool.close()
    spool.unlock()
    again = _relay(tmp_path / "spool")
    (back,) = await again.recover()
    assert back.state == "deferred" and back.attempts == 1
    assert [r.state for r in back.recipients] == ["delivered", "deferred"]
    again.close()


async def test_a_crash_between_writing_out_and_letting_go_recovers_one_message(
        tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    env = _env()
    await spool.put(env, DATA)
    assert spool._lane is not None
    record = spool._lane.find(env.queue_id)
    assert record is not None
    spool._write_out(record, spool.root / "deferred")  # then the process died
    spool._lane._records.clear()  # (what a crash does to the memory)
    spool.close()
    spool.unlock()
    again = _relay(tmp_path / "spool")
    (back,) = await again.recover()
    assert back.queue_id == env.queue_id and back.state == "deferred"
    assert os.listdir(again.root / "active") == []
    again.close()


def _segment_of(tmp_path: Path, *bodies: bytes) -> tuple[Path, list[str], bytes]:
    """A segment file holding one record per body (as the writer lays them out)."""
    nonce = b"ab" * 16
    ids = [new_queue_id() for _ in bodies]
    raw = b"BEACONS1 " + nonce + b"\n"
    for queue_id, body in zip(ids, bodies, strict=True):
        raw += b"".join(record_bytes(nonce, queue_id, b"{}", body))
    path = tmp_path / "000000000001.seg"
    path.write_bytes(raw)
    return path, ids, raw


def test_a_torn_tail_at_any_byte_keeps_every_whole_record_and_invents_none(
        tmp_path: Path) -> None:
    path, ids, raw = _segment_of(tmp_path, b"first\r\n", b"second\r\n.\r\n")
    second = raw.index(b"BEACONL1", raw.index(b"first"))
    for cut in range(second, len(raw)):
        path.write_bytes(raw[:cut])
        bad: list[tuple[Path, int, int]] = []
        assert [r.queue_id for r in live_records(tmp_path, bad)] == ids[:1], cut
        assert bad == []  # a torn tail is not damage
    path.write_bytes(raw)
    assert [r.queue_id for r in live_records(tmp_path)] == ids


def test_a_damaged_record_in_the_middle_is_reported_and_the_next_ones_kept(
        tmp_path: Path) -> None:
    path, ids, raw = _segment_of(tmp_path, b"one\r\n", b"two\r\n", b"three\r\n")
    at = raw.index(b"two")
    path.write_bytes(raw[:at] + b"TWO" + raw[at + 3:])  # the CRC no longer matches
    bad: list[tuple[Path, int, int]] = []
    assert [r.queue_id for r in live_records(tmp_path, bad)] == [ids[0], ids[2]]
    (where,) = bad
    assert where[0] == path and raw[where[1]:where[1] + 8] == b"BEACONL1"


def test_a_record_forged_inside_a_message_is_never_recovered(tmp_path: Path) -> None:
    """A sender who puts a whole record (header, envelope, CRC) in a message's data:
    after damage before it, the reader looks for the next record, but only a header
    with the segment's nonce starts one, and the nonce never leaves the spool."""
    forged_env = b'{"queue_id":"FORGED","recipients":["victim@example.com"]}'
    forged = b"".join(record_bytes(b"cd" * 16, "FORGED", forged_env, b"spam\r\n"))
    path, ids, raw = _segment_of(tmp_path, b"x\r\n" + forged + b"y\r\n", b"ok\r\n")
    assert [r.queue_id for r in live_records(tmp_path)] == ids  # read by lengths
    header_end = raw.index(b"\n", raw.index(b"BEACONL1")) - 1
    digit = b"1" if raw[header_end:header_end + 1] == b"0" else b"0"  # always a change
    path.write_bytes(raw[:header_end] + digit + raw[header_end + 1:])  # its CRC's last digit
    found = [r.queue_id for r in live_records(tmp_path)]
    assert "FORGED" not in found and found == ids[1:]


async def test_damage_goes_to_corrupt_at_recovery(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    (root / "log").mkdir(parents=True)
    nonce = b"ef" * 16
    envs = [_env(), _env(), _env()]
    raw = b"BEACONS1 " + nonce + b"\n"
    for env in envs:
        raw += b"".join(record_bytes(nonce, env.queue_id, env.to_json(), DATA))
    at = raw.index(b"body", raw.index(envs[1].queue_id.encode()))
    (root / "log" / "000000000007.seg").write_bytes(raw[:at] + b"BODY" + raw[at + 4:])
    events: list[tuple[str, dict[str, Any]]] = []

    def tap(name: str, fields: dict[str, Any]) -> None:
        events.append((name, fields))

    spool = _relay(root)
    add_event_tap(tap)
    try:
        entries = await spool.recover()
    finally:
        remove_event_tap(tap)
    assert sorted(e.queue_id for e in entries) == sorted([envs[0].queue_id, envs[2].queue_id])
    (kept,) = os.listdir(spool.corrupt)
    assert envs[1].queue_id.encode() in (spool.corrupt / kept).read_bytes()
    assert [n for n, _ in events].count("corrupt") == 1
    assert segments(root / "log") == []
    spool.close()


async def test_a_failed_write_fails_its_puts_and_the_next_goes_to_a_new_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = _relay(tmp_path / "spool")
    good = _env()
    await spool.put(good, DATA)
    assert spool._lane is not None
    first = spool._lane.find(good.queue_id)
    assert first is not None
    real = os.writev
    fail = [True]

    def writev(fd: int, buffers: Any) -> int:
        if fail[0]:
            fail[0] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    lost = _env()
    with pytest.raises(OSError, match="No space"):
        await spool.put(lost, DATA)
    after = _env()
    await spool.put(after, DATA)
    second = spool._lane.find(after.queue_id)
    assert second is not None and second.segment != first.segment
    assert {r.queue_id for r in live_records(_log_dir(spool))} == {good.queue_id,
                                                                     after.queue_id}
    spool.close()


async def test_a_duplicate_queue_id_is_refused(tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    env = _env()
    await spool.put(env, DATA)
    with pytest.raises(FileExistsError):
        await spool.put(env, b"other")
    with pytest.raises(ValueError, match="bad queue id"):
        await spool.put(Envelope("../x", "s@example.org", ("a@example.net",)), DATA)
    assert len(live_records(_log_dir(spool))) == 1
    spool.close()


async def test_readers_see_the_log_and_delete_from_it(tmp_path: Path) -> None:
    """The command line and the console read the spool without its lock: a message in
    the log is listed (active), shown, and deleted (noted done for the relay)."""
    relay = _relay(tmp_path / "spool")
    kept, deleted = _env(), _env()
    await relay.put(kept, DATA)
    await relay.put(deleted, DATA + b"more\r\n")
    reader = Spool(tmp_path / "spool")
    listed = {e.queue_id: e.state for e in reader.list_sync()}
    assert listed == {kept.queue_id: "active", deleted.queue_id: "active"}
    found = reader.find_sync(deleted.queue_id)
    assert found is not None and found.envelope == deleted
    assert reader.read_data_sync(found) == DATA + b"more\r\n"
    assert reader.delete_sync(deleted.queue_id)
    assert not reader.delete_sync(deleted.queue_id)  # gone now
    assert [e.queue_id for e in reader.list_sync()] == [kept.queue_id]
    relay.close()
    relay.unlock()
    again = _relay(tmp_path / "spool")
    assert [e.queue_id for e in await again.recover()] == [kept.queue_id]
    again.close()


async def test_a_log_moved_aside_gets_no_more_records(tmp_path: Path) -> None:
    """An operator who moves ``log/`` aside while the relay runs: the next records go
    to a new ``log/``, where the next start's recovery looks."""
    spool = _relay(tmp_path / "spool")
    await spool.put(_env(), DATA)
    _log_dir(spool).rename(tmp_path / "log.old")
    env = _env()
    await spool.put(env, DATA)
    assert [r.queue_id for r in live_records(_log_dir(spool))] == [env.queue_id]
    spool.close()


async def test_adoption_takes_a_part_with_a_live_log(tmp_path: Path) -> None:
    old = _relay(part_root(tmp_path, 1))
    env = _env()
    await old.put(env, DATA)
    old.close()
    old.unlock()
    into = part_root(tmp_path, 0)
    into.mkdir(parents=True)
    assert adopt(into, part_root(tmp_path, 1)) == 1
    assert segments(part_root(tmp_path, 1) / "log") == []
    spool = _relay(into)
    assert [e.queue_id for e in await spool.recover()] == [env.queue_id]
    spool.close()


def test_the_log_alone_answers_puts_from_two_event_loops(tmp_path: Path) -> None:
    """One log thread, puts from two loops (two threads): each loop is woken for its
    own puts only."""
    lane = SegmentLog(tmp_path / "log")
    lane.start()

    def run() -> None:
        async def go() -> None:
            await asyncio.gather(*(lane.append(new_queue_id(), b"{}", b"x") for _ in range(5)))
        asyncio.run(go())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert lane.live() == 10
    assert len(live_records(tmp_path / "log")) == 10
    lane.close()


async def test_count_live_reads_headers_only(tmp_path: Path) -> None:
    spool = _relay(tmp_path / "spool")
    envs = [_env() for _ in range(4)]
    for env in envs:
        await spool.put(env, DATA)
    await spool.remove(envs[0].queue_id)
    assert seglog.count_live(_log_dir(spool)) == 3
    assert seglog.count_live(tmp_path / "nowhere") == 0
    spool.close()


async def test_a_removal_with_no_journal_is_done_by_the_logs_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished message with no journal line (a record, or a queue file from the last
    start's recovery) is removed by the log's thread, the journal's thread never woken
    for it; one with lines goes behind them on the journal's thread.  Removals handed
    over and not yet done are done at close: nothing comes back at the next start."""
    first = _relay(tmp_path / "spool")
    old = _env()
    await first.put(old, DATA)
    first.close()
    first.unlock()
    spool = _relay(tmp_path / "spool")
    assert [e.queue_id for e in await spool.recover()] == [old.queue_id]  # a queue file now
    plain, journaled, last = _env(), _env("a@example.net", "b@example.net"), _env()
    for env in (plain, journaled, last):
        await spool.put(env, DATA)
    ran: list[tuple[str, str]] = []
    real = spool._remove_sync

    def remove_sync(queue_id: str) -> None:
        ran.append((queue_id, threading.current_thread().name))
        real(queue_id)

    monkeypatch.setattr(spool, "_remove_sync", remove_sync)
    writer = spool._journal_writer
    assert writer is not None
    spool.remove_soon(plain.queue_id, (0, "250 ok"))
    spool.remove_soon(old.queue_id, (0, "250 ok"))
    assert writer._queue.qsize() == 0  # nothing for the journal's thread
    spool.record_soon(journaled.queue_id, 0, "delivered", "250 ok")
    spool.remove_soon(journaled.queue_id, (1, "250 ok"))
    await spool.settled()
    assert sorted(ran) == sorted([(plain.queue_id, "spool-log"), (old.queue_id, "spool-log"),
                                  (journaled.queue_id, "spool-journal")])
    assert [r.queue_id for r in live_records(_log_dir(spool))] == [last.queue_id]
    assert not (spool.root / "active" / old.queue_id).exists()
    assert not any(spool.journal.iterdir())
    spool.remove_soon(last.queue_id, (0, "250 ok"))
    spool.close()  # the log's thread does what was handed over before it ends
    spool.unlock()
    assert segments(_log_dir(spool)) == []
    again = _relay(tmp_path / "spool")
    assert await again.recover() == []
    again.close()


async def test_a_failed_removal_on_the_logs_thread_keeps_the_last_delivery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on the journal's thread: the delivery the removal stood for is journaled and
    ``remove_failed`` logged, so a restart neither loses the message nor sends it again."""
    spool = _relay(tmp_path / "spool")
    await spool.recover()
    env = _env()
    await spool.put(env, DATA)
    seen: list[str] = []

    def tap(name: str, fields: dict[str, Any]) -> None:
        if fields.get("queue_id") == env.queue_id:
            seen.append(f"{name} {threading.current_thread().name}")

    def remove_sync(queue_id: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool, "_remove_sync", remove_sync)
    add_event_tap(tap)
    try:
        spool.remove_soon(env.queue_id, (0, "250 ok"))
        await spool.settled()
    finally:
        remove_event_tap(tap)
    assert seen == ["remove_failed spool-log"]
    spool.close()
    spool.unlock()
    again = _relay(tmp_path / "spool")
    (entry,) = await again.recover()
    assert entry.queue_id == env.queue_id and entry.pending() == []  # finished, not resent
    again.close()


def test_jobs_of_the_logs_thread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``call_soon`` is refused with no thread to run the job (not started, closed); a job
    that raises is logged and the thread goes on; ``flushed`` waits for the jobs before."""
    lane = SegmentLog(tmp_path / "log")
    ran: list[int] = []
    assert not lane.call_soon(lambda: ran.append(0))
    lane.start()

    def fail() -> None:
        raise RuntimeError("boom")

    async def go() -> None:
        await lane.append(new_queue_id(), b"{}", b"x")
        assert lane.call_soon(fail)
        assert lane.call_soon(lambda: ran.append(1))
        await lane.flushed()
        assert ran == [1]
        await lane.append(new_queue_id(), b"{}", b"y")  # the thread is still there

    asyncio.run(go())
    assert "a job of the spool's log thread failed" in caplog.text
    lane.close()
    assert not lane.call_soon(lambda: ran.append(2))
    asyncio.run(lane.flushed())  # nothing to wait for
    assert ran == [1]


async def test_a_crash_before_the_logs_thread_removes_a_message_redelivers_it(
        tmp_path: Path) -> None:
    """kill -9 after ``remove_soon`` handed a removal to the log's thread but before the
    thread wrote the ``.done`` line (the disk as it is then, copied): the next start
    finds the message with its recipient still to do -- a redelivery, never a loss --
    and the spool that went on removes it for good."""
    import shutil

    spool = _relay(tmp_path / "spool")
    await spool.recover()
    env, other = _env(), _env()
    await spool.put(env, DATA)
    await spool.put(other, DATA)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # the log's thread, busy with a batch
        holding.set()
        release.wait(5)

    lane = spool._lane
    assert lane is not None
    assert lane.call_soon(hold)
    assert holding.wait(5)
    spool.remove_soon(env.queue_id, (0, "250 ok"))  # queued behind the batch
    shutil.copytree(tmp_path / "spool", tmp_path / "crashed")
    release.set()
    await spool.settled()
    assert [r.queue_id for r in live_records(_log_dir(spool))] == [other.queue_id]
    spool.close()
    spool.unlock()
    crashed = _relay(tmp_path / "crashed")
    found = {e.queue_id: e for e in await crashed.recover()}
    assert sorted(found) == sorted([env.queue_id, other.queue_id])
    assert found[env.queue_id].pending() == [0]
    assert await crashed.read_data(found[env.queue_id]) == DATA
    crashed.close()
    again = _relay(tmp_path / "spool")
    assert [e.queue_id for e in await again.recover()] == [other.queue_id]
    again.close()


async def test_a_message_journaled_and_waited_for_leaves_no_journal_behind(
        tmp_path: Path) -> None:
    """A recipient's outcome journaled and waited for (``record``: the journal's thread
    wrote it, so the loop no longer counts a line of it as pending), then the last
    delivery: the removal still takes the journal with it, wherever it runs, and a
    restart finds nothing (no orphan journal, no message come back)."""
    spool = _relay(tmp_path / "spool")
    await spool.recover()
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    await spool.record(env.queue_id, 0, "bounced", "550 no such user")
    assert spool._journal_path(env.queue_id).exists()
    spool.remove_soon(env.queue_id, (1, "250 ok"))
    await spool.settled()
    assert not spool._journal_path(env.queue_id).exists()
    assert live_records(_log_dir(spool)) == []
    spool.close()
    spool.unlock()
    again = _relay(tmp_path / "spool")
    assert await again.recover() == []
    assert not any(again.journal.iterdir())
    again.close()
