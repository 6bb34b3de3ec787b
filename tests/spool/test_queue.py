from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.log import add_event_tap, remove_event_tap
from beacon_proxy.spool import envelope, queue
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import QueueEntry, Spool, SpoolCorruptError, SpoolInUse

DATA = b"Subject: hi\r\n\r\nbody\r\n.line\r\n"


def _env(*rcpts: str) -> Envelope:
    return Envelope(new_queue_id(), "s@example.org", rcpts or ("a@example.net",),
                    client_address="127.0.0.1", size=len(DATA))


async def test_put_is_readable_and_recovered(spool: Spool) -> None:
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    assert not any(spool.tmp.iterdir())
    (entry,) = await spool.recover()
    assert entry.envelope == env
    assert entry.state == "active"
    assert entry.pending() == [0, 1]
    assert await spool.read_data(entry) == DATA


async def test_a_put_after_active_was_replaced_by_a_rename_lands_in_the_new_one(
        file_spool: Spool) -> None:
    """An operator who moves ``active/`` aside and makes a new one while the relay runs:
    what is accepted next is in the new ``active/`` (by path), where the scheduler and
    the next start's recovery look -- never in the moved-away folder (a descriptor kept
    open would follow it there: acknowledged mail nobody finds)."""
    spool = file_spool  # the queue-file path
    active = spool.root / "active"
    active.rename(spool.root / "active.old")
    active.mkdir()
    env = _env()
    await spool.put(env, DATA)
    assert (active / env.queue_id).exists()
    assert not any((spool.root / "active.old").iterdir())
    (entry,) = await spool.recover()
    assert entry.envelope == env and await spool.read_data(entry) == DATA


async def test_journal_keeps_final_states_across_restart(spool: Spool) -> None:
    env = _env("a@example.net", "b@example.net", "c@example.net")
    await spool.put(env, DATA)
    await spool.record(env.queue_id, 0, "delivered", "250 ok")
    await spool.record(env.queue_id, 1, "deferred", "451 later")
    entry = QueueEntry.new(env)
    entry.attempts, entry.next_attempt, entry.state = 1, 12345.0, "deferred"
    await spool.finish_attempt(entry)
    (back,) = await spool.recover()
    assert back.state == "deferred"
    assert [r.state for r in back.recipients] == ["delivered", "deferred", "pending"]
    assert back.recipients[1].reply == "451 later"
    assert back.pending() == [1, 2]
    assert (back.attempts, back.next_attempt) == (1, 12345.0)
    assert await spool.read_data(back) == DATA


async def test_final_state_is_never_undone(spool: Spool) -> None:
    env = _env()
    await spool.put(env, DATA)
    await spool.record(env.queue_id, 0, "delivered", "250 ok")
    await spool.record(env.queue_id, 0, "deferred", "451 late duplicate")
    (back,) = await spool.recover()
    assert back.recipients[0].state == "delivered"


async def test_torn_last_journal_line_is_ignored(spool: Spool) -> None:
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    await spool.record(env.queue_id, 0, "delivered", "250 ok")
    with (spool.journal / f"{env.queue_id}.log").open("ab") as fh:
        fh.write(b'{"r":1,"s":"deliv')
    (back,) = await spool.recover()
    assert [r.state for r in back.recipients] == ["delivered", "pending"]


async def test_remove_forgets_message_and_journal(spool: Spool) -> None:
    env = _env()
    await spool.put(env, DATA)
    await spool.record(env.queue_id, 0, "deferred", "451")
    await spool.remove(env.queue_id)
    assert await spool.recover() == []
    assert not any(spool.journal.iterdir())


