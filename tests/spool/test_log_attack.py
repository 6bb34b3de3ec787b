"""Attacks on the spool's log (:mod:`beacon_proxy.spool.log`): crafted message data,
torn and damaged segments, failing writes and syncs, readers racing the relay, an
operator's moves and deletes, bad and duplicate queue ids, a close with puts in flight.

What must hold: a message acknowledged (its put returned) is found again by recovery
with its exact bytes; recovery never invents a message; what is damaged but not a
torn tail is kept in ``corrupt/``; a put that fails says so and the next one works.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.log import add_event_tap, remove_event_tap
from beacon_proxy.spool import log as seglog
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.fileio import fsync_dir as fsync_dir_real
from beacon_proxy.spool.log import live_records, segments
from beacon_proxy.spool.parts import adopt, part_root
from beacon_proxy.spool.queue import QueueEntry, Spool

DATA = b"Subject: hi\r\n\r\nbody\r\n"


def _env(queue_id: str | None = None, data: bytes = DATA) -> Envelope:
    return Envelope(new_queue_id() if queue_id is None else queue_id, "s@example.org",
                    ("a@example.net",), client_address="127.0.0.1", size=len(data))


def _relay(root: Path) -> Spool:
    """A spool as the relay has it: locked, open."""
    spool = Spool(root)
    spool.lock()
    spool.open()
    return spool


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Spool]:
    spool = _relay(tmp_path / "spool")
    yield spool
    spool.close()
    spool.unlock()


async def _recovered(root: Path) -> dict[str, bytes]:
    """What a restart finds: each message's data, by queue id."""
    spool = _relay(root)
    try:
        return {e.queue_id: await spool.read_data(e) for e in await spool.recover()}
    finally:
        spool.close()
        spool.unlock()


def _segment_files(root: Path) -> list[Path]:
    return [p for _, p in segments(root / "log")]


# -- crafted message data -----------------------------------------------------

_FAKE_NONCE = b"0" * 32


def _fake_record(nonce: bytes, queue_id: str) -> bytes:
    env = _env(queue_id).to_json()
    return b"".join(seglog.record_bytes(nonce, queue_id, env, b"Subject: fake\r\n\r\nx\r\n"))


BODIES = [
    b"",
    b"\n",
    b"\r\n",
    b"\r",
    b"no line end at all",
    b"LF only\nSubject: x\n\nbody\n",
    b"Subject: x\r\n\r\n" + _fake_record(_FAKE_NONCE, "FAKE1"),
    b"\n" + _fake_record(_FAKE_NONCE, "FAKE2") * 3,
    b"BEACONS1 " + _FAKE_NONCE + b"\n" + _fake_record(_FAKE_NONCE, "FAKE3"),
    b"BEACONQ1 10 10\n{}\n",
    b"\x00" * 300 + b"\xff\xfe" + bytes(range(256)),
    b"x" * (1 << 20),  # 1 MiB
]


async def test_crafted_bodies_come_back_exact_and_invent_nothing(relay: Spool) -> None:
    ids = []
    for body in BODIES:
        env = _env(data=body)
        await relay.put(env, body)
        ids.append(env.queue_id)
    relay.close()
    relay.unlock()
    back = await _recovered(relay.root)
    assert back == dict(zip(ids, BODIES, strict=True))
    assert not any(relay.corrupt.iterdir())


async def test_a_fake_record_behind_damage_is_not_a_message(relay: Spool) -> None:
    """Damage before a message whose body embeds a forged record (nonce guessed): the
    reader skips to the next header with the segment's own nonce, never the forgery."""
    first, second = _env(), _env()
    await relay.put(first, DATA)
    body = b"Subject: x\r\n\r\n" + b"\n" + _fake_record(_FAKE_NONCE, "FAKE")
    await relay.put(second, body)
    relay.close()
    relay.unlock()
    (seg,) = _segment_files(relay.root)
    raw = bytearray(seg.read_bytes())
    raw[raw.index(b"BEACONL1") + 3] ^= 0x20  # the first record's header is damaged
    seg.write_bytes(bytes(raw))
    assert await _recovered(relay.root) == {second.queue_id: body}
    assert len(list(relay.corrupt.iterdir())) == 1  # the damaged record, kept


