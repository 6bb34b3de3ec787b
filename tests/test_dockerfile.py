"""The container image and the compose example say what they do (no Docker daemon needed).

The Dockerfile is parsed instruction by instruction: the relay runs as a
user other than root, reads the configuration at the path config discovery
looks at (shipped in the image, replaced by a mount), takes no listen address
from the image's environment, is health-checked on ``/readyz``, and keeps its
state in a volume.  ``compose.yaml`` is checked line by line (and parsed when
PyYAML happens to be installed) for the same paths, PostgreSQL, the secret
from the environment and an admin port that is not published to the world.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy import config as config_module
from beacon_proxy.cli.ready import readyz_url
from beacon_proxy.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = "/etc/beacon-proxy/beacon-proxy.toml"
STATE = "/var/lib/beacon-proxy"


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _args(text: str) -> list[str]:
    """The words of an exec-form (JSON array) or shell-form argument."""
    if text.startswith("["):
        words: list[str] = json.loads(text)
        return words
    return shlex.split(text)


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word != "ENV":
            continue
        parts = shlex.split(rest)
        if len(parts) == 2 and "=" not in parts[0]:  # ENV KEY value
            env[parts[0]] = parts[1]
            continue
        for part in parts:
            key, sep, value = part.partition("=")
            assert sep, f"cannot read ENV {rest!r}"
            env[key] = value
    return env


def _one(instructions: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in instructions if w == word]
    assert found, f"no {word} in the Dockerfile"
    return found[-1]  # the last one is the one that applies


def _image_config() -> tuple[Path, Config]:
    """The file the image installs at the system configuration path, loaded."""
    copies = [_args(rest) for word, rest in _instructions() if word in ("COPY", "ADD")]
    sources = [words[-2] for words in copies if words and words[-1] == CONFIG_PATH]
    assert len(sources) == 1, f"the image installs no single {CONFIG_PATH}: {copies}"
    path = ROOT / sources[0]
    return path, load_config(path, environ={})


def test_runs_as_a_user_other_than_root() -> None:
    instructions = _instructions()
    user = _one(instructions, "USER").split(":")[0]
    assert user not in ("root", "0", "")
    words = [w for w, _ in instructions]
    assert words.index("USER") < len(words) - 1 - words[::-1].index("CMD")  # before CMD runs


def test_reads_the_configuration_at_the_system_path() -> None:
    assert str(config_module.SYSTEM_CONFIG) == CONFIG_PATH
    path, cfg = _image_config()
    assert path.name == "container.toml"
    cmd = _args(_one(_instructions(), "CMD"))
    assert cmd[:2] == ["beacon-proxy", "serve"]
    # Found by discovery; a --config pointing elsewhere would ignore the mounted file.
    if "--config" in cmd:
        assert cmd[cmd.index("--config") + 1] == CONFIG_PATH
    env = _env(_instructions())
    assert env.get("BEACON_PROXY_CONFIG", CONFIG_PATH) == CONFIG_PATH
    # Listening on every interface inside the container, state in the volume.
    assert (cfg.smtp.listen.host, cfg.web.listen.host) == ("0.0.0.0", "0.0.0.0")
    assert cfg.web.admin_listen is not None
    for p in (cfg.spool.path, Path(cfg.store.url.removeprefix("sqlite:///")),
              cfg.delivery.upstream.path):
        assert p.is_absolute() and p.is_relative_to(STATE), p
    # Never an open relay out of the box.
    assert all(net.is_loopback for net in cfg.smtp.allow_networks)
    exposed = {int(p.split("/")[0]) for p in _one(_instructions(), "EXPOSE").split()}
    assert {cfg.smtp.listen.port, cfg.web.listen.port, cfg.web.admin_listen.port} <= exposed


def test_no_listen_address_in_the_environment() -> None:
    env = _env(_instructions())
    assert not [k for k in env if re.fullmatch(r"BEACON_PROXY_\w*LISTEN", k)], env
    assert not [k for k in env if k.startswith("BEACON_PROXY_") and k != "BEACON_PROXY_CONFIG"]


def test_healthcheck_asks_readyz() -> None:
    check = _one(_instructions(), "HEALTHCHECK")
    _, cmd_word, command = check.partition("CMD ")
    assert cmd_word, check
    args = _args(command.strip())
    # `beacon-proxy ready` finds the listener from the same configuration as the relay.
    assert args[:2] == ["beacon-proxy", "ready"], args
    assert "--config" not in args
    _, cfg = _image_config()
    assert cfg.web.admin_listen is not None
    assert readyz_url(cfg.web.admin_listen) == f"http://127.0.0.1:{cfg.web.admin_listen.port}" \
        "/readyz"


def test_state_is_a_volume() -> None:
    instructions = _instructions()
    volumes = _args(_one(instructions, "VOLUME"))
    assert STATE in volumes
    assert _one(instructions, "WORKDIR") == STATE  # built-in default paths land in it too


# --------------------------------------------------------------------------
# compose.yaml


def _compose_text() -> str:
    return (ROOT / "compose.yaml").read_text()


def test_compose_lines() -> None:
    text = _compose_text()
    assert "\t" not in text
    lines = [line.split(" #")[0].rstrip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    services = [line.strip()[:-1] for line in lines if re.fullmatch(r"  [\w-]+:", line)]
    assert services[:2] == ["beacon-proxy", "postgres"]
    assert any(re.search(rf":{re.escape(CONFIG_PATH)}(:ro)?\"?$", line) for line in lines)
    assert any(re.search(rf":{STATE}\"?$", line) for line in lines)
    assert any("BEACON_PROXY_STORE_URL:" in line and "postgresql://" in line for line in lines)
    assert any(re.search(r"BEACON_PROXY_SECRET: \"?\$\{BEACON_PROXY_SECRET", line)
               for line in lines)
    assert not any(re.search(r"BEACON_PROXY_\w*LISTEN", line) for line in lines)
    assert "image: postgres" in text


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML is no dependency: parsed when present
    data: dict[str, Any] = yaml.safe_load(_compose_text())
    return data


def test_compose_parses_and_keeps_the_admin_side_private() -> None:
    data = _compose()
    relay = data["services"]["beacon-proxy"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in relay["volumes"]}
    assert set(mounts) == {CONFIG_PATH, STATE}
    cfg = load_config(ROOT / mounts[CONFIG_PATH], environ={
        "BEACON_PROXY_STORE_URL": "postgresql://beacon:pw@postgres:5432/beacon",
        "BEACON_PROXY_SECRET": "a-test-secret-0123456789"})
    assert cfg.store.url.startswith("postgresql://")
    assert cfg.spool.path.is_relative_to(STATE)
    assert cfg.web.admin_listen is not None
    published = {}
    for port in relay["ports"]:
        *host, container = str(port).split(":")
        published[int(container)] = host
    # The admin side: not published, or only on loopback.
    admin = published.get(cfg.web.admin_listen.port)
    assert admin is None or admin[0] == "127.0.0.1", admin
    assert cfg.web.listen.port in published
    env = relay["environment"]
    assert "${POSTGRES_PASSWORD" in env["BEACON_PROXY_STORE_URL"]
    assert env["BEACON_PROXY_SECRET"].startswith("${BEACON_PROXY_SECRET")
    assert data["services"]["postgres"]["image"].startswith("postgres")
    # The relay's allow_networks cover the compose network (and nothing wider).
    subnet = data["networks"]["relay"]["ipam"]["config"][0]["subnet"]
    assert subnet in [str(n) for n in cfg.smtp.allow_networks]


def test_the_container_configurations_run_a_worker_per_cpu() -> None:
    """Both files the image and the compose example mount load, and run the production
    setting ``workers = "auto"`` (the built-in default stays 1: docs/operations.md)."""
    for name in ("container.toml", "compose.toml"):
        environ = {"BEACON_PROXY_SECRET": "s" * 32,
                   "BEACON_PROXY_STORE_URL": "postgresql://u:p@db/beacon"}
        cfg = load_config(ROOT / "config" / name, environ=environ)
        assert cfg.smtp.workers == "auto", name