async def test_recovery_cleans_tmp_and_orphan_journals(spool: Spool) -> None:
    (spool.tmp / "HALFWRITTEN").write_bytes(b"BEACONQ1 10 10\n{")
    (spool.journal / "GONE.log").write_text('{"r":0,"s":"delivered"}\n')
    assert await spool.recover() == []
    assert not any(spool.tmp.iterdir())
    assert not any(spool.journal.iterdir())


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n",
        b"BEACONQ1 5 3\n{\"a\":\n",  # truncated
        b"BEACONQ1 2 3\n{}\nabc",  # not an envelope
        b"BEACONQ1 x y\n",
    ],
)
async def test_unreadable_item_moves_to_corrupt(spool: Spool, content: bytes) -> None:
    good = _env()
    await spool.put(good, DATA)
    (spool.root / "active" / "BAD0000000000000").write_bytes(content)
    entries = await spool.recover()
    assert [e.queue_id for e in entries] == [good.queue_id]
    assert (spool.corrupt / "BAD0000000000000").read_bytes() == content


async def test_truncated_data_is_corrupt(file_spool: Spool) -> None:
    spool = file_spool  # the queue-file path
    env = _env()
    await spool.put(env, DATA)
    path = spool.root / "active" / env.queue_id
    path.write_bytes(path.read_bytes()[:-3])
    assert await spool.recover() == []
    assert (spool.corrupt / env.queue_id).exists()


async def test_read_data_reports_corruption(file_spool: Spool) -> None:
    spool = file_spool  # the queue-file path
    env = _env()
    await spool.put(env, DATA)
    (entry,) = await spool.recover()
    path = spool.root / "active" / env.queue_id
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(SpoolCorruptError):
        await spool.read_data(entry)
    await spool.quarantine(env.queue_id, "test")
    assert (spool.corrupt / env.queue_id).exists()


async def test_put_failure_leaves_nothing_behind(file_spool: Spool) -> None:
    spool = file_spool  # the queue-file path
    env = _env()
    os.rmdir(spool.root / "active")
    (spool.root / "active").write_bytes(b"not a directory")
    with pytest.raises(OSError):
        await spool.put(env, DATA)
    assert not any(spool.tmp.iterdir())


async def test_put_refuses_a_duplicate_id(file_spool: Spool) -> None:
    spool = file_spool  # the queue-file path
    env = _env()
    (spool.tmp / env.queue_id).write_bytes(b"")
    with pytest.raises(FileExistsError):
        await spool.put(env, DATA)


async def test_sync_readers(spool: Spool) -> None:
    env = _env()
    await spool.put(env, DATA)
    (entry,) = spool.list_sync()
    assert entry.queue_id == env.queue_id
    found = spool.find_sync(env.queue_id)
    assert found is not None and spool.read_data_sync(found) == DATA
    assert spool.find_sync("NOPE") is None


def test_envelope_round_trip_and_rejects_junk() -> None:
    env = _env("ü@example.net")
    assert Envelope.from_json(env.to_json()) == env
    for junk in (b"[]", b'{"queue_id": "x"}', json.dumps({"recipients": "a"}).encode()):
        with pytest.raises(ValueError):
            Envelope.from_json(junk)


def test_queue_ids_are_unique_and_ordered() -> None:
    ids = [new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.isalnum() and len(i) == 16 for i in ids)
    assert new_queue_id(10**18) > new_queue_id(10**17)


def test_one_process_holds_the_spool_lock_until_it_lets_go(tmp_path: Path) -> None:
    first, second = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")
    first.lock()
    first.lock()  # idempotent for its holder
    with pytest.raises(SpoolInUse, match=rf"in use by another beacon-proxy \(pid {os.getpid()}\)"):
        second.lock()
    first.unlock()
    second.lock()  # free again
    assert (tmp_path / "spool" / "lock").read_text() == f"{os.getpid()}\n"
    second.unlock()


