from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import Spool

DATA = b"Subject: queued\r\nMessage-ID: <m1@x.org>\r\n\r\nbody\r\n"


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Spool:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[spool]\npath = "{tmp_path / "spool"}"\n')
    monkeypatch.setenv("BEACON_PROXY_CONFIG", str(cfg))
    spool = Spool(tmp_path / "spool")
    spool.open()
    return spool


def _put(spool: Spool) -> str:
    env = Envelope(new_queue_id(), "s@x.org", ("a@y.org", "b@y.org"), message_id="<m1@x.org>",
                   size=len(DATA))

    async def go() -> None:
        await spool.put(env, DATA)
        await spool.record(env.queue_id, 0, "delivered", "250 ok")
        await spool.record(env.queue_id, 1, "deferred", "451 4.3.0 later")

    asyncio.run(go())
    return env.queue_id


def test_list_and_show(configured: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "list"]) == 0
    assert "queue is empty" in capsys.readouterr().out
    qid = _put(configured)
    assert main(["queue", "list"]) == 0
    out = capsys.readouterr().out
    assert qid in out and "1/2" in out and "s@x.org" in out
    assert main(["queue", "list", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    item = json.loads(line)
    assert item["queue_id"] == qid
    assert [r["state"] for r in item["recipients"]] == ["delivered", "deferred"]
    assert main(["queue", "show", qid]) == 0
    out = capsys.readouterr().out
    assert "451 4.3.0 later" in out and "Subject: queued" in out
    assert main(["queue", "show", qid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["message_id"] == "<m1@x.org>" and "Subject: queued" in shown["headers"]


def test_show_unknown_or_bad_id(configured: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "show", "NOPE"]) == 1
    assert "no message NOPE" in capsys.readouterr().err
    assert main(["queue", "show", "../etc"]) == 1
    assert "not a queue id" in capsys.readouterr().err


def test_missing_spool_and_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[spool]\npath = "{tmp_path / "none"}"\n')
    assert main(["queue", "list", "--config", str(cfg)]) == 1
    assert "no spool" in capsys.readouterr().err
    cfg.write_text("[spool]\npaht = 'x'\n")
    assert main(["queue", "list", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "spool.paht" in err and len(err.strip().splitlines()) == 1


def test_retry_and_delete_leave_requests(configured: Spool,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    qid = _put(configured)
    assert main(["queue", "retry", qid]) == 0
    assert main(["queue", "retry", "--all"]) == 0
    assert main(["queue", "retry", "NOPE"]) == 1
    assert main(["queue", "delete", qid]) == 0
    assert "deleted" in capsys.readouterr().out
    assert configured.find_sync(qid) is None
    assert not (configured.journal / f"{qid}.log").exists()
    assert main(["queue", "delete", qid]) == 1
    assert "no message" in capsys.readouterr().err
    requests = asyncio.run(configured.take_requests())
    assert sorted(requests) == sorted([("retry", qid), ("retry", "ALL"), ("delete", qid)])
    assert asyncio.run(configured.take_requests()) == []


def test_retry_and_delete_say_what_they_did_in_json(configured: Spool,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    qid = _put(configured)
    capsys.readouterr()
    assert main(["queue", "retry", qid, "--json"]) == 0
    assert main(["queue", "retry", "--all", "--json"]) == 0
    assert main(["queue", "delete", qid, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"action": "retry", "queue_id": qid, "requested": True},
                     {"action": "retry", "queue_id": None, "requested": True},
                     {"action": "delete", "queue_id": qid, "requested": True}]
    assert main(["queue", "delete", qid, "--json"]) == 1  # a bad request: no JSON, a reason
    out, err = capsys.readouterr()
    assert out == "" and "no message" in err and len(err.strip().splitlines()) == 1


def _unreadable(folder: Path, how: str) -> None:
    """``folder`` made unreadable: a file where it should be (works as root too), or
    mode 000 (skipped when this user, root, reads it anyway)."""
    if how == "file":
        folder.rmdir()
        folder.write_text("")
        return
    folder.chmod(0)
    if os.access(folder, os.R_OK):
        folder.chmod(0o700)
        pytest.skip("this user reads a mode 000 folder (root)")


@pytest.mark.parametrize("how", ["file", "mode000"])
@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["show", "ABC123"],
                                  ["retry", "ABC123"], ["retry", "--all"],
                                  ["delete", "ABC123"]])
def test_an_unreadable_spool_is_one_line_naming_the_key(
        configured: Spool, capsys: pytest.CaptureFixture[str], argv: list[str],
        how: str) -> None:
    folder = configured.root / "deferred"
    _unreadable(folder, how)
    try:
        assert main(["queue", *argv]) == 1
    finally:
        if folder.is_dir():
            folder.chmod(0o700)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"spool.path {configured.root}" in err and str(folder) in err


def test_every_part_is_listed_and_requests_go_to_the_owner(
        configured: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    from beacon_proxy.spool.parts import part_root

    parts = [Spool(part_root(configured.root, i)) for i in (0, 1)]
    for part in parts:
        part.open()
    ids = [_put(configured), _put(parts[0]), _put(parts[1])]
    assert main(["queue", "list", "--json"]) == 0
    listed = [json.loads(line)["queue_id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(ids)
    assert main(["queue", "show", ids[2]]) == 0
    assert "Subject: queued" in capsys.readouterr().out
    assert main(["queue", "retry", ids[2]]) == 0
    assert os.listdir(parts[1].control) == [f"retry.{ids[2]}"]
    assert os.listdir(parts[0].control) == []
    assert main(["queue", "delete", ids[1]]) == 0
    assert parts[0].find_sync(ids[1]) is None
    assert os.listdir(parts[0].control) == [f"delete.{ids[1]}"]
    assert main(["queue", "retry", "--all"]) == 0
    assert all("retry.ALL" in os.listdir(s.control) for s in (configured, *parts))
    capsys.readouterr()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_show_on_a_terminal_marks_escapes_and_overrides(
        configured: Spool, monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """A queued header may carry an escape sequence (OSC 52 sets the clipboard) or a
    right-to-left override: a terminal shows marks; a pipe gets the exact text."""
    evil = "Subject: Invoice \u202egpj.exe \x1b]52;c;ZXZpbA==\x07\rfake\r\n"
    env = Envelope(new_queue_id(), "s@x.org", ("a@y.org",), size=10, smtputf8=True)
    asyncio.run(configured.put(env, (evil + "\r\nbody\r\n").encode()))
    out = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["queue", "show", env.queue_id]) == 0
    assert sys.stdout is out  # restored
    text = out.getvalue()
    if terminal:
        assert ("Subject: Invoice <U+202E>gpj.exe <U+001B>]52;c;ZXZpbA==<U+0007><U+000D>fake\n"
                in text)
        assert not any(c in text for c in "\u202e\x1b\x07\r")
    else:
        assert "Subject: Invoice \u202egpj.exe \x1b]52;c;ZXZpbA==\x07\rfake\n" in text


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"Subject: a\r\nTo: b\r\n\r\nbody\r\n", "Subject: a\r\nTo: b\r\n"),
        (b"Subject: a\nTo: b\n\nbody\n", "Subject: a\nTo: b\n"),  # bare LF line ends
        (b"Subject: a\r\n\r\n", "Subject: a\r\n"),  # no body
        (b"Subject: a\r\nTo: b\r\n", "Subject: a\r\nTo: b\r\n"),  # a header only
        (b"\r\nSubject: in the body\r\n\r\nx\r\n", ""),  # no header: none shown
    ],
)
def test_show_prints_the_header_section(configured: Spool, capsys: pytest.CaptureFixture[str],
                                        data: bytes, shown: str) -> None:
    """The header ends at the first empty line, whatever the line ends (the one search,
    ``headerfacts.body_start``, that the console and the relay use too)."""
    env = Envelope(new_queue_id(), "s@x.org", ("a@y.org",), size=len(data))
    asyncio.run(configured.put(env, data))
    assert main(["queue", "show", env.queue_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["headers"] == shown
    assert main(["queue", "show", env.queue_id]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n\n" + shown.replace("\r\n", "\n") if shown else "\n\n\n")
