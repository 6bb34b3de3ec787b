"""``beacon-proxy config show``: which file, which store and spool, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.cli.configcmd import MASK, mask_url
from beacon_proxy.cli.main import main
from beacon_proxy.web.auth import hash_token, new_token

Cap = pytest.CaptureFixture[str]
SECRET = "current-secret-0123456789"
OLD = "previous-secret-0123456789"


def _show(capsys: Cap, *args: str) -> dict[str, Any]:
    assert main(["config", "show", "--json", *args]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_built_in_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    monkeypatch.delenv("BEACON_PROXY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    got = _show(capsys)
    assert (got["config"], got["config_origin"]) == (None, "defaults")
    assert got["store"] == {"url": "sqlite:///var/beacon-proxy.db", "kind": "sqlite",
                            "path": str(tmp_path / "var" / "beacon-proxy.db"), "exists": False}
    assert got["spool"] == str(tmp_path / "var" / "spool")
    assert got["settings"]["smtp"]["listen"] == "127.0.0.1:2525"
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config:       built-in defaults")
    assert f"store:        {tmp_path / 'var' / 'beacon-proxy.db'} (SQLite, not created yet)" in out
    assert '[smtp]\nlisten = "127.0.0.1:2525"' in out


def test_the_file_used_and_paths_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: Cap) -> None:
    import beacon_proxy.config

    etc = tmp_path / "etc"
    etc.mkdir()
    system = etc / "beacon-proxy.toml"
    system.write_text("[spool]\npath = 'spool'\n[store]\nurl = 'sqlite:///bp.db'\n"
                      "[web]\nadmin_listen = '127.0.0.1:8026'\n")
    monkeypatch.setattr(beacon_proxy.config, "SYSTEM_CONFIG", system)
    monkeypatch.delenv("BEACON_PROXY_CONFIG", raising=False)
    monkeypatch.setenv("BEACON_PROXY_SMTP_LISTEN", "127.0.0.1:2600")
    monkeypatch.chdir(tmp_path)
    got = _show(capsys)
    assert (got["config"], got["config_origin"]) == (str(system), "system")
    assert got["environment"] == {"smtp.listen": "BEACON_PROXY_SMTP_LISTEN"}
    assert got["store"]["path"] == str(etc / "bp.db")
    assert got["spool"] == str(etc / "spool")
    assert got["web"] == {"public": "127.0.0.1:8025", "admin": "127.0.0.1:8026"}
    other = tmp_path / "other.toml"
    other.write_text("")
    assert _show(capsys, "--config", str(other))["config_origin"] == "--config"
    monkeypatch.setenv("BEACON_PROXY_CONFIG", str(other))
    assert _show(capsys)["config"] == str(other)
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config:       {other} (named by BEACON_PROXY_CONFIG)")
    assert "environment:  BEACON_PROXY_SMTP_LISTEN sets smtp.listen" in out


def test_secrets_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    from beacon_proxy.smtpd.passwords import hash_password

    token = new_token()
    token_hash = hash_token(token)
    password_hash = hash_password("pw", n=2**10)
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    config = tmp_path / "c.toml"
    config.write_text(f"""
[smtp]
tls_cert = "cert.pem"
tls_key = "key.pem"
auth_users = {{ tool = "{password_hash}" }}
[store]
url = "postgresql://bp:pg-pass-word@db.example/bp?sslmode=require"
[tokens]
secret = "{SECRET}"
previous = ["{OLD}"]
[api.tokens]
crm = "{token_hash}"
""")
    monkeypatch.setenv("BEACON_PROXY_CONFIG", str(config))
    assert main(["config", "show", "--json"]) == 0
    text_json = capsys.readouterr().out
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    for out in (text_json, text):
        for secret in (SECRET, OLD, token, token_hash, password_hash, "pg-pass-word"):
            assert secret not in out
    got = json.loads(text_json)
    s = got["settings"]
    assert (s["tokens"]["secret"], s["tokens"]["previous"]) == (MASK, [MASK])
    assert s["api"]["tokens"] == {"crm": MASK}
    assert s["smtp"]["auth_users"] == {"tool": MASK}
    assert s["smtp"]["tls_cert"] == str(tmp_path / "cert.pem")  # paths are not secret
    assert got["store"] == {"url": f"postgresql://bp:{MASK}@db.example/bp?sslmode=require",
                            "kind": "postgresql"}
    assert s["store"]["url"] == got["store"]["url"]


def test_mask_url() -> None:
    assert mask_url("sqlite:///var/bp.db") == "sqlite:///var/bp.db"
    assert mask_url("postgresql://bp@db/bp") == "postgresql://bp@db/bp"
    assert mask_url("postgresql://bp:p%40ss@db:5432/bp") == f"postgresql://bp:{MASK}@db:5432/bp"
    assert mask_url("postgresql://db/bp?user=bp&password=x") == \
        f"postgresql://db/bp?user=bp&password={MASK}"


def test_a_bad_configuration_is_a_one_line_error(tmp_path: Path, capsys: Cap) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nadmin_listen = 'x'\n")
    assert main(["config", "show", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "web.admin_listen" in err
