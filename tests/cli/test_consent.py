"""``beacon-proxy consent ...`` against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main

Cap = pytest.CaptureFixture[str]


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_set_get_list_history(config: Path, capsys: Cap) -> None:
    assert main(["consent", "set", "Ann@Example.org", "--beacons", "granted",
                 "--source", "form"]) == 0
    assert capsys.readouterr().out == "Ann@example.org: beacons granted\n"
    assert main(["consent", "get", "ann@example.org"]) == 0
    out = capsys.readouterr().out
    assert "Ann@example.org" in out and "granted" in out and "form" in out
    assert main(["consent", "get", "ANN@example.org", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["address"], got["beacons"], got["effective"], got["source"]) == (
        "Ann@example.org", "granted", "granted", "form")
    assert str(got["actor"]).startswith("cli")
    assert main(["consent", "set", "bob@example.org", "--beacons", "refused", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["beacons"] == "refused"
    assert main(["consent", "list"]) == 0
    out = capsys.readouterr().out
    assert "Ann@example.org" in out and "bob@example.org" in out and "2 record(s)" in out
    assert main(["consent", "list", "--beacons", "refused", "--json"]) == 0
    assert [r["address"] for r in _json_lines(capsys.readouterr().out)] == ["bob@example.org"]
    assert main(["consent", "set", "ann@example.org", "--beacons", "refused"]) == 0
    capsys.readouterr()
    assert main(["consent", "history", "ann@example.org", "--json"]) == 0
    changes = [(e["old"], e["new"]) for e in _json_lines(capsys.readouterr().out)]
    assert changes == [(None, "granted"), ("granted", "refused")]
    assert main(["consent", "history", "ann@example.org"]) == 0
    assert "granted -> refused" in capsys.readouterr().out


def test_get_an_unknown_recipient_shows_the_default(config: Path, capsys: Cap) -> None:
    assert main(["consent", "get", "new@example.org"]) == 0
    assert "unknown (no record), treated as refused" in capsys.readouterr().out
    assert main(["consent", "get", "new@example.org", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["beacons"], got["effective"], got["suppressions"]) == ("unknown", "refused", [])


def test_get_json_of_an_unknown_recipient_names_the_address(config: Path, capsys: Cap) -> None:
    config.write_text(config.read_text() + '[policy]\nunknown = "granted"\n')
    assert main(["consent", "get", " New@Example.ORG ", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["address"], got["beacons"], got["effective"]) == (
        "New@example.org", "unknown", "granted")


def test_bad_input_is_one_line_and_nonzero(config: Path, capsys: Cap) -> None:
    assert main(["consent", "set", "nobody", "--beacons", "granted"]) == 1
    err = capsys.readouterr().err
    assert err == "beacon-proxy: bad address: the address has no @domain\n"
    assert main(["consent", "set", "a@example.org", "--beacons", "granted",
                 "--source", "x" * 201]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["consent", "set", "a@example.org", "--beacons", "maybe"])
    assert info.value.code == 2
    capsys.readouterr()


def test_bad_config_and_unreachable_store(tmp_path: Path, capsys: Cap) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nurl = 'mysql://x'\n")
    assert main(["consent", "get", "a@example.org", "--config", str(bad)]) == 2
    assert "store.url" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    blocked = tmp_path / "blocked.toml"
    blocked.write_text(f"[store]\nurl = 'sqlite:///{tmp_path / 'file' / 'x.db'}'\n")
    assert main(["consent", "get", "a@example.org", "--config", str(blocked),
                 "--create-store"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("beacon-proxy: cannot open the consent store") and err.count("\n") == 1
    down = tmp_path / "down.toml"
    down.write_text("[store]\nurl = 'postgresql://postgres@127.0.0.1:1/none'\n")
    assert main(["consent", "get", "a@example.org", "--config", str(down)]) == 1
    assert "cannot open the consent store" in capsys.readouterr().err


def test_import_export_dry_run_and_errors(config: Path, tmp_path: Path, capsys: Cap) -> None:
    good = tmp_path / "good.csv"
    good.write_text("address,beacons,source\na@example.org,granted,\nb@example.org,refused,web\n")
    assert main(["consent", "import", str(good), "--dry-run"]) == 0
    assert "2 rows valid (dry run: nothing applied)" in capsys.readouterr().out
    assert main(["consent", "list", "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["consent", "import", str(good)]) == 0
    assert "imported 2 rows" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("address,beacons,source\nc@example.org,granted,\nd@example.org,perhaps,\n")
    assert main(["consent", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == (f"beacon-proxy: {bad}: line 3: beacons: must be granted, refused or unknown, "
                   "got 'perhaps'; nothing imported\n")
    assert main(["consent", "get", "c@example.org", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["beacons"] == "unknown"
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("address,beacons,source\nj\u00f6rg@example.org,granted,\n".encode("latin-1"))
    assert main(["consent", "import", str(latin)]) == 1
    assert "line 2: not UTF-8 text" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["consent", "import", str(empty)]) == 1
    assert "line 1: the file is empty" in capsys.readouterr().err
    header = tmp_path / "header.csv"
    header.write_text("email,consent\n")
    assert main(["consent", "import", str(header)]) == 1
    assert "wrong header: expected address,beacons,source" in capsys.readouterr().err
    assert main(["consent", "import", str(tmp_path / "missing.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    out = tmp_path / "out" / "export.csv"
    out.parent.mkdir()
    assert main(["consent", "export", str(out)]) == 0
    assert "exported 2 rows" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == "address,beacons,source,actor,updated_at" and len(lines) == 3
    assert lines[2].startswith("b@example.org,refused,web,cli")
    assert main(["consent", "export"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_forget(config: Path, capsys: Cap) -> None:
    main(["consent", "set", "z@example.org", "--beacons", "granted"])
    main(["suppress", "add", "z@example.org", "--reason", "asked"])
    capsys.readouterr()
    assert main(["consent", "forget", "z@example.org", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done == {"consent": True, "opens": 0, "suppressions": 1, "audit": 2,
                    "forwards": 0}
    assert main(["consent", "forget", "z@example.org"]) == 0
    assert "consent record absent" in capsys.readouterr().out
    assert main(["consent", "get", "z@example.org", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["beacons"] == "unknown" and got["suppressions"][0]["forgotten"] is True


def test_help(capsys: Cap) -> None:
    for args in (["consent", "-h"], ["consent", "import", "-h"], ["suppress", "-h"],
                 ["events", "opens", "-h"], ["hash-token", "-h"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_reimport_says_how_many_rows_changed(config: Path, tmp_path: Path,
                                             capsys: Cap) -> None:
    rows = tmp_path / "c.csv"
    rows.write_text("address,beacons,source\na@example.org,granted,\nb@example.org,refused,\n")
    assert main(["consent", "import", str(rows)]) == 0
    assert "imported 2 rows, 2 changed" in capsys.readouterr().out
    assert main(["consent", "import", str(rows)]) == 0
    assert "imported 2 rows, 0 changed" in capsys.readouterr().out
    assert main(["consent", "history", "a@example.org", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one audit entry, not two
