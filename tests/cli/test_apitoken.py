"""``beacon-proxy hash-token``."""

from __future__ import annotations

import io

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.web.auth import hash_token, is_token_hash

Cap = pytest.CaptureFixture[str]


def test_hash_token(monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    assert main(["hash-token"]) == 0
    token_line, hash_line = capsys.readouterr().out.splitlines()
    token = token_line.removeprefix("token: ")
    assert hash_line.removeprefix("hash:  ") == hash_token(token)
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["hash-token", "--stdin"]) == 0
    assert is_token_hash(capsys.readouterr().out.strip())
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hash-token", "--stdin"]) == 1
    assert "at least 20 characters" in capsys.readouterr().err