# -- torn tails and damage ------------------------------------------------------

async def _three_records(root: Path) -> tuple[bytes, list[tuple[str, bytes, int]]]:
    """A segment of three records written by three batches: its bytes, and each
    message's id, data and the offset where its record ends."""
    spool = _relay(root)
    try:
        sent = []
        for n in range(3):
            data = b"Subject: %d\r\n\r\nline\nBEACONL1 x\r\n" % n
            env = _env(data=data)
            await spool.put(env, data)
            sent.append((env.queue_id, data))
    finally:
        spool.close()
        spool.unlock()
    (seg,) = _segment_files(root)
    raw = seg.read_bytes()
    ends = {r.queue_id: r.data_offset + r.data_len + 1 for r in live_records(root / "log")}
    return raw, [(q, d, ends[q]) for q, d in sent]


async def test_a_tail_torn_at_any_byte_loses_no_whole_record_and_invents_none(
        tmp_path: Path) -> None:
    raw, sent = await _three_records(tmp_path / "whole")
    assert sent[-1][2] == len(raw)
    for cut in range(len(raw) + 1):
        for filler in (b"", b"\x00"):  # cut short, or a size kept without its data
            log_dir = tmp_path / "cut" / "log"
            log_dir.mkdir(parents=True, exist_ok=True)
            seg = log_dir / "000000000001.seg"
            seg.write_bytes(raw[:cut] + filler * (len(raw) - cut))
            bad: list[tuple[Path, int, int]] = []
            found = [r.queue_id for r in live_records(log_dir, bad)]
            assert found == [q for q, _, end in sent if end <= cut], cut
            assert bad == [], (cut, filler)
    # And a whole restart, at a cut inside the last record.
    root = tmp_path / "restart"
    (root / "log").mkdir(parents=True)
    (root / "log" / "000000000001.seg").write_bytes(raw[:sent[1][2] + 30])
    assert await _recovered(root) == {q: d for q, d, _ in sent[:2]}
    assert not any((root / "corrupt").iterdir())
    assert not _segment_files(root)


@pytest.mark.parametrize("where", ["data", "header", "length"])
async def test_a_damaged_middle_record_goes_to_corrupt_and_the_rest_is_kept(
        tmp_path: Path, where: str) -> None:
    root = tmp_path / "spool"
    raw, sent = await _three_records(root)
    start = sent[0][2]  # the second record's header
    at = {"data": sent[1][2] - 5, "header": start + 2,
          "length": raw.index(b" ", raw.index(sent[1][0].encode(), start)) + 1}[where]
    damaged = bytearray(raw)
    damaged[at] = (damaged[at] + 1) % 256 if where != "length" else ord("9")
    (seg,) = _segment_files(root)
    seg.write_bytes(bytes(damaged))
    events: list[tuple[str, dict[str, object]]] = []

    def tap(name: str, fields: dict[str, object]) -> None:
        events.append((name, fields))

    add_event_tap(tap)
    try:
        back = await _recovered(root)
    finally:
        remove_event_tap(tap)
    assert back == {sent[0][0]: sent[0][1], sent[2][0]: sent[2][1]}
    (kept,) = (root / "corrupt").iterdir()
    assert kept.read_bytes() == bytes(damaged[start:sent[1][2]])
    assert [f["reason"] for n, f in events if n == "corrupt"] == ["damaged log record"]


