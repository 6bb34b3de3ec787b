"""bench/lanes.py does not rot: a tiny run says what each setting opened and delivered,
never how fast (this machine is shared)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _postfix
import lanes
import relay

pytestmark = pytest.mark.skipif(
    not (os.access(relay.SMTP_SOURCE, os.X_OK) and os.access(relay.SMTP_SINK, os.X_OK)),
    reason="smtp-source / smtp-sink not installed (Debian: postfix)")


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("0", "3")}


def test_a_tiny_run_against_smtp_sink(capsys: pytest.CaptureFixture[str]) -> None:
    """70 copies: one connection with lanes = 0; with 3 spare ones, 70 // 32 = 2 lanes."""
    assert lanes.main(["--upstream", "sink", "--recipients", "70", "--rounds", "1",
                       "--lanes", "3", "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["0"][-1] == "1" and rows["3"][-1] == "2", out  # connections opened
    assert "lanes = 3 against lanes = 0: " in out


def test_the_relay_config_gets_the_lanes_asked_for(tmp_path: Path) -> None:
    st = relay.Settings(1, 1, tmp_path / "m.eml", tmp_path, 10, False, None, lanes=0)
    assert "\nretry_max = 5\nlanes = 0\n" in relay.proxy_config(st, "t", 1, 2, 3, False
                                                                 ).read_text()
    default = relay.Settings(1, 1, tmp_path / "m.eml", tmp_path, 10, False, None)
    assert "lanes" not in relay.proxy_config(default, "u", 1, 2, 3, False).read_text()


@pytest.mark.skipif(_postfix.postfix_available() is not None,
                    reason=str(_postfix.postfix_available()))
def test_a_tiny_run_against_postfix(capsys: pytest.CaptureFixture[str]) -> None:
    assert lanes.main(["--recipients", "64", "--rounds", "1", "--lanes", "3",
                       "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["0"][-1] == "1" and rows["3"][-1] == "2", out
