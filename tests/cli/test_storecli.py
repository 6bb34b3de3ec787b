"""Store commands never silently create an empty store the relay does not use."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon_proxy.cli.main import main

Cap = pytest.CaptureFixture[str]


@pytest.mark.parametrize("argv", [
    ["consent", "set", "a@example.org", "--beacons", "granted"],
    ["consent", "get", "a@example.org"],
    ["suppress", "add", "a@example.org"],
    ["suppress", "list"],
    ["events", "opens"],
    ["consent", "export"],
])
def test_a_missing_sqlite_store_is_an_error(argv: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: Cap) -> None:
    # Run from a directory where the relay never ran, with no configuration: the
    # built-in default ./var/beacon-proxy.db is not the relay's store.
    monkeypatch.delenv("BEACON_PROXY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    db = tmp_path / "var" / "beacon-proxy.db"
    assert err.count("\n") == 1
    assert err.startswith(f"beacon-proxy: no consent store at {db} (configuration: built-in "
                          "defaults)")
    assert "--config" in err and "--create-store" in err
    assert not db.exists() and not db.parent.exists()


def test_create_store_creates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: Cap) -> None:
    config = tmp_path / "etc" / "c.toml"
    config.parent.mkdir()
    config.write_text("[store]\nurl = 'sqlite:///state/bp.db'\n")
    csv = tmp_path / "consent.csv"
    csv.write_text("address,beacons,source\na@example.org,granted,form\n")
    monkeypatch.chdir(tmp_path)
    assert main(["consent", "import", str(csv), "--config", str(config)]) == 1
    assert f"no consent store at {config.parent / 'state' / 'bp.db'} (configuration: {config})" \
        in capsys.readouterr().err
    # Import consent before the relay's first start.
    assert main(["consent", "import", str(csv), "--config", str(config), "--create-store"]) == 0
    capsys.readouterr()
    assert (config.parent / "state" / "bp.db").is_file()
    # From anywhere, with the same file: the same store (paths are relative to the file).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["consent", "get", "a@example.org", "--config", str(config)]) == 0
    assert "granted" in capsys.readouterr().out


def test_dry_run_import_needs_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: Cap) -> None:
    monkeypatch.delenv("BEACON_PROXY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "consent.csv"
    csv.write_text("address,beacons,source\na@example.org,granted,form\n")
    assert main(["consent", "import", str(csv), "--dry-run"]) == 0
    assert "1 rows valid" in capsys.readouterr().out
    assert not (tmp_path / "var").exists()
