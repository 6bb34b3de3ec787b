"""``beacon-proxy serve`` refusing to start: one line first, nothing created."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import ROOT, free_port


def _serve(workdir: Path, config: str) -> subprocess.CompletedProcess[str]:
    (workdir / "c.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "beacon_proxy", "serve", "--config", "c.toml"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def test_a_port_in_use_is_said_first_and_nothing_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
                                f'[web]\nlisten = "127.0.0.1:{port}"\n')
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"beacon-proxy: cannot start: web.listen 127.0.0.1:{port}: address already in use"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no var/


def test_an_unusable_spool_names_spool_path(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.write_text("a file where the spool folder should be")
    done = _serve(tmp_path, f'[spool]\npath = "{spool}"\n'
                            f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
                            f'[web]\nlisten = "127.0.0.1:{free_port()}"\n')
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"beacon-proxy: cannot start: cannot use spool.path {spool}: ")
    assert "token.secret" not in line.split(":", 3)[2]
