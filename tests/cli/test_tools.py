from __future__ import annotations

import io

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.smtpd.passwords import is_password_hash, verify_password


def test_hash_password_from_stdin(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["hash-password"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert is_password_hash(hashed) and verify_password("s3cret", hashed)


def test_empty_password_is_refused(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 1
    assert "empty password" in capsys.readouterr().err


def test_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-h"])
    assert info.value.code == 0
    assert "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
