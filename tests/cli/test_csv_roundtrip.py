"""``consent``/``suppress`` export and import with hostile values, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main
from tests.cli.conftest import create_store
from tests.consent.pg import fresh_schema

Cap = pytest.CaptureFixture[str]
NewConfig = Callable[[], Path]

SOURCES = ["=1+2", "+SUM(A1)", "-3", "@cmd", "'=quoted", "''+twice", "'plain"]
ADDRESSES = ["=1+2@x.test", "-a@x.test", "+b@x.test", "'=c@x.test", "''-d@x.test",
             '"@e"@x.test', "'g@x.test"]
LISTS = ["=cmd.x.test", "-l.x.test", "+p.x.test", "'=r.x.test"]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_config(request: pytest.FixtureRequest, tmp_path: Path) -> NewConfig:
    """A factory of configuration files, each with a new, empty store."""
    database = request.getfixturevalue("pg_database") if request.param == "postgresql" else ""
    made: list[Path] = []

    def make() -> Path:
        n = len(made)
        url = (asyncio.run(fresh_schema(database)) if database
               else f"sqlite:///{tmp_path / f'store{n}' / 'bp.db'}")
        create_store(url)
        path = tmp_path / f"c{n}.toml"
        path.write_text(f'[store]\nurl = "{url}"\n')
        made.append(path)
        return path

    return make


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


@pytest.mark.parametrize("kind", ["consent", "suppress"])
def test_export_import_export(new_config: NewConfig, tmp_path: Path, capsys: Cap,
                              kind: str) -> None:
    first, second = new_config(), new_config()
    for i, address in enumerate(ADDRESSES):
        assert main(["consent", "set", "--config", str(first), "--beacons", "granted",
                     f"--source={SOURCES[i]}", "--", address]) == 0
        assert main(["suppress", "add", "--config", str(first), f"--list={LISTS[i % 4]}",
                     f"--reason={SOURCES[-1 - i]}", "--source==src", "--", address]) == 0
    exported, again = tmp_path / "first.csv", tmp_path / "again.csv"
    assert main([kind, "export", str(exported), "--config", str(first)]) == 0
    rows = _rows(exported)
    assert len(rows) == len(ADDRESSES) + 1
    assert all(cell[:1] not in "=+-@\t\r" or not cell for row in rows for cell in row)
    assert main([kind, "import", str(exported), "--config", str(second), "--source==src"]) == 0
    assert main([kind, "export", str(again), "--config", str(second)]) == 0
    assert [r[:-1] for r in _rows(again)] == [r[:-1] for r in rows]  # but the times
    capsys.readouterr()
    assert main(["consent", "get", "--json", "--config", str(second), "--", "-a@x.test"]) == 0
    # the values themselves, not their exported spelling
    out = capsys.readouterr().out
    assert ('"source": "+SUM(A1)"' if kind == "consent" else '"reason": "\'\'+twice"') in out


def test_undecodable_arguments_are_clear_errors(new_config: NewConfig, capsys: Cap) -> None:
    config = new_config()
    # what Python makes of an argument that is not UTF-8 (b"crm\xff")
    assert main(["consent", "set", "a@x.test", "--beacons", "granted", "--source=crm\udcff",
                 "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "beacon-proxy: source: is not valid Unicode text (lone surrogate U+DCFF)\n")
    assert main(["suppress", "add", "a\udcff@x.test", "--config", str(config)]) == 1
    assert "bad address: the address is not valid UTF-8" in capsys.readouterr().err


def test_a_file_name_that_is_not_text_still_imports(new_config: NewConfig, tmp_path: Path,
                                                    capsys: Cap) -> None:
    config = new_config()
    path = tmp_path / ("crm\x1b\n" + "x" * 220 + ".csv")  # control characters, too long
    path.write_bytes(b"address,beacons,source\r\na@x.test,granted,\r\n")
    assert main(["consent", "import", str(path), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["consent", "get", "a@x.test", "--json", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert '"source": "csv:crm??xxx' in out


def test_a_file_name_that_is_not_utf8_is_printed_not_a_crash(new_config: NewConfig,
                                                              tmp_path: Path) -> None:
    """The real process (its standard output is strict UTF-8): the result line shows the
    name with a replacement character instead of ending in UnicodeEncodeError."""
    config = new_config()
    path = tmp_path / os.fsdecode(b"crm\xff.csv")
    path.write_bytes(b"address,beacons,source\r\na@x.test,granted,\r\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-m", "beacon_proxy", "consent", "import", str(path),
                           "--config", str(config)], capture_output=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "crm\ufffd.csv: imported 1 rows, 1 changed (" in done.stdout.decode()