async def test_one_damaged_byte_anywhere_costs_at_most_its_own_record(
        tmp_path: Path) -> None:
    """Every byte of a segment of three records damaged in turn (three ways): nothing
    is invented, every record the damage is not in is recovered, and the damaged
    one is kept in ``corrupt/`` unless it is the last one with its header hit (then
    it cannot be told from a torn tail)."""
    raw, sent = await _three_records(tmp_path / "whole")
    header_end = raw.index(b"\n") + 1
    starts = [header_end] + [end for _, _, end in sent[:-1]]
    log_dir = tmp_path / "damaged" / "log"
    log_dir.mkdir(parents=True)
    seg = log_dir / "000000000001.seg"
    for at in range(len(raw)):
        for damage in (lambda b: b ^ 0x01, lambda b: b ^ 0x80, lambda b: 0x0A):
            damaged = bytearray(raw)
            damaged[at] = damage(damaged[at])
            if damaged == raw:
                continue
            seg.write_bytes(bytes(damaged))
            bad: list[tuple[Path, int, int]] = []
            found = [r.queue_id for r in live_records(log_dir, bad)]
            if at < header_end:  # the segment's header (its nonce): all of it kept
                assert found == [], at
                assert len(bad) == 1 and bad[0][1] <= header_end, at
                assert bad[0][1] + bad[0][2] == len(raw), at
                continue
            hit = max(k for k, start in enumerate(starts) if start <= at)
            others = [q for k, (q, _, _) in enumerate(sent) if k != hit]
            assert found == others, at  # the header's own CRC covers its id and lengths
            stretch = (seg, starts[hit], sent[hit][2] - starts[hit])
            if hit < len(sent) - 1:
                assert bad == [stretch], at
            else:
                assert bad in ([], [stretch]), at


async def test_a_damaged_id_in_a_record_header_is_quarantined_not_delivered(
        tmp_path: Path) -> None:
    root = tmp_path / "spool"
    raw, sent = await _three_records(root)
    at = raw.index(sent[1][0].encode())
    damaged = raw[:at] + b"Z" + raw[at + 1:]
    (seg,) = _segment_files(root)
    seg.write_bytes(damaged)
    assert await _recovered(root) == {sent[0][0]: sent[0][1], sent[2][0]: sent[2][1]}
    (kept,) = (root / "corrupt").iterdir()  # the header's CRC: damage, kept whole
    assert kept.name.endswith(".log") and b"Z" + sent[1][0][1:].encode() in kept.read_bytes()


async def test_a_damaged_length_in_the_last_record_is_kept_not_dropped(tmp_path: Path) -> None:
    """A length digit of the last record damaged (its data now seems to run past the
    end, as a cut write's would): the header's own CRC tells it from a crash."""
    root = tmp_path / "spool"
    raw, sent = await _three_records(root)
    nonce = raw.split(b"\n", 1)[0].split(b" ")[1]
    at = raw.rindex(b"BEACONL1 " + nonce)  # (each message's data says BEACONL1 too)
    line_end = raw.index(b"\n", at)
    fields = raw[at:line_end].split(b" ")
    length_at = at + len(b" ".join(fields[:4])) + 1  # the data length's first digit
    damaged = bytearray(raw)
    damaged[length_at] = ord("9") if damaged[length_at] != ord("9") else ord("8")
    (seg,) = _segment_files(root)
    seg.write_bytes(bytes(damaged))
    assert await _recovered(root) == {sent[0][0]: sent[0][1], sent[1][0]: sent[1][1]}
    (kept,) = (root / "corrupt").iterdir()
    assert sent[2][0].encode() in kept.read_bytes()


async def test_a_damaged_last_record_that_is_whole_in_length_is_kept_not_dropped(
        tmp_path: Path) -> None:
    """The last record's bytes all there (its closing newline in place) but its CRC
    wrong: not a torn write of a process crash (a cut never leaves a whole length), so
    an acknowledged message is damaged.  It is kept in ``corrupt/``, as a damaged
    queue file would be, not dropped as a torn tail."""
    root = tmp_path / "spool"
    raw, sent = await _three_records(root)
    damaged = bytearray(raw)
    damaged[sent[2][2] - 4] ^= 0x01
    (seg,) = _segment_files(root)
    seg.write_bytes(bytes(damaged))
    assert await _recovered(root) == {q: d for q, d, _ in sent[:2]}
    (kept,) = (root / "corrupt").iterdir()
    assert kept.read_bytes() == bytes(damaged[sent[1][2]:])


