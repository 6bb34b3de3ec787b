"""bench/granted_dense.py's rows on tiny shapes (a smoke test: no timing is judged)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import granted_dense

from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.tokens import Tokens


def test_each_row_runs(capsys: pytest.CaptureFixture[str]) -> None:
    granted_dense.resplice_row(5, 1)
    step = BeaconStep(Engine(load_rules()), Tokens(["a bench secret of some length"]),
                      public_url="https://prefs.example.com", hostname="relay.example",
                      steps=())
    granted_dense.footer_row(step, 2, 1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stretches     5 parts 901: respliced")
    assert out[1].startswith("pixels     2 size") and "derived" in out[1]
