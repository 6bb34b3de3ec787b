"""MaildirCourier: durable, exact, uniquely named files in new/."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from beacon_proxy.deliver.courier import Outcome, Result
from beacon_proxy.deliver.maildir import MaildirCourier

DATA = b"Subject: hi\r\n\r\n.line with a dot\r\n\xc3\xa9 8bit\r\nno final newline"
NAME = re.compile(r"\d+\.M\d+P\d+Q\d+\.[^/:]+")
ENVELOPE = b"Return-Path: <a@example.org>\r\nDelivered-To: b@example.net\r\n"


async def deliver(courier: MaildirCourier, data: bytes = DATA) -> Result:
    return await asyncio.wait_for(courier.deliver("a@example.org", "b@example.net", data), 10)


async def test_delivers_exact_bytes_into_new(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    result = await deliver(MaildirCourier(box))
    assert result == Result(Outcome.DELIVERED, 250, "250 2.0.0 delivered to maildir", "2.0.0",
                            "maildir")
    [file] = (box / "new").iterdir()
    assert file.read_bytes() == ENVELOPE + DATA
    assert NAME.fullmatch(file.name)
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()


async def test_names_are_unique_across_couriers(tmp_path: Path) -> None:
    couriers = [MaildirCourier(tmp_path), MaildirCourier(tmp_path)]
    results = await asyncio.wait_for(asyncio.gather(
        *(c.deliver("", "b@example.net", b"%d\r\n" % i)
          for i in range(40) for c in couriers)), 10)
    assert all(r.ok for r in results)
    files = list((tmp_path / "new").iterdir())
    assert len(files) == 80
    envelope = b"Return-Path: <>\r\nDelivered-To: b@example.net\r\n"
    assert sorted(f.read_bytes() for f in files) == sorted(
        [envelope + b"%d\r\n" % i for i in range(40)] * 2)
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_path_that_is_a_file_is_temporary(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_bytes(b"x")
    result = await deliver(MaildirCourier(path))
    assert (result.outcome, result.code, result.status, result.remote) == (
        Outcome.TEMPORARY, 451, "4.3.0", "maildir")
    assert result.reply.startswith("451 4.3.0 maildir write failed: ")
    assert "\n" not in result.reply


async def test_recovers_when_the_maildir_reappears(tmp_path: Path) -> None:
    box = tmp_path / "box"
    courier = MaildirCourier(box)
    assert (await deliver(courier)).ok
    for sub in ("tmp", "new", "cur"):
        for f in (box / sub).iterdir():
            f.unlink()
        (box / sub).rmdir()
    box.rmdir()
    assert (await deliver(courier)).outcome is Outcome.TEMPORARY
    assert (await deliver(courier)).ok  # the directories are made again
    assert len(list((box / "new").iterdir())) == 1
    await courier.close()
