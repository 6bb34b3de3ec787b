"""``beacon-proxy events opens`` against a SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.config import load_config
from beacon_proxy.consent.store import open_store

Cap = pytest.CaptureFixture[str]


def test_events_opens(config: Path, capsys: Cap) -> None:
    async def seed() -> None:
        async with open_store(load_config(config).store.url) as store:
            await store.set_consent("yes@example.org", "granted")
            await store.record_open("yes@example.org", list_id="n.example.org", ua_class="browser")
            await store.record_open("yes@example.org", machine=True)

    asyncio.run(seed())
    assert main(["events", "opens"]) == 0
    out = capsys.readouterr().out
    assert "yes@example.org  n.example.org" in out and "machine" in out and "2 open(s)" in out
    assert main(["events", "opens", "--json", "--since", "2000-01-01", "--list",
                 "n.example.org"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["ua_class"] == "browser"
    assert main(["events", "opens", "--json", "--since", "2999-01-01T00:00:00+02:00"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["events", "opens", "--limit", "1", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["events", "opens", "--machine", "no", "--json"]) == 0
    assert [json.loads(x)["machine"] for x in capsys.readouterr().out.splitlines()] == [False]
    assert main(["events", "opens", "--machine", "yes"]) == 0
    assert "1 open(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["events", "opens", "--since", "yesterday"])
    assert info.value.code == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_events_forwards(config: Path, capsys: Cap) -> None:
    async def seed() -> None:
        async with open_store(load_config(config).store.url) as store:
            first = await store.queue_forward("https://l.example.com/u/1", address="a@example.org",
                                              list_id="n.example.org")
            await store.queue_forward("https://l.example.com/u/2", address="b@example.org",
                                      list_id=None)
            await store.claim_forwards(1, 60)
            await store.forward_failed(first, error="HTTP 404")

    asyncio.run(seed())
    assert main(["events", "forwards"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1  failed  ") and "attempts 1" in out[0]
    assert out[0].endswith("a@example.org  n.example.org  https://l.example.com/u/1  HTTP 404")
    assert out[1].startswith("2  pending  ") and out[1].endswith("-  https://l.example.com/u/2")
    assert out[2] == "2 forward(s)"
    assert main(["events", "forwards", "--state", "pending", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) | {"created_at": "", "next_at": ""} == {
        "id": 2, "url": "https://l.example.com/u/2", "address": "b@example.org",
        "list_id": None, "attempts": 0, "created_at": "", "next_at": "", "state": "pending",
        "last_error": None}
    assert main(["events", "forwards", "--limit", "1", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main(["events", "forwards", "--state", "stuck"])
    assert info.value.code == 2
