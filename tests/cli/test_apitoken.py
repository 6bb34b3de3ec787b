"""``beacon-proxy hash-token``."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_proxy.cli.main import build_parser, main
from beacon_proxy.config import load_config
from beacon_proxy.web.auth import hash_token, is_token_hash

Cap = pytest.CaptureFixture[str]


def test_hash_token(monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    assert main(["hash-token"]) == 0
    token_line, hash_line = capsys.readouterr().out.splitlines()
    token = token_line.removeprefix("token: ")
    assert hash_line == f'admin = "{hash_token(token)}"'
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["hash-token", "--stdin"]) == 0
    assert capsys.readouterr().out == f'admin = "{hash_token(token)}"\n'
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hash-token", "--stdin"]) == 1
    assert "at least 20 characters" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["crm-sync", "crm.sync", "bür0"])
def test_the_printed_line_pastes_into_api_tokens(name: str, tmp_path: Path, capsys: Cap) -> None:
    assert main(["hash-token", "--name", name]) == 0
    token_line, line = capsys.readouterr().out.splitlines()
    path = tmp_path / "c.toml"
    path.write_text(f"[api.tokens]\n{line}\n", encoding="utf-8")
    tokens = load_config(path).api.tokens
    assert list(tokens) == [name]
    assert is_token_hash(tokens[name])
    assert tokens[name] == hash_token(token_line.removeprefix("token: "))


def test_a_bad_token_name_is_a_usage_error(capsys: Cap) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["hash-token", "--name", "crm sync"])
    assert stop.value.code == 2
    assert "token names are letters" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_argument_has_a_help_text() -> None:
    missing = [f"{p.prog} {a.metavar or a.dest}" for p in _parsers(build_parser())
               for a in p._actions
               if not isinstance(a, argparse._HelpAction | argparse._VersionAction
                                 | argparse._SubParsersAction) and not a.help]
    assert missing == []


def test_every_command_takes_config() -> None:
    """product.md: "Every command takes --config FILE" (one that reads none says so)."""
    commands = [p for p in _parsers(build_parser()) if not any(
        isinstance(a, argparse._SubParsersAction) for a in p._actions)]
    assert len(commands) > 20
    assert [p.prog for p in commands
            if not any("--config" in a.option_strings for a in p._actions)] == []


def test_hash_token_accepts_config_and_reads_none(tmp_path: Path, capsys: Cap) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[smtp\n")
    assert main(["hash-token", "--config", str(broken)]) == 0
    assert capsys.readouterr().out.startswith("token: ")