async def test_a_damaged_segment_header_keeps_the_whole_segment(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    raw, _ = await _three_records(root)
    (seg,) = _segment_files(root)
    seg.write_bytes(b"X" + raw[1:])
    assert await _recovered(root) == {}
    (kept,) = (root / "corrupt").iterdir()
    assert kept.read_bytes() == b"X" + raw[1:]


async def test_damage_found_by_two_recoveries_is_kept_twice(tmp_path: Path) -> None:
    """Segments are numbered from 1 again after a recovery removed them all: the
    damaged stretch of a later one must not overwrite what ``corrupt/`` already kept."""
    root = tmp_path / "spool"
    for n in range(2):
        raw, sent = await _three_records(root)
        damaged = bytearray(raw)
        damaged[sent[1][2] - 5] ^= 0x01
        (seg,) = _segment_files(root)
        assert seg.name == "000000000001.seg", n
        seg.write_bytes(bytes(damaged))
        await _recovered(root)
        assert len(list((root / "corrupt").iterdir())) == n + 1
        for path in (root / "active").iterdir():  # delivered, say
            path.unlink()


# -- failing writes and syncs ---------------------------------------------------

class _Faults:
    """``os.writev`` / ``os.fdatasync`` of the log's segments failing on demand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.write_error: int | None = None
        self.partial = 0  # bytes written before the write fails
        self.sync_error: int | None = None
        real_writev, real_sync = os.writev, os.fdatasync

        def writev(fd: int, buffers: list[memoryview]) -> int:
            if self.write_error is not None and _is_segment(fd):
                error, self.write_error = self.write_error, None
                if self.partial:
                    real_writev(fd, [bytes(b"".join(buffers))[:self.partial]])
                raise OSError(error, os.strerror(error))
            return real_writev(fd, buffers)

        def fdatasync(fd: int) -> None:
            if self.sync_error is not None and _is_segment(fd):
                error, self.sync_error = self.sync_error, None
                raise OSError(error, os.strerror(error))
            real_sync(fd)

        monkeypatch.setattr(os, "writev", writev)
        monkeypatch.setattr(os, "fdatasync", fdatasync)


def _is_segment(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(".seg")
    except OSError:
        return False


@pytest.mark.parametrize("fault", ["enospc", "partial", "eio-sync"])
async def test_a_failed_write_or_sync_fails_the_put_and_the_next_put_works(
        relay: Spool, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    faults = _Faults(monkeypatch)
    before = _env()
    await relay.put(before, DATA)
    if fault == "eio-sync":
        faults.sync_error = errno.EIO
    else:
        faults.write_error = errno.ENOSPC
        faults.partial = 40 if fault == "partial" else 0
    failed = _env()
    with pytest.raises(OSError):
        await relay.put(failed, DATA)
    after = _env()
    await relay.put(after, b"after")
    assert len(_segment_files(relay.root)) == 2  # the next put went to a new segment
    assert [r.queue_id for r in live_records(relay.root / "log")][-1] == after.queue_id
    assert relay.find_sync(before.queue_id) is not None  # the relay still has both
    relay.close()
    relay.unlock()
    back = await _recovered(relay.root)
    assert back[before.queue_id] == DATA and back[after.queue_id] == b"after"
    # A put that failed may come back (a duplicate: the client was told to retry),
    # but only whole; a torn write is never a message.
    assert set(back) <= {before.queue_id, failed.queue_id, after.queue_id}
    assert not any(relay.corrupt.iterdir())


async def test_a_failed_first_write_of_an_empty_log_leaves_nothing(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = _Faults(monkeypatch)
    faults.write_error = errno.ENOSPC
    with pytest.raises(OSError):
        await relay.put(_env(), DATA)
    assert _segment_files(relay.root) == []  # the failed segment held nothing live
    ok = _env()
    await relay.put(ok, DATA)
    relay.close()
    relay.unlock()
    assert await _recovered(relay.root) == {ok.queue_id: DATA}


# -- ids ------------------------------------------------------------------------

class _HeldSync:
    """Holds the log thread in its next ``fdatasync`` until released, so that puts
    made meanwhile are one batch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.armed = True
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            if self.armed and _is_segment(fd):
                self.armed = False
                self.inside.set()
                assert self.release.wait(30)
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def wait_inside(self) -> None:
        assert await asyncio.to_thread(self.inside.wait, 30)


async def _queued(n: int, spool: Spool) -> None:
    """Until ``n`` items wait in the log thread's queue (bounded)."""
    lane = spool._lane
    assert lane is not None
    for _ in range(1000):
        if lane._queue.qsize() >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} puts never queued")


