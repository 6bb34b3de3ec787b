"""The ``beacon-proxy`` entry point stays light: a store command imports no server stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "aiosmtpd", "aiosmtplib", "beacon_proxy.app", "beacon_proxy.rewrite.engine",
         "beacon_proxy.web.server", "beacon_proxy.smtpd.server", "prometheus_client")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("argv", [
    ["--help"], ["consent", "get", "a@example.org"], ["hash-token", "--help"], ["scan", "--help"],
])
def test_commands_import_only_what_they_need(argv: list[str], tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    # --create-store: the store is opened (and created), as on a relay's existing store.
    args = [*argv, "--config", str(config), "--create-store"] if argv[0] == "consent" else argv
    code = ("from beacon_proxy.cli.main import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass")
    loaded = _imported_after(code)
    assert [m for m in HEAVY if m in loaded] == []


@pytest.mark.parametrize("action", ["list", "export"])
def test_a_closed_pipe_ends_a_listing_quietly(action: str, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "c.db"}"\n')
    rows = tmp_path / "rows.csv"  # far more than a pipe holds: the writer meets the closed end
    rows.write_text("address,beacons,source\n" + "".join(
        f"reader-{n:05d}-with-a-long-local-part@example.org,granted,crm\n" for n in range(8000)))
    cli = [sys.executable, "-m", "beacon_proxy"]
    subprocess.run([*cli, "consent", "import", str(rows), "--config", str(config),
                    "--create-store"], cwd=ROOT, capture_output=True, timeout=300, check=True)
    with subprocess.Popen([*cli, "consent", action, "--config", str(config)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 0, err
    assert first
    assert err == b""
