"""``beacon-proxy suppress ...`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main

Cap = pytest.CaptureFixture[str]


def test_add_list_remove(config: Path, capsys: Cap) -> None:
    assert main(["suppress", "add", "Bob@Example.org", "--list", "News <news.example.org>",
                 "--reason", "clicked"]) == 0
    assert capsys.readouterr().out == "Bob@example.org: suppressed for list news.example.org\n"
    assert main(["suppress", "add", "carol@example.org", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["list_id"] is None
    assert main(["suppress", "list"]) == 0
    out = capsys.readouterr().out
    assert "Bob@example.org  (clicked)" in out and "every list" in out
    assert "2 suppression(s)" in out
    assert main(["suppress", "list", "--global", "--json"]) == 0
    assert [json.loads(x)["address"] for x in capsys.readouterr().out.splitlines()] == [
        "carol@example.org"]
    assert main(["suppress", "list", "--list", "news.example.org", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["suppress", "remove", "bob@example.org"]) == 1
    assert capsys.readouterr().err == (
        "beacon-proxy: bob@example.org is not suppressed for every list\n")
    assert main(["suppress", "remove", "bob@example.org", "--list", "news.example.org"]) == 0
    assert "lifted" in capsys.readouterr().out
    assert main(["suppress", "add", "x@example.org", "--list", "two words"]) == 1
    assert capsys.readouterr().err.startswith("beacon-proxy: list: not a list id")


def test_import_export(config: Path, tmp_path: Path, capsys: Cap) -> None:
    src = tmp_path / "s.csv"
    src.write_text("address,list,reason\na@example.org,,complaint\nb@example.org,n.example.org,\n")
    assert main(["suppress", "import", str(src)]) == 0
    assert "imported 2 rows" in capsys.readouterr().out
    assert main(["suppress", "export"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "address,list,reason,source,actor,created_at"
    assert lines[1].startswith("a@example.org,,complaint,csv:s.csv,cli")
    bad = tmp_path / "bad.csv"
    bad.write_text("address,list,reason\nc@example.org,,\nd@,,\n")
    assert main(["suppress", "import", str(bad), "--dry-run"]) == 1
    assert "line 3: bad address 'd@'" in capsys.readouterr().err
