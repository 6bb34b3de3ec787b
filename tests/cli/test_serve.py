"""``beacon-proxy serve`` refusing to start: one line first, nothing created."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

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


# -- the heap of a serving process (cli/serve.py: settle_heap) ---------------------

def test_settle_heap_freezes_start_up_and_raises_the_young_threshold() -> None:
    """In a process of its own (a frozen heap would stay frozen in the tests' process):
    every object alive is moved out of the collector's way, and the youngest
    generation's threshold is raised (Python's default: 700, 2000 from 3.13, which
    stays); the older ones are Python's."""
    code = ("import gc, json\n"
            "from beacon_proxy.cli.serve import GC_YOUNG_THRESHOLD, settle_heap\n"
            "before = gc.get_threshold()\n"
            "settle_heap()\n"
            "print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold(),"
            " GC_YOUNG_THRESHOLD]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    frozen, before, after, young = json.loads(done.stdout)
    assert frozen > 10_000  # the imported modules' objects
    default = 700 if sys.version_info < (3, 13) else 2000
    assert before == [default, 10, 10] and after == [max(young, default), 10, 10]
    assert young > 700


class _Started(Exception):
    """Raised by the stand-in event loop runner: serve got that far."""


@pytest.mark.parametrize("worker", [False, True])
def test_serve_settles_the_heap_before_its_event_loop_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: bool) -> None:
    """Both ways a serving process starts (one process, or a worker of several) settle
    the heap once, after the imports and checks and before the event loop runs."""
    from beacon_proxy import workers
    from beacon_proxy.cli import serve
    from beacon_proxy.cli.main import main

    steps: list[str] = []

    class Runner:
        def __init__(self, loop_factory: object = None) -> None:
            pass

        def __enter__(self) -> Runner:
            steps.append("event loop")
            raise _Started

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(serve, "settle_heap", lambda: steps.append("settle"))
    monkeypatch.setattr(serve, "asyncio", types.SimpleNamespace(Runner=Runner))
    monkeypatch.setattr(serve, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(serve, "set_worker", lambda worker: None)
    monkeypatch.setattr(workers, "die_with_parent", lambda pid: None)
    for key in [k for k in os.environ if k.startswith("BEACON_PROXY_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "c.toml"
    config.write_text(f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\nworkers = 1\n'
                      f'[web]\nlisten = "127.0.0.1:{free_port()}"\n'
                      f'[spool]\npath = "{tmp_path / "spool"}"\n')
    args = ["serve", "--config", str(config)]
    if worker:
        args += ["--worker", "0", "--workers", "2", "--channel", "0",
                 "--supervisor-pid", str(os.getpid())]
    with pytest.raises(_Started):
        main(args)
    assert steps == ["settle", "event loop"]
