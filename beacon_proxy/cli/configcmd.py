"""``beacon-proxy config show [--json]``: which configuration applies, and what it says.

Prints the file that was read and why (``--config``, ``BEACON_PROXY_CONFIG``,
the system file ``/etc/beacon-proxy/beacon-proxy.toml``, or none: the built-in
defaults), the keys the environment overrides, the absolute store, spool (and
outbox and log) locations, and every effective setting with secrets masked:
token secrets, SMTP password hashes, admin API token hashes and a password in
a PostgreSQL URL.  Paths are shown absolute, as this command resolves them
from where it runs: a relay started elsewhere without a configuration file
uses other ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from beacon_proxy.cli.common import add_config_option
from beacon_proxy.config import (
    SYSTEM_CONFIG,
    Config,
    ConfigOrigin,
    Endpoint,
    Upstream,
    environment_keys,
    find_config,
    load_config,
)

__all__ = ["MASK", "mask_url", "register", "settings"]

MASK = "********"
# Whole values that are secret; and tables whose values (not names) are.
_SECRET_KEYS = frozenset({"tokens.secret", "tokens.previous"})
_SECRET_TABLES = frozenset({"smtp.auth_users", "api.tokens"})
_URL_KEYS = frozenset({"store.url"})

_ORIGINS: dict[ConfigOrigin, str] = {
    "--config": "given with --config",
    "BEACON_PROXY_CONFIG": "named by BEACON_PROXY_CONFIG",
    "system": "the system configuration file",
    "defaults": "",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "config", help="show the configuration in use",
        description="Inspect the configuration every command would use from here.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    s: argparse.ArgumentParser = csub.add_parser(
        "show", help="the configuration file used, the store and spool, every setting",
        description="Print which configuration file applies (--config, else "
        "$BEACON_PROXY_CONFIG, else /etc/beacon-proxy/beacon-proxy.toml when it exists, "
        "else the built-in defaults), the absolute store and spool locations, and the "
        "effective settings with secrets masked.")
    add_config_option(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    found, origin = find_config(args.config)
    cfg = load_config(found)  # the file found here, not found again
    report = describe(cfg, origin, dict(os.environ))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(_text(report))
    return 0


def describe(cfg: Config, origin: ConfigOrigin, environ: Mapping[str, str]) -> dict[str, Any]:
    """What ``config show --json`` prints."""
    store: dict[str, Any] = {"url": mask_url(cfg.store.url)}
    if urlsplit(cfg.store.url).scheme == "sqlite":
        from beacon_proxy.consent.store import sqlite_path

        path = _absolute(Path(sqlite_path(cfg.store.url)))
        store.update(kind="sqlite", path=path, exists=os.path.exists(path))
    else:
        store["kind"] = "postgresql"
    up = cfg.delivery.upstream
    return {
        "config": str(cfg.source) if cfg.source is not None else None,
        "config_origin": origin,
        "working_directory": os.getcwd(),
        "environment": environment_keys(environ),
        "store": store,
        "spool": _absolute(cfg.spool.path),
        "outbox": _absolute(up.path) if up.kind == "maildir" else None,
        "log": _absolute(cfg.log.path) if cfg.log.path is not None else None,
        "web": {"public": str(cfg.web.listen),
                "admin": str(cfg.web.admin_listen or cfg.web.listen)},
        "settings": settings(cfg),
    }


def settings(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every section's effective settings as plain values, secrets masked, paths absolute."""
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(section):
            continue  # source
        out[f.name] = {k.name: _plain(f"{f.name}.{k.name}", getattr(section, k.name))
                       for k in dataclasses.fields(section)}
    return out


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _secret_name(k) else v) for k, v in pairs],
                              safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing secret (and sqlite:/// keeps its empty authority)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_name(name: str) -> bool:
    name = name.lower()
    return ("secret" in name or "password" in name or name == "sslkey"
            or "passphrase" in name) and not name.endswith("_file")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return MASK if value else ""
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


def _plain(key: str, value: Any) -> Any:
    name = key.rpartition(".")[2]
    plain = _value(value)
    if key in _SECRET_KEYS or _secret_name(name):
        return _mask(plain)
    if key in _SECRET_TABLES and isinstance(plain, dict):
        return {k: _mask(v) for k, v in plain.items()}
    if key in _URL_KEYS and isinstance(plain, str):
        return mask_url(plain)
    return plain


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return _absolute(value)
    if isinstance(value, Upstream):
        return f"maildir:{_absolute(value.path)}" if value.kind == "maildir" else str(value)
    if isinstance(value, Endpoint | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(f.name, getattr(value, f.name))
                for f in dataclasses.fields(value)}
    return str(value)


def _absolute(path: Path) -> str:
    return os.path.abspath(path)


# --------------------------------------------------------------------------
# Text output: a header of locations, then the settings as TOML.


def _text(report: dict[str, Any]) -> str:
    origin: ConfigOrigin = report["config_origin"]
    if report["config"] is None:
        config = (f"built-in defaults (no --config, no BEACON_PROXY_CONFIG, no {SYSTEM_CONFIG}); "
                  f"relative paths are relative to {report['working_directory']}")
    else:
        config = f"{report['config']} ({_ORIGINS[origin]})"
    store = report["store"]
    if store["kind"] == "sqlite":
        state = "exists" if store["exists"] else "not created yet"
        store_line = f"{store['path']} (SQLite, {state})"
    else:
        store_line = f"{store['url']} (PostgreSQL)"
    lines = [f"config:       {config}"]
    env = report["environment"]
    if env:
        lines.append("environment:  " + ", ".join(f"{var} sets {key}"
                                                  for key, var in sorted(env.items())))
    lines += [f"store:        {store_line}", f"spool:        {report['spool']}"]
    if report["outbox"] is not None:
        lines.append(f"outbox:       {report['outbox']}")
    lines.append(f"log:          {report['log'] or 'standard error'}")
    web = report["web"]
    if web["admin"] == web["public"]:
        lines.append(f"web:          {web['public']} (recipient side and admin side)")
    else:
        lines.append(f"web:          {web['public']} (recipient side), "
                     f"{web['admin']} (admin side)")
    lines += ["", "# effective settings (secrets masked)"]
    for section, table in report["settings"].items():
        lines.append(f"\n[{section}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {key}: not set")
            else:
                lines.append(f"{_toml_key(key)} = {_toml(value)}")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii():
        return key
    return json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(str(k))} = {_toml(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return json.dumps(str(value))