def test_the_spool_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A relay killed with kill -9 leaves no lock behind (flock, not a pid file)."""
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; "
            "from beacon_proxy.spool.queue import Spool; "
            "Spool(Path(sys.argv[1])).lock(); print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spool")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(SpoolInUse, match=f"pid {holder.pid}"):
            Spool(tmp_path / "spool").lock()
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    spool = Spool(tmp_path / "spool")
    spool.lock()
    spool.unlock()


class _SyncLog:
    """Records, in order, every rename and every sync the spool does (thread-safe)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.hold_first_dir_sync: threading.Event | None = None  # set: let it go
        self.fail_dir_sync = False
        self._dir_syncs = 0
        real_fsync, real_fdatasync, real_rename = os.fsync, os.fdatasync, os.rename

        def fsync(fd: int) -> None:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                self.add("file-fsync", "")
                real_fsync(fd)
                return
            with self.lock:
                self._dir_syncs += 1
                n = str(self._dir_syncs)
            self.add("dir-start", n)
            if n == "1" and self.hold_first_dir_sync is not None:
                # 60 s: a guard against a hang, not a timing
                assert self.hold_first_dir_sync.wait(60)
            if self.fail_dir_sync:
                self.add("dir-failed", n)
                raise OSError(5, "Input/output error")
            real_fsync(fd)
            self.add("dir-end", n)

        def fdatasync(fd: int) -> None:
            self.add("fdatasync", "")
            real_fdatasync(fd)

        def rename(src: str | Path, dst: str | Path) -> None:
            real_rename(src, dst)
            self.add("rename", Path(dst).name)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "rename", rename)

    def add(self, kind: str, what: str) -> None:
        with self.lock:
            self.events.append((kind, what))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.events if k == kind)