@pytest.mark.parametrize("bad", ["", "a b", "../x", "a/b", "ab\u00e9", "\u0661\u0662",
                                 "a\n"])
async def test_a_bad_queue_id_is_refused_alone(
        relay: Spool, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    held = _HeldSync(monkeypatch)
    first = asyncio.ensure_future(relay.put(_env(), DATA))
    await held.wait_inside()
    good = _env()
    good_put = asyncio.ensure_future(relay.put(good, DATA))
    bad_put = asyncio.ensure_future(relay.put(_env(bad), DATA))
    await asyncio.sleep(0)
    held.release.set()
    await first
    with pytest.raises(ValueError):
        await bad_put
    await good_put  # in the same batch as the bad one: unharmed
    assert relay.find_sync(good.queue_id) is not None


async def test_a_duplicate_queue_id_is_refused_in_one_batch_and_across_batches(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    held = _HeldSync(monkeypatch)
    env = _env()
    first = asyncio.ensure_future(relay.put(env, DATA))
    await held.wait_inside()
    twin = _env()
    puts = [asyncio.ensure_future(relay.put(twin, b"one")),
            asyncio.ensure_future(relay.put(twin, b"two"))]
    await _queued(2, relay)
    held.release.set()
    await first
    results = await asyncio.gather(*puts, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], FileExistsError)
    with pytest.raises(FileExistsError):
        await relay.put(env, b"again")  # still live in the log
    relay.close()
    relay.unlock()
    assert await _recovered(relay.root) == {env.queue_id: DATA, twin.queue_id: b"one"}


# -- closing with puts in flight ----------------------------------------------

async def test_closing_with_puts_in_flight_answers_every_put_and_loses_none(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Puts queued before the close are written; one queued after the close's stop
    marker (from another thread's close) is answered -- written or refused -- and the
    close does not hang."""
    held = _HeldSync(monkeypatch)
    first_env = _env()
    first = asyncio.ensure_future(relay.put(first_env, DATA))
    await held.wait_inside()
    early_env = _env()
    early = asyncio.ensure_future(relay.put(early_env, DATA))
    await _queued(1, relay)
    lane = relay._lane
    assert lane is not None
    closer = threading.Thread(target=lane.close)
    closer.start()
    await _queued(2, relay)  # the close's stop marker is in
    late_env = _env()
    late = asyncio.ensure_future(relay.put(late_env, DATA))
    await asyncio.sleep(0)
    held.release.set()
    await asyncio.to_thread(closer.join, 30)
    assert not closer.is_alive(), "the close hung"
    await first
    await early
    late_result = await asyncio.wait_for(asyncio.gather(late, return_exceptions=True), 30)
    relay.close()
    relay.unlock()
    back = await _recovered(relay.root)
    assert {first_env.queue_id, early_env.queue_id} <= set(back)
    if late_result[0] is None:  # acknowledged: then it must be there
        assert late_env.queue_id in back


# -- readers (the command line, the console) and operators --------------------

async def test_a_command_line_delete_of_a_message_in_the_log_lets_the_relay_go_of_it(
        relay: Spool) -> None:
    """``beacon-proxy queue delete`` marks the record done on disk and leaves a request;
    the relay, taking the request, lets go of the record too (else its segment stays
    on disk until the next start, and the relay still reads the deleted message)."""
    env, other = _env(), _env()
    await relay.put(env, DATA)
    await relay.put(other, DATA)
    reader = Spool(relay.root)
    assert reader.delete_sync(env.queue_id)
    reader.request_sync("delete", env.queue_id)
    assert reader.find_sync(env.queue_id) is None
    assert await relay.take_requests() == [("delete", env.queue_id)]
    assert relay.find_sync(env.queue_id) is None
    await relay.remove(other.queue_id)  # delivered: nothing live is left
    lane = relay._lane
    assert lane is not None and lane.live() == 0


async def test_a_delete_that_raced_the_write_out_still_deletes(relay: Spool) -> None:
    """The command line's delete ran while the relay wrote the message out as a queue
    file (it looked for the file first, then the record was let go of): the message
    found nothing to remove.  The relay, taking the request, removes it for good, so
    a restart does not bring back a message the operator deleted."""
    env = _env()
    await relay.put(env, DATA)
    # The relay's first attempt ends (written out to deferred/) and the command line's
    # request arrives with nothing removed.
    entry = QueueEntry.new(env)
    entry.state, entry.attempts, entry.next_attempt = "deferred", 1, 1.0
    await relay.finish_attempt(entry)
    Spool(relay.root).request_sync("delete", env.queue_id)
    assert await relay.take_requests() == [("delete", env.queue_id)]
    relay.close()
    relay.unlock()
    assert await _recovered(relay.root) == {}


async def test_a_delete_of_a_message_whose_segment_was_just_removed(relay: Spool) -> None:
    lane = relay._lane
    assert lane is not None
    lane.segment_bytes = 16 * 64  # turned over when nothing in it is live
    env = _env()
    await relay.put(env, DATA)
    reader = Spool(relay.root)
    listed = reader.ids_sync()
    assert listed == [(env.queue_id, "active")]
    await relay.remove(env.queue_id)  # delivered
    await relay.put(_env(), b"next")  # a new segment; the old one is removed
    assert reader.load_some_sync(listed) == []
    assert not reader.delete_sync(env.queue_id)
    assert reader.find_sync(env.queue_id) is None
    assert not list((relay.root / "log").glob("*.done"))  # nothing left behind


async def test_readers_racing_appends_and_forgets_see_only_true_messages(
        relay: Spool) -> None:
    """A reader thread lists, finds, reads and deletes while the relay appends,
    forgets and turns small segments over: whatever it sees is a queued message with
    its own bytes (never another message's, never an error)."""
    lane = relay._lane
    assert lane is not None
    lane.segment_bytes = 2048  # many segments, each removed once done
    sent: dict[str, bytes] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    seen = [0]

    def reader() -> None:
        spool = Spool(relay.root)
        for _ in range(100_000):  # bounded; ends when the relay side is done
            if stop.is_set():
                break
            try:
                for entry in spool.list_sync():
                    seen[0] += 1
                    try:
                        data = spool.read_data_sync(entry)
                    except FileNotFoundError:
                        continue
                    assert data == sent[entry.queue_id], entry.queue_id
                    found = spool.find_sync(entry.queue_id)
                    assert found is None or found.queue_id == entry.queue_id
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(300):
            env = _env()
            data = b"Subject: %d\r\n\r\n" % n + b"x" * (n % 97)
            sent[env.queue_id] = data
            await relay.put(env, data)
            if n % 3:
                await relay.remove(env.queue_id)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)
    assert not errors, errors
    assert seen[0] > 0


async def test_segment_numbers_are_not_reused_while_the_relay_runs(relay: Spool) -> None:
    """A segment removed once done, then a new one: a new number, so that a reader's
    place in the old one (its listing) never reads the new one's bytes."""
    lane = relay._lane
    assert lane is not None
    lane.segment_bytes = 16 * 64  # retired when empty past 64 bytes
    numbers = []
    for _ in range(4):
        env = _env()
        await relay.put(env, DATA)
        numbers.append(_segment_files(relay.root)[-1].name)
        await relay.remove(env.queue_id)
    assert len(set(numbers)) == 4, numbers


async def test_log_moved_aside_while_the_relay_runs(relay: Spool) -> None:
    """What is accepted after an operator moved ``log/`` aside is in a new ``log/``,
    where the next start looks (never in the moved-away folder)."""
    await relay.put(_env(), DATA)
    os.rename(relay.root / "log", relay.root / "log.old")
    env = _env()
    await relay.put(env, b"after the move")
    assert [r.queue_id for r in live_records(relay.root / "log")] == [env.queue_id]
    again = _env()
    (relay.root / "log").rename(relay.root / "log.2")  # moved aside, none made
    await relay.put(again, b"again")
    assert [r.queue_id for r in live_records(relay.root / "log")] == [again.queue_id]
    relay.close()
    relay.unlock()
    assert await _recovered(relay.root) == {again.queue_id: b"again"}


async def test_adopting_a_part_whose_write_out_was_cut_by_a_crash(tmp_path: Path) -> None:
    """A worker killed while it wrote a record out as a queue file leaves ``tmp/<id>``
    and the live record: adoption (a smaller worker count) still moves the message."""
    root = tmp_path / "spool"
    part = part_root(root, 1)
    spool = _relay(part)
    env = _env()
    try:
        await spool.put(env, DATA)
    finally:
        spool.close()
        spool.unlock()
    (part / "tmp" / env.queue_id).write_bytes(b"BEACONQ1 half")
    into = part_root(root, 0)
    target = _relay(into)
    try:
        assert await asyncio.to_thread(adopt, into, part) == 1
    finally:
        target.close()
        target.unlock()
    assert await _recovered(into) == {env.queue_id: DATA}


async def test_a_reader_sees_a_message_that_leaves_the_log_while_it_looks(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay writes a message out (its first attempt deferred it) and lets go of
    its record while the command line looks for it: the reader finds it, in the log or
    in ``deferred/`` (looking in the folders first, then the log, it found neither, and
    ``queue delete`` or ``retry`` answered that it was not queued)."""
    real = live_records
    moving: list[str] = []  # the message the relay writes out at the reader's next scan

    def racing(directory: Path, *args: Any, **kwargs: Any) -> list[seglog.LogRecord]:
        if moving:  # the relay, meanwhile: written out to deferred/, then let go of
            relay._finish_sync(moving.pop(), {"a": 1, "next": 1.0, "t": 1.0}, "deferred")
        return real(directory, *args, **kwargs)

    monkeypatch.setattr("beacon_proxy.spool.queue.live_records", racing)
    reader = Spool(relay.root)
    for look in ("list", "find"):
        env = _env()
        await relay.put(env, DATA)
        moving.append(env.queue_id)
        if look == "list":
            assert (env.queue_id, "deferred") in reader.ids_sync()
        else:
            found = reader.find_sync(env.queue_id)
            assert found is not None and found.state == "deferred"
        assert not moving


async def test_a_new_log_folder_is_durable_in_the_spool_before_a_put_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``log/`` made by the spool (at open, or by a put after an operator moved the old
    one aside): the spool folder is fsynced, so the folder's name survives a power loss
    with the records in it."""
    synced: list[Path] = []
    real = fsync_dir_real

    def fsync_dir(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr("beacon_proxy.spool.log.fsync_dir", fsync_dir)
    relay = _relay(tmp_path / "spool")
    try:
        assert synced == [relay.root]  # at open
        synced.clear()
        await relay.put(_env(), DATA)
        assert synced == [relay.root / "log"]  # the new segment's name
        os.rename(relay.root / "log", relay.root / "log.old")
        synced.clear()
        await relay.put(_env(), DATA)
        assert synced[:2] == [relay.root, relay.root / "log"]
        synced.clear()
        await relay.put(_env(), DATA)
        assert synced == []  # an existing folder, an existing segment: no directory sync
    finally:
        relay.close()
        relay.unlock()


async def test_a_delete_request_whose_removal_fails_stays_to_be_tried_again(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env()
    await relay.put(env, DATA)
    Spool(relay.root).request_sync("delete", env.queue_id)
    real = relay._remove_sync
    failures = [OSError(errno.EIO, "Input/output error")]

    def remove(queue_id: str) -> None:
        if failures:
            raise failures.pop()
        real(queue_id)

    monkeypatch.setattr(relay, "_remove_sync", remove)
    assert await relay.take_requests() == [("delete", env.queue_id)]
    assert (relay.control / f"delete.{env.queue_id}").exists()
    assert relay.find_sync(env.queue_id) is not None
    assert await relay.take_requests() == [("delete", env.queue_id)]
    assert not any(relay.control.iterdir())
    assert relay.find_sync(env.queue_id) is None


async def test_a_batch_of_more_parts_than_one_writev_takes(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 puts in one batch: 1500 parts, more than IOV_MAX (1024) in one ``writev``."""
    held = _HeldSync(monkeypatch)
    first = asyncio.ensure_future(relay.put(_env(), DATA))
    await held.wait_inside()
    sent = {}
    puts = []
    for n in range(300):
        env, data = _env(), b"Subject: %d\r\n\r\n" % n
        sent[env.queue_id] = data
        puts.append(asyncio.ensure_future(relay.put(env, data)))
    await _queued(300, relay)
    held.release.set()
    await first
    await asyncio.gather(*puts)
    relay.close()
    relay.unlock()
    back = await _recovered(relay.root)
    assert {q: back[q] for q in sent} == sent


async def test_a_recovery_cut_short_by_a_crash_is_finished_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery writes the log's records out one by one, then removes the segments: a
    crash after some of them (a queue file written, one half written in tmp/) and the
    next recovery finds every message once."""
    root = tmp_path / "spool"
    spool = _relay(root)
    sent = {}
    try:
        for n in range(5):
            env, data = _env(), b"Subject: %d\r\n\r\n" % n
            sent[env.queue_id] = data
            await spool.put(env, data)
    finally:
        spool.close()
        spool.unlock()
    crashing = Spool(root)
    real = crashing._write_file
    calls = [0]

    def write_file(queue_id: str, env: bytes, data: bytes, into: Path) -> None:
        calls[0] += 1
        if calls[0] == 3:
            (crashing.tmp / queue_id).write_bytes(b"BEACONQ1 half")
            raise SystemExit("killed")  # the process ends here
        real(queue_id, env, data, into)

    monkeypatch.setattr(crashing, "_write_file", write_file)
    with pytest.raises(SystemExit):
        crashing.settle_log_sync()
    assert len(list((root / "active").iterdir())) == 2 and _segment_files(root)
    assert await _recovered(root) == sent


async def test_adopting_parts_keeps_every_damaged_stretch(tmp_path: Path) -> None:
    """Each part numbers its segments from 1: the damaged stretches two parts kept under
    the same name both survive being adopted into one."""
    root = tmp_path / "spool"
    kept = set()
    for index in (1, 2):
        part = part_root(root, index)
        raw, sent = await _three_records(part)
        damaged = bytearray(raw)
        damaged[sent[1][2] - 5] ^= 0x01
        (seg,) = _segment_files(part)
        seg.write_bytes(bytes(damaged))
        kept.add(bytes(damaged[sent[0][2]:sent[1][2]]))
    into = part_root(root, 0)
    target = _relay(into)
    try:
        for index in (1, 2):
            assert await asyncio.to_thread(adopt, into, part_root(root, index)) == 2
    finally:
        target.close()
        target.unlock()
    assert {p.read_bytes() for p in (into / "corrupt").iterdir()} == kept


async def test_a_delete_taken_while_the_relay_writes_the_message_out(
        relay: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay takes an operator's delete (in another thread) while the end of the
    message's first attempt writes it out: the delete lets go of the record before the
    file exists; the write-out, finding the record gone, removes its file."""
    env = _env()
    await relay.put(env, DATA)
    real = relay._write_out

    def write_out(record: seglog.LogRecord, into: Path) -> None:
        real(record, into)
        Spool(relay.root).request_sync("delete", env.queue_id)
        assert relay._take_requests_sync() == [("delete", env.queue_id)]

    monkeypatch.setattr(relay, "_write_out", write_out)
    relay._finish_sync(env.queue_id, {"a": 1, "next": 1.0, "t": 1.0}, "deferred")
    relay.close()
    relay.unlock()
    assert await _recovered(relay.root) == {}