async def test_one_put_costs_one_data_sync_and_one_directory_sync(
        file_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = file_spool  # the queue-file path
    syncs = _SyncLog(monkeypatch)
    env = _env()
    await spool.put(env, DATA)
    assert [k for k, _ in syncs.events] == ["fdatasync", "rename", "dir-start", "dir-end"]
    (entry,) = await spool.recover()
    assert await spool.read_data(entry) == DATA


async def test_concurrent_puts_share_directory_syncs_that_follow_their_renames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit in the threads: 20 puts at once, the first directory sync held
    until the 19 others wait - for the next one, or for this one when its leader was
    still gathering their writes (a busy machine: every put was writing when the
    first sync was led) -: the 20 cost at most 2 directory syncs, and each put returns
    only after a directory sync that started after its own rename has ended."""
    n = 20
    spool = Spool(tmp_path / "spool", put_threads=n, log=False)
    spool.open()
    syncs = _SyncLog(monkeypatch)
    held = syncs.hold_first_dir_sync = threading.Event()

    def on_wait(waiting: int) -> None:
        if waiting == n - 1:  # called under the sync's lock: every follower counts on #2
            held.set()

    spool._active_sync.on_wait = on_wait
    envs = [_env() for _ in range(n)]

    async def put(env: Envelope) -> None:
        await spool.put(env, DATA)
        syncs.add("returned", env.queue_id)

    try:
        await asyncio.gather(*(put(env) for env in envs))
        assert syncs.count("fdatasync") == n
        assert syncs.count("file-fsync") == 0
        # the held one, then one for all the others (or the held one for all)
        assert syncs.count("dir-start") in (1, 2)
        events = syncs.events
        for env in envs:
            renamed = events.index(("rename", env.queue_id))
            returned = events.index(("returned", env.queue_id))
            covering = [
                what for i, (kind, what) in enumerate(events)
                if kind == "dir-start" and i > renamed
                and events.index(("dir-end", what)) < returned
            ]
            assert covering, f"{env.queue_id} returned without a directory sync after its rename"
        assert len(await spool.recover()) == n
    finally:
        spool.close()


def test_a_sync_that_started_before_a_rename_does_not_cover_it(tmp_path: Path) -> None:
    """The leader/follower rule without the spool: a caller arriving while a sync runs
    waits for the next one, and a failed sync fails exactly the callers counting on it."""
    (tmp_path / "d").mkdir()
    dir_sync = queue._DirSync(tmp_path / "d")
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []
    fail = {"2"}
    real_fsync_dir = queue.fsync_dir

    def fsync_dir(path: Path) -> None:
        number = str(dir_sync._started)
        calls.append(number)
        if number == "1":
            started.set()
            assert release.wait(60)  # a guard against a hang, not a timing
        if number in fail:
            raise OSError(5, "Input/output error")
        real_fsync_dir(path)

    def on_wait(waiting: int) -> None:
        if waiting == 2:
            release.set()

    dir_sync.on_wait = on_wait
    outcomes: dict[str, str] = {}

    def call(name: str) -> None:
        try:
            dir_sync.sync()
            outcomes[name] = "ok"
        except OSError:
            outcomes[name] = "failed"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(queue, "fsync_dir", fsync_dir)
        leader = threading.Thread(target=call, args=("leader",))
        leader.start()
        assert started.wait(60)
        followers = [threading.Thread(target=call, args=(f"f{i}",)) for i in range(2)]
        for t in followers:
            t.start()
        for t in (leader, *followers):
            t.join(60)
        assert calls == ["1", "2"]  # the followers did not count on #1, and shared #2
        assert outcomes == {"leader": "ok", "f0": "failed", "f1": "failed"}
        call("after")  # the next caller syncs again
        assert calls == ["1", "2", "3"] and outcomes["after"] == "ok"


def _gathering_leader(dir_sync: queue._DirSync, events: list[str]) -> threading.Thread:
    """A thread leading a sync of ``dir_sync``, started and waited for until it gathers."""
    gathering = threading.Event()

    def on_gather(writers: int) -> None:
        events.append(f"gather {writers}")
        gathering.set()

    dir_sync.on_gather = on_gather
    leader = threading.Thread(target=dir_sync.sync)
    leader.start()
    assert gathering.wait(60)  # a guard against a hang, not a timing
    return leader


def _logged_dir_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> tuple[queue._DirSync, list[str]]:
    """A ``_DirSync`` of a fresh directory whose syncs are logged (``sync <number>``)."""
    (tmp_path / "d").mkdir()
    dir_sync = queue._DirSync(tmp_path / "d")
    events: list[str] = []
    real_fsync_dir = queue.fsync_dir

    def fsync_dir(path: Path) -> None:
        events.append(f"sync {dir_sync._started}")
        real_fsync_dir(path)

    monkeypatch.setattr(queue, "fsync_dir", fsync_dir)
    return dir_sync, events


def test_a_leader_gathers_the_puts_already_writing_and_no_later_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader's sync starts only once the writes in flight when it came have
    renamed (so it covers them), and does not wait for a write that starts later."""
    dir_sync, events = _logged_dir_sync(tmp_path, monkeypatch)
    first = dir_sync.writing()
    leader = _gathering_leader(dir_sync, events)
    later = dir_sync.writing()  # starts while the leader gathers: not waited for
    assert events == ["gather 1"]  # nothing synced while the first put writes
    events.append("renamed")
    dir_sync.written(first)
    leader.join(60)
    assert not leader.is_alive()
    assert events == ["gather 1", "renamed", "sync 1"]
    dir_sync.written(later)
    dir_sync.sync()  # the later put's own sync: the next one
    assert events[-1] == "sync 2"


def test_a_caller_arriving_while_the_leader_gathers_shares_its_sync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dir_sync, events = _logged_dir_sync(tmp_path, monkeypatch)
    joined = threading.Event()

    def on_wait(waiting: int) -> None:
        joined.set()

    writer = dir_sync.writing()
    leader = _gathering_leader(dir_sync, events)
    dir_sync.on_wait = on_wait
    follower = threading.Thread(target=dir_sync.sync)  # renamed before the sync starts
    follower.start()
    assert joined.wait(60)  # it waits for the gathering sync, a guard not a timing
    dir_sync.written(writer)
    for t in (leader, follower):
        t.join(60)
        assert not t.is_alive()
    assert events == ["gather 1", "sync 1"]  # one sync for all three


async def test_a_put_whose_write_fails_does_not_hold_up_a_gathering_leader(
        file_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = file_spool  # the queue-file path
    def broken(envelope: Envelope, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "_write_sync", broken)
    with pytest.raises(OSError, match="No space"):
        await spool.put(_env(), DATA)
    assert not spool._active_sync._writers  # its ticket is returned however it ends
    monkeypatch.undo()
    await spool.put(_env(), DATA)  # a leader after it does not wait for it


async def test_a_failed_directory_sync_fails_its_puts_and_the_next_put_syncs_again(
        file_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = file_spool  # the queue-file path
    syncs = _SyncLog(monkeypatch)
    syncs.fail_dir_sync = True
    with pytest.raises(OSError, match="Input/output"):
        await spool.put(_env(), DATA)
    syncs.fail_dir_sync = False
    await spool.put(_env(), DATA)
    assert [k for k, _ in syncs.events][-2:] == ["dir-start", "dir-end"]


async def test_removing_a_finished_message_syncs_nothing(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env()
    await spool.put(env, DATA)
    syncs = _SyncLog(monkeypatch)
    await spool.record(env.queue_id, 0, "delivered", "250 ok")
    await spool.remove(env.queue_id)
    assert syncs.events == []
    assert await spool.recover() == []


async def test_a_partial_outcome_is_fsynced(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    syncs = _SyncLog(monkeypatch)
    await spool.record(env.queue_id, 0, "delivered", "250 ok")
    entry = QueueEntry.new(env)
    entry.attempts, entry.state = 1, "deferred"
    await spool.finish_attempt(entry)
    assert syncs.count("file-fsync") == 1  # the journal, at the end of the attempt


async def test_cancelled_puts_waiting_for_the_directory_sync_lose_nothing(
        file_spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutdown while puts wait (in their threads) for their directory sync: the
    cancelled puts are not acknowledged (each raises ``CancelledError``), their
    threads finish the sync, and every message renamed into active/ is recovered
    (delivered, at worst twice if the client sends it again)."""
    spool = file_spool  # the queue-file path
    syncs = _SyncLog(monkeypatch)
    held = syncs.hold_first_dir_sync = threading.Event()
    envs = [_env() for _ in range(3)]
    loop = asyncio.get_running_loop()
    all_waiting = asyncio.Event()

    def on_wait(waiting: int) -> None:
        if waiting == len(envs) - 1:
            loop.call_soon_threadsafe(all_waiting.set)

    spool._active_sync.on_wait = on_wait
    puts = [asyncio.ensure_future(spool.put(env, DATA)) for env in envs]
    await all_waiting.wait()
    for put in puts:
        put.cancel()
    results = await asyncio.gather(*puts, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    held.set()  # let the held thread end
    spool.close()  # waits for the put threads
    # 2, or 1 when the first put's sync gathered the others' writes (_DirSync)
    assert syncs.count("dir-end") in (1, 2)
    assert {e.queue_id for e in await _recovered(spool)} == {e.queue_id for e in envs}


async def test_outcomes_handed_over_are_in_the_journal_before_the_attempt_ends(
        spool: Spool) -> None:
    """``record_soon`` does not wait; ``finish_attempt`` waits for every line handed over
    before it, so its fsync covers them, in order."""
    env = _env(*(f"r{i}@example.net" for i in range(300)))
    await spool.put(env, DATA)
    for i in range(299):
        spool.record_soon(env.queue_id, i, "delivered", f"250 ok {i}")
    spool.record_soon(env.queue_id, 0, "deferred", "451 a late duplicate")
    entry = QueueEntry.new(env)
    entry.attempts, entry.state = 1, "deferred"
    await spool.finish_attempt(entry)
    lines = (spool.journal / f"{env.queue_id}.log").read_bytes().splitlines()
    assert [json.loads(x).get("r") for x in lines] == [*range(299), 0, None]
    (back,) = await spool.recover()
    assert back.pending() == [299]
    assert back.recipients[0].state == "delivered" and back.recipients[298].reply == "250 ok 298"


async def test_a_removal_after_outcomes_handed_over_leaves_no_journal(spool: Spool) -> None:
    """A line written after the unlink would recreate the journal (an orphan)."""
    for _ in range(20):
        env = _env("a@example.net", "b@example.net")
        await spool.put(env, DATA)
        spool.record_soon(env.queue_id, 0, "delivered", "250 ok")
        spool.record_soon(env.queue_id, 1, "suppressed", "suspended")
        await spool.remove(env.queue_id)
    spool.close()
    assert not any(spool.journal.iterdir())
    assert await _recovered(spool) == []


async def _recovered(spool: Spool) -> list[QueueEntry]:
    spool.open()
    return await spool.recover()


async def test_a_failed_journal_write_fails_the_end_of_that_attempt_only(
        spool: Spool) -> None:
    """The writer thread keeps a failed write for its journal: ``finish_attempt`` of that
    message raises it (its attempt fails, and is retried), another message's does not;
    ``record`` raises its own as before."""
    bad, good = _env("a@example.net", "b@example.net"), _env("c@example.net", "d@example.net")
    for env in (bad, good):
        await spool.put(env, DATA)
    (spool.journal / f"{bad.queue_id}.log").mkdir()  # opening it for writing fails
    spool.record_soon(bad.queue_id, 0, "delivered", "250 ok")
    spool.record_soon(good.queue_id, 0, "delivered", "250 ok")
    entries = {env.queue_id: QueueEntry.new(env) for env in (bad, good)}
    for entry in entries.values():
        entry.attempts, entry.state = 1, "deferred"
    await spool.finish_attempt(entries[good.queue_id])
    with pytest.raises(IsADirectoryError):
        await spool.finish_attempt(entries[bad.queue_id])
    with pytest.raises(IsADirectoryError):
        await spool.record(bad.queue_id, 1, "delivered", "250 ok")
    await spool.record(good.queue_id, 1, "deferred", "451 later")
    lines = (spool.journal / f"{good.queue_id}.log").read_bytes().splitlines()
    assert [json.loads(x).get("r") for x in lines] == [0, None, 1]


async def test_closing_the_spool_writes_the_outcomes_and_removals_handed_over(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    env, done = _env("a@example.net", "b@example.net"), _env("a@example.net", "b@example.net")
    for e in (env, done):
        await spool.put(e, DATA)
        spool.record_soon(e.queue_id, 1, "delivered", "250 ok")
    spool.remove_soon(done.queue_id, (0, "250 ok"))
    spool.close()
    spool.open()
    try:
        (back,) = await spool.recover()
    finally:
        spool.close()
    assert back.queue_id == env.queue_id
    assert [r.state for r in back.recipients] == ["pending", "delivered"]
    assert not (spool.journal / f"{done.queue_id}.log").exists()


async def test_a_wait_with_no_line_handed_over_needs_no_round_trip(spool: Spool) -> None:
    """A 1-recipient message leaves with its last outcome unjournaled: its removal has no
    line to wait for, so it does not wake the writer thread (nor the loop from it); a line
    handed over later needs a wait of its own."""
    env = _env("a@example.net", "b@example.net")
    await spool.put(env, DATA)
    writer = spool._journal_writer
    assert writer is not None
    await spool._flushed(env.queue_id)  # nothing handed over: returns at once
    assert writer._queue.qsize() == 0
    spool.record_soon(env.queue_id, 0, "delivered", "250 ok")
    await spool._flushed(env.queue_id)  # waits for that line
    assert (spool.journal / f"{env.queue_id}.log").read_bytes().count(b"\n") == 1
    await spool._flushed(env.queue_id)  # the line is written: nothing more to wait for
    assert writer._queue.qsize() == 0
    (spool.journal / f"{env.queue_id}.log").unlink()
    (spool.journal / f"{env.queue_id}.log").mkdir()  # the next write fails
    spool.record_soon(env.queue_id, 1, "delivered", "250 ok")
    with pytest.raises(IsADirectoryError):  # a failed write is still raised by its wait
        await spool._flushed(env.queue_id)
    await spool._flushed(env.queue_id)  # and only once


async def test_a_removal_handed_over_follows_the_lines_before_it_without_a_barrier(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``remove_soon`` queues the removal behind the message's lines on the journal's
    thread: no wait for them first (no barrier, no future), no journal left behind, and
    :meth:`Spool.settled` says when it is done."""
    envs = [_env("a@example.net", "b@example.net") for _ in range(20)]
    for env in envs:
        await spool.put(env, DATA)
    writer = spool._journal_writer
    assert writer is not None
    barriers: list[object] = []
    real_flushed = writer.flushed

    async def flushed(queue_id: str | None) -> None:
        barriers.append(queue_id)
        await real_flushed(queue_id)

    monkeypatch.setattr(writer, "flushed", flushed)
    for env in envs:
        spool.record_soon(env.queue_id, 0, "delivered", "250 ok")
        spool.remove_soon(env.queue_id, (1, "250 ok"))
    assert writer._unflushed == set()  # nothing left for a wait to track
    await spool.settled()
    assert barriers == [None]  # settled's own, nothing per removal
    assert not any(spool.journal.iterdir())
    assert await spool.recover() == []


async def test_a_failed_removal_keeps_the_last_delivery_and_is_told(
        spool: Spool, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Not waited for: the thread journals the delivery the removal stood for and logs
    ``remove_failed`` (the message stays, finished: a restart neither loses it nor sends
    it again).  Waited for (:meth:`Spool.remove`): the error is raised to the caller."""
    caplog.set_level(logging.INFO, "beacon_proxy.relay")  # removed too
    real_remove_sync = spool._remove_sync

    def remove_sync(queue_id: str) -> None:
        raise PermissionError(13, "Permission denied")

    env, other = _env("a@example.net", "b@example.net"), _env()
    for e in (env, other):
        await spool.put(e, DATA)
    monkeypatch.setattr(spool, "_remove_sync", remove_sync)
    spool.record_soon(env.queue_id, 0, "delivered", "250 first")
    spool.remove_soon(env.queue_id, (1, "250 last"))
    with pytest.raises(PermissionError):
        await spool.remove(other.queue_id)
    await spool.settled()
    (failed,) = [r for r in caplog.records if r.getMessage() == "remove_failed"]
    assert getattr(failed, "fields", {})["queue_id"] == env.queue_id
    assert not [r for r in caplog.records if r.getMessage() == "removed"]  # it was not
    back = {e.queue_id: e for e in await spool.recover()}
    assert [(r.state, r.reply) for r in back[env.queue_id].recipients] == [
        ("delivered", "250 first"), ("delivered", "250 last")]
    assert back[other.queue_id].pending() == [0]  # no outcome given: nothing journaled
    monkeypatch.setattr(spool, "_remove_sync", real_remove_sync)
    spool.remove_soon(env.queue_id)
    spool.remove_soon(other.queue_id)
    await spool.settled()
    assert await spool.recover() == []
    # env (journaled) is removed by the journal's thread, other (no journal) by the
    # log's: two threads, so in either order
    assert sorted(getattr(r, "fields", {})["queue_id"] for r in caplog.records
                  if r.getMessage() == "removed") == sorted([env.queue_id, other.queue_id])


async def test_removed_is_logged_once_the_files_are_gone(spool: Spool) -> None:
    """``removed`` tells of a removal that happened: the journal's thread logs it after
    the unlinks (with the caller's reason), not the caller when it hands the removal
    over (which a failed unlink, or a crash, would then belie)."""
    seen: list[tuple[str, bool, bool]] = []

    def tap(name: str, fields: dict[str, Any]) -> None:
        if name == "removed":
            queue_id = fields["queue_id"]
            seen.append((fields["reason"],
                         any(spool._path(s, queue_id).exists() for s in ("active", "deferred")),
                         (spool.journal / f"{queue_id}.log").exists()))

    one, two, three = _env("a@example.net", "b@example.net"), _env(), _env()
    for env in (one, two, three):
        await spool.put(env, DATA)
    spool.record_soon(one.queue_id, 0, "delivered", "250 ok")  # one has a journal
    add_event_tap(tap)
    try:
        spool.remove_soon(one.queue_id, (1, "250 ok"))
        spool.remove_soon(two.queue_id, reason="test")
        await spool.settled()
        await spool.remove(three.queue_id, reason="waited for")
    finally:
        remove_event_tap(tap)
    # one (journaled) by the journal's thread, two (no journal) by the log's: either first
    assert sorted(seen[:2]) == [("all recipients done", False, False), ("test", False, False)]
    assert seen[2:] == [("waited for", False, False)]
    assert await spool.recover() == []


async def test_a_cancelled_wait_for_a_removal_does_not_stop_it(spool: Spool) -> None:
    env = _env()
    await spool.put(env, DATA)
    removal = asyncio.ensure_future(spool.remove(env.queue_id))
    await asyncio.sleep(0)  # handed over
    removal.cancel()
    with pytest.raises(asyncio.CancelledError):
        await removal
    await spool.settled()
    assert await spool.recover() == []


def test_queue_ids_made_in_one_microsecond_stay_unique_and_ordered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped (or stepped back) clock: ids made from it still strictly increase."""
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now)
    ids = [new_queue_id() for _ in range(1000)]
    assert ids == sorted(set(ids))
    monkeypatch.setattr(time, "time_ns", lambda: now - 10**9)
    assert new_queue_id() > ids[-1]


def test_a_forked_child_does_not_repeat_its_parents_queue_ids() -> None:
    """The random part comes from a per-process generator: a fork re-seeds it, or a
    worker forked from the relay would make its parent's ids in the same microsecond."""
    read, write = os.pipe()
    state = envelope._rng.getstate()
    pid = os.fork()
    if pid == 0:  # the child: report its next random bits, and leave at once
        try:
            os.write(write, envelope._rng.getrandbits(64).to_bytes(8, "big"))
        finally:
            os._exit(0)
    os.close(write)
    try:
        child = int.from_bytes(os.read(read, 8), "big")
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = random.Random()
    parent.setstate(state)
    assert child != parent.getrandbits(64)


def _journal_unlinks(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which journals the spool tries to unlink (``Path.unlink`` of journal/)."""
    tried: list[str] = []
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.parent == spool.journal:
            tried.append(path.name)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    return tried


async def test_a_removal_skips_the_unlink_of_a_journal_that_cannot_exist(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    await spool.recover()
    tried = _journal_unlinks(spool, monkeypatch)
    quiet, noted = _env(), _env("a@example.net", "b@example.net")
    for env in (quiet, noted):
        await spool.put(env, DATA)
    await spool.record(noted.queue_id, 0, "delivered", "250 ok")
    await spool.remove(quiet.queue_id)  # never journaled: no unlink of a missing file
    await spool.remove(noted.queue_id)  # journaled by this process: unlinked
    assert tried == [f"{noted.queue_id}.log"]
    assert await spool.recover() == []
    assert not any(spool.journal.iterdir())


async def test_a_journal_found_at_recovery_is_removed_with_its_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Spool(tmp_path / "spool")
    first.open()
    env = _env("a@example.net", "b@example.net")
    try:
        await first.put(env, DATA)
        await first.record(env.queue_id, 0, "delivered", "250 ok")
    finally:
        first.close()  # a crash, as far as the next process knows
    second = Spool(tmp_path / "spool")
    second.open()
    try:
        (entry,) = await second.recover()
        assert entry.pending() == [1]
        tried = _journal_unlinks(second, monkeypatch)
        await second.remove(env.queue_id)
        assert tried == [f"{env.queue_id}.log"]
        assert not any(second.journal.iterdir())
    finally:
        second.close()


async def test_before_recovery_every_removal_unlinks_the_journal(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env()
    await spool.put(env, DATA)
    # A journal this spool did not write (another process's, the command line's view).
    (spool.journal / f"{env.queue_id}.log").write_text('{"r":0,"s":"deferred"}\n')
    tried = _journal_unlinks(spool, monkeypatch)
    await spool.remove(env.queue_id)
    assert tried == [f"{env.queue_id}.log"]
    assert not any(spool.journal.iterdir())
    assert spool.delete_sync(env.queue_id) is False  # and the command line's delete too
