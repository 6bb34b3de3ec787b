"""Configuration: one TOML file, every key optional, validated at start-up.

The file is found (:func:`find_config`) from ``--config FILE``, else
``BEACON_PROXY_CONFIG``, else :data:`SYSTEM_CONFIG`
(``/etc/beacon-proxy/beacon-proxy.toml``) when it exists; with none of them,
the embedded defaults below apply.  Single keys can be overridden from the
environment as ``BEACON_PROXY_<SECTION>_<KEY>`` (for example
``BEACON_PROXY_SMTP_LISTEN=0.0.0.0:25``); the value is read as a TOML value
when it parses as one and as a plain string otherwise.  ``BEACON_PROXY_SECRET``
sets ``[tokens] secret``.

Relative paths written in a configuration file (every ``Path`` value, the
Maildir of ``delivery.upstream`` and a ``sqlite:///relative`` store URL) are
relative to the directory of that file, so every command that reads the file
finds the same store and spool wherever it runs.  The built-in defaults and
values from the environment stay relative to the working directory: the
defaults must work without a file, and the directory of the system file
(``/etc/beacon-proxy``) is not writable by the relay.

Every problem is reported as :class:`ConfigError` naming the key
(``delivery.retry_min``) and the reason, so ``serve`` can stop with one
readable line.

    >>> cfg = load_config(None, environ={})
    >>> cfg.smtp.listen
    Endpoint(host='127.0.0.1', port=2525)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

__all__ = [
    "SYSTEM_CONFIG",
    "ApiConfig",
    "CampaignConfig",
    "Config",
    "ConfigError",
    "ConfigOrigin",
    "DeliveryConfig",
    "DkimConfig",
    "DkimKeyConfig",
    "Endpoint",
    "LogConfig",
    "PolicyConfig",
    "SmtpConfig",
    "SpoolConfig",
    "StoreConfig",
    "TokensConfig",
    "Upstream",
    "WebConfig",
    "environment_keys",
    "find_config",
    "is_token_name",
    "load_config",
    "usable_cpus",
    "worker_count",
]

MAX_WORKERS = 64

ENV_PREFIX = "BEACON_PROXY_"
# Read when neither --config nor BEACON_PROXY_CONFIG names a file (and it exists).
# Looked up at call time, so tests can point it elsewhere.
SYSTEM_CONFIG = Path("/etc/beacon-proxy/beacon-proxy.toml")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """A ``host:port`` listen address (``[::1]:2525`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """Where delivery goes: an SMTP smarthost or a local Maildir."""

    kind: Literal["smtp", "maildir"]
    host: str = ""
    port: int = 25
    path: Path = Path("var/outbox")

    def __str__(self) -> str:
        if self.kind == "smtp":
            return f"smtp://{Endpoint(self.host, self.port)}"
        return f"maildir:{self.path}"


@dataclass(frozen=True)
class SmtpConfig:
    listen: Endpoint = Endpoint("127.0.0.1", 2525)
    hostname: str = ""  # empty: the machine's FQDN
    allow_networks: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    max_message_size: int = 26_214_400
    max_recipients: int = 1000
    max_header_size: int = 102_400
    command_timeout: float = 300.0
    # Clients outside allow_networks, not authenticated, with no MAIL FROM given yet.
    idle_timeout_untrusted: float = 30.0
    max_connections: int = 500
    max_connections_per_client: int = 20  # per address (IPv6: per /64) outside allow_networks
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_users: Mapping[str, str] = field(default_factory=dict)  # user -> password hash
    auth_max_failures: int = 3  # failed AUTH per connection, then 421 and close
    auth_failure_window: float = 900.0  # seconds: AUTH failures remembered per client address
    auth_failure_limit: int = 20  # failures in the window, then AUTH is refused (454)
    auth_delay_max: float = 8.0  # longest wait before answering AUTH after failures
    shutdown_timeout: float = 30.0
    # Longest wait of a new transaction (MAIL FROM) while delivery is behind (Postfix's
    # in_flow_delay; deliver/inflow.py); 0: never wait.
    in_flow_delay: float = 1.0
    # The process's event loop: uvloop when installed ("auto"), or forced either way.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Relay worker processes (receive, spool part, delivery each): a number, or "auto"
    # (one per usable CPU).  1: one process, the spool's single-process layout.
    workers: int | Literal["auto"] = 1


@dataclass(frozen=True)
class DeliveryConfig:
    upstream: Upstream = Upstream("maildir")
    starttls: Literal["required", "opportunistic", "off"] = "opportunistic"
    tls_verify: bool = True
    concurrency: int = 20
    timeout: float = 60.0
    data_timeout: float = 600.0  # the wait for the reply to the final dot (RFC 5321)
    # A delivery worker with nothing to send for this long closes (QUIT) its connection.
    idle_timeout: float = 30.0
    # Connections besides the workers' that the copies of messages with many recipients
    # may use at once (shared by every message; 0: one connection a message).
    lanes: int = 4
    # PIPELINING (RFC 2920) when the upstream offers it; false: each command waits.
    pipelining: bool = True
    retry_min: float = 300.0
    retry_max: float = 4000.0
    queue_lifetime: float = 5 * 86400.0
    helo_name: str = ""  # empty: the SMTP hostname


@dataclass(frozen=True)
class SpoolConfig:
    path: Path = Path("var/spool")


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///var/beacon-proxy.db"
    pool_size: int = 10  # PostgreSQL connections per process
    # Answers the relay's decision cache keeps per process (0: no cache); see docs/consent.md.
    cache_size: int = 20_000  # consent.cache.DEFAULT_CACHE_SIZE (~530 bytes each)


@dataclass(frozen=True)
class WebConfig:
    listen: Endpoint = Endpoint("127.0.0.1", 8025)
    # A second listener for /metrics, /readyz and the admin API (None: all on `listen`,
    # which then also serves them; only /o/, /u/ and /healthz are meant to face recipients).
    admin_listen: Endpoint | None = None
    public_url: str = "http://127.0.0.1:8025"
    # A mailto: address added to List-Unsubscribe after the HTTPS link ("" = none).
    unsubscribe_mailto: str = ""
    # A sender's own List-Unsubscribe: replaced (its one-click forwarded) or kept.
    sender_unsubscribe: Literal["replace", "keep"] = "replace"
    # Footer and preference page language when the message / browser does not say.
    default_language: Literal["en", "ja"] = "en"
    # Seconds a connection has to send a complete request head (from its start or the
    # previous answer); also how long an idle keep-alive connection stays open.
    header_timeout: float = 20.0
    # Requests a second per client address (IPv6: per /64) on /o/, /u/ and /api/ (0: no
    # limit); a client may send rate_limit_burst seconds' worth at once.
    rate_limit_pixel: int = 100
    rate_limit_page: int = 20
    rate_limit_api: int = 100
    rate_limit_burst: float = 10.0
    # Reverse proxies whose X-Forwarded-For names the client (empty: the TCP peer is).
    # Loopback by default: only a process on this host can connect from there.
    trusted_proxies: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


@dataclass(frozen=True)
class PolicyConfig:
    unknown: Literal["refused", "granted"] = "refused"
    # Refused copies of what the precise engine cannot handle / of signed mail.
    unscannable: Literal["neutralise", "hold", "deliver"] = "neutralise"
    signed: Literal["unwrap", "hold", "deliver"] = "unwrap"
    analysis_timeout: float = 10.0  # one message's analysis budget (CPU s; 4x in wall time)
    analysis_workers: int = 0  # analysis processes; 0: one per core, at most 4
    analysis_memory_mb: int = 1024  # each analysis process's address space; 0: no limit
    # Forward a consenting recipient's open to the original tracker URL (server-side,
    # without the recipient's address or user agent).
    forward_opens: bool = False


@dataclass(frozen=True)
class CampaignConfig:
    """Campaign diffing (rewrite.diffing): compare recipients' copies of a newsletter."""

    enabled: bool = True
    # Refused copies of a new bulk campaign's first message wait at most this long
    # (seconds from receipt) for a second copy to compare with; 0: they never wait.
    hold: float = 60.0
    learn: int = 16  # copies learned per campaign; then its memory is fixed (and cached)
    expire: float = 7 * 86400.0  # a campaign not learned from for this long is forgotten


@dataclass(frozen=True)
class TokensConfig:
    secret: str = ""  # mints new links; "" and no secret_file: a generated one (one node)
    previous: tuple[str, ...] = ()  # older secrets, still accepted (key rotation)
    secret_file: Path | None = None  # one secret per line: current first, then previous


@dataclass(frozen=True)
class ApiConfig:
    # Admin API bearer tokens: name -> "sha256:<hex>" (make one with `beacon-proxy hash-token`).
    tokens: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    path: Path | None = None  # None: standard error
    # Every e-mail address in the log replaced by a keyed hash (beacon-proxy hash-address).
    pseudonymize: bool = False


@dataclass(frozen=True)
class DkimKeyConfig:
    """One DKIM signing key; loaded and checked at start-up (rewrite.dkim.load_keys)."""

    domain: str  # d=: lower case, ASCII (xn-- form); signs mail whose From is in it
    selector: str  # s=: the key is published at <selector>._domainkey.<domain>
    private_key_file: Path
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] | None = None  # None: from the key
    key: str = "dkim"  # the configuration key it came from, for error messages


@dataclass(frozen=True)
class DkimConfig:
    """``[dkim]``: ``keys`` (a list of tables), or the short form for one key
    (``domain``, ``selector``, ``private_key_file``, ``algorithm``); both may be given."""

    keys: tuple[DkimKeyConfig, ...] = ()
    domain: str = ""
    selector: str = ""
    private_key_file: Path | None = None
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] | None = None

    @property
    def all_keys(self) -> tuple[DkimKeyConfig, ...]:
        """Every configured key: the short form's first, then ``keys``."""
        if self.private_key_file is None:
            return self.keys
        short = DkimKeyConfig(self.domain, self.selector, self.private_key_file,
                              self.algorithm, key="dkim")
        return (short, *self.keys)


@dataclass(frozen=True)
class Config:
    smtp: SmtpConfig = SmtpConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    spool: SpoolConfig = SpoolConfig()
    store: StoreConfig = StoreConfig()
    web: WebConfig = WebConfig()
    policy: PolicyConfig = PolicyConfig()
    campaign: CampaignConfig = CampaignConfig()
    tokens: TokensConfig = TokensConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    dkim: DkimConfig = DkimConfig()
    source: Path | None = None  # the file it was read from


# --------------------------------------------------------------------------
# Value parsers.  Each takes (key, raw value) and returns the typed value or
# raises ConfigError naming the key.

T = TypeVar("T")
Parser = Callable[[str, Any], Any]


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"expected a string, got {type(v).__name__}")
    if any(c in v for c in "\r\n\0"):
        raise ConfigError(key, "must not contain line breaks or NUL")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"expected true or false, got {v!r}")
    return v


def _int_in(lo: int, hi: int) -> Parser:
    def parse(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(key, f"expected an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(key, f"must be between {lo} and {hi}, got {v}")
        return v

    return parse


def _seconds(lo: float, hi: float) -> Parser:
    def parse(key: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(key, f"expected a number of seconds, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(key, f"must be between {lo:g} and {hi:g} seconds, got {v}")
        return float(v)

    return parse


#: The smallest analysis process address space allowed (MiB): an idle worker maps
#: about 40 MiB; much less and none would start.
MIN_ANALYSIS_MEMORY_MB = 256


def analysis_memory_needed(max_message_size: int) -> int:
    """The least ``[policy] analysis_memory_mb`` for messages up to ``max_message_size``
    bytes: an idle process and its rules, plus four times the message (a 25 MB message
    peaked at 3.4 times its size; the scanned parts are capped at 16 MB each)."""
    return MIN_ANALYSIS_MEMORY_MB + -(-4 * max_message_size // (1 << 20))


def _analysis_memory(key: str, v: Any) -> int:
    mb = int(_int_in(0, 1 << 20)(key, v))
    if 0 < mb < MIN_ANALYSIS_MEMORY_MB:
        raise ConfigError(key, f"must be 0 (no limit) or at least {MIN_ANALYSIS_MEMORY_MB} "
                          f"MiB, got {mb}")
    return mb


def _workers(key: str, v: Any) -> int | Literal["auto"]:
    if v == "auto":
        return "auto"
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(key, f'expected a number of processes or "auto", got {v!r}')
    if not 1 <= v <= MAX_WORKERS:
        raise ConfigError(key, f"must be between 1 and {MAX_WORKERS}, got {v}")
    return v


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as ``taskset`` sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(smtp: SmtpConfig) -> int:
    """How many relay worker processes ``[smtp] workers`` asks for ("auto": one per
    usable CPU, at most :data:`MAX_WORKERS`)."""
    if smtp.workers == "auto":
        return min(usable_cpus(), MAX_WORKERS)
    return smtp.workers


def _choice(*choices: str) -> Parser:
    def parse(key: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return str(v)

    return parse


def _path(key: str, v: Any) -> Path:
    s = _str(key, v)
    if not s:
        raise ConfigError(key, "must not be empty")
    return Path(s)


def _endpoint(key: str, v: Any) -> Endpoint:
    s = _str(key, v)
    host, sep, port_s = s.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"expected HOST:PORT, got {s!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(key, f"bad port in {s!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"bad IPv6 address in {s!r} (write [addr]:port)") from None
    return Endpoint(host, int(port_s))


def _optional_endpoint(key: str, v: Any) -> Endpoint | None:
    """``HOST:PORT``, or ``""`` for none (to unset it from the environment)."""
    return None if v == "" else _endpoint(key, v)


def _networks(key: str, v: Any) -> tuple[IpNetwork, ...]:
    if not isinstance(v, list):
        raise ConfigError(key, "expected a list of networks such as [\"127.0.0.0/8\"]")
    nets: list[IpNetwork] = []
    for item in v:
        try:
            nets.append(ipaddress.ip_network(_str(key, item), strict=False))
        except ValueError as exc:
            raise ConfigError(key, f"bad network {item!r}: {exc}") from None
    return tuple(nets)


def _upstream(key: str, v: Any) -> Upstream:
    s = _str(key, v)
    if s.startswith("maildir:"):
        path = s[len("maildir:") :]
        if not path:
            raise ConfigError(key, "maildir: needs a path, as in maildir:var/outbox")
        return Upstream("maildir", path=Path(path))
    parts = urlsplit(s)
    if parts.scheme != "smtp":
        raise ConfigError(key, f"expected smtp://HOST:PORT or maildir:PATH, got {s!r}")
    try:
        port = parts.port or 25
    except ValueError:
        raise ConfigError(key, f"bad port in {s!r}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        raise ConfigError(key, f"expected smtp://HOST:PORT, got {s!r}")
    return Upstream("smtp", host=parts.hostname, port=port)


def _store_url(key: str, v: Any) -> str:
    s = _str(key, v)
    scheme = urlsplit(s).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(key, f"expected sqlite:///PATH or postgresql://..., got {s!r}")
    if scheme == "sqlite":
        from beacon_proxy.consent.store import sqlite_path

        try:
            sqlite_path(s)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    return s


def _secret(key: str, v: Any) -> str:
    s = _str(key, v)
    if s and len(s.encode("utf-8")) < 16:
        raise ConfigError(key, "a token secret must be at least 16 bytes")
    return s


def _secrets(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ConfigError(key, "expected a list of secrets")
    return tuple(_secret(key, item) for item in v)


_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/%[]@")


def _public_url(key: str, v: Any) -> str:
    s = _str(key, v)
    if not set(s) <= _URL_SAFE:
        # The URL goes verbatim into HTML attributes and CSS url(): keep it plain.
        raise ConfigError(key, "may only contain letters, digits and -._~:/%[]@")
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"expected an absolute http(s) URL, got {s!r}")
    if parts.query or parts.fragment:
        raise ConfigError(key, "must not carry a query or fragment")
    return s.rstrip("/")


# Characters that need no escaping in a mailto: URI (RFC 6068) and no quoting in mail.
_MAILBOX = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+=@")


def _mailto(key: str, v: Any) -> str:
    """An ASCII address for ``List-Unsubscribe: <mailto:...>`` ("" = none)."""
    s = _str(key, v).strip()
    if s.startswith("mailto:"):
        s = s[len("mailto:") :]
    if not s:
        return ""
    local, at, domain = s.rpartition("@")
    if (not at or not local or not domain or not set(s) <= _MAILBOX or len(s) > 254
            or ".." in s or domain.startswith(".") or domain.endswith(".")):
        raise ConfigError(key, f"expected a plain ASCII address such as unsubscribe@example.com, "
                          f"got {s!r}")
    return s


def _auth_users(key: str, v: Any) -> dict[str, str]:
    from beacon_proxy.smtpd.passwords import is_password_hash

    if not isinstance(v, dict):
        raise ConfigError(key, 'expected a table of user = "password hash"')
    users: dict[str, str] = {}
    for user, hashed in v.items():
        if not user or any(c in user for c in "\0\r\n"):
            raise ConfigError(f"{key}.{user}", "bad user name")
        h = _str(f"{key}.{user}", hashed)
        if not is_password_hash(h):
            raise ConfigError(
                f"{key}.{user}",
                "not a password hash; make one with `beacon-proxy hash-password`",
            )
        users[user] = h
    return users


def is_token_name(name: str) -> bool:
    """Whether ``name`` may name an ``[api.tokens]`` entry: letters, digits, ``- _ .``,
    at most 64 characters."""
    return bool(name) and all(c.isalnum() or c in "-_." for c in name) and len(name) <= 64


def _api_tokens(key: str, v: Any) -> dict[str, str]:
    from beacon_proxy.web.auth import is_token_hash

    if not isinstance(v, dict):
        raise ConfigError(key, 'expected a table of name = "sha256:..." token hashes')
    tokens: dict[str, str] = {}
    for name, hashed in v.items():
        if not is_token_name(name):
            raise ConfigError(f"{key}.{name}", "token names are letters, digits, - _ and .")
        h = _str(f"{key}.{name}", hashed)
        if not is_token_hash(h):
            raise ConfigError(f"{key}.{name}",
                              "not a token hash; make one with `beacon-proxy hash-token`")
        tokens[name] = h
    return tokens


def _hostname(key: str, v: Any) -> str:
    s = _str(key, v)
    if s and not all(c.isalnum() or c in "-._" for c in s):
        raise ConfigError(key, f"not a host name: {s!r}")
    return s


_DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _dkim_name(what: str) -> Parser:
    """A DKIM domain (d=) or selector (s=): ASCII labels, returned in lower case."""

    def parse(key: str, v: Any) -> str:
        s = _str(key, v).strip().rstrip(".").lower()
        if not s or len(s) > 253 or not _DOMAIN_RE.fullmatch(s):
            hint = " (an internationalised domain in its xn-- form)" if what == "domain" else ""
            raise ConfigError(key, f"not a DKIM {what}{hint}: {v!r}")
        return s
    return parse


def _dkim_keys(key: str, v: Any) -> tuple[DkimKeyConfig, ...]:
    """``keys = [{domain = ..., selector = ..., private_key_file = ..., algorithm = ...}]``"""
    if not isinstance(v, list):
        raise ConfigError(key, "expected a list of tables {domain, selector, private_key_file}")
    out = []
    for i, item in enumerate(v):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "expected a table {domain, selector, private_key_file}")
        unknown = sorted(set(item) - {"domain", "selector", "private_key_file", "algorithm"})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key")
        for name in ("domain", "selector", "private_key_file"):
            if name not in item:
                raise ConfigError(f"{where}.{name}", "missing")
        algorithm = item.get("algorithm")
        out.append(DkimKeyConfig(
            _dkim_name("domain")(f"{where}.domain", item["domain"]),
            _dkim_name("selector")(f"{where}.selector", item["selector"]),
            _path(f"{where}.private_key_file", item["private_key_file"]),
            None if algorithm is None
            else _choice(*_DKIM_ALGORITHMS)(f"{where}.algorithm", algorithm),
            key=where))
    return tuple(out)


def _check_dkim(dkim: DkimConfig) -> None:
    short = {"dkim.domain": dkim.domain, "dkim.selector": dkim.selector,
             "dkim.private_key_file": dkim.private_key_file}
    given = [k for k, value in short.items() if value]
    if given and len(given) < len(short):
        missing = next(k for k, value in short.items() if not value)
        raise ConfigError(missing, "domain, selector and private_key_file go together")
    if dkim.algorithm is not None and not given:
        raise ConfigError("dkim.algorithm", "needs dkim.domain, selector and private_key_file")
    seen: dict[tuple[str, str], str] = {}
    for k in dkim.all_keys:
        where = seen.setdefault((k.domain, k.selector), k.key)
        if where != k.key:
            raise ConfigError(k.key, f"selector {k.selector!r} of {k.domain} is already "
                              f"configured ({where})")


# section -> key -> parser.  The single source of truth for what is allowed.
_SCHEMA: dict[str, dict[str, Parser]] = {
    "smtp": {
        "listen": _endpoint,
        "hostname": _hostname,
        "allow_networks": _networks,
        "max_message_size": _int_in(1024, 1 << 31),
        "max_recipients": _int_in(1, 100_000),
        "max_header_size": _int_in(1024, 10 << 20),
        "command_timeout": _seconds(1, 3600),
        "idle_timeout_untrusted": _seconds(1, 3600),
        "max_connections": _int_in(1, 100_000),
        "max_connections_per_client": _int_in(1, 100_000),
        "tls_cert": _path,
        "tls_key": _path,
        "auth_users": _auth_users,
        "auth_max_failures": _int_in(1, 100),
        "auth_failure_window": _seconds(1, 86400),
        "auth_failure_limit": _int_in(1, 100_000),
        "auth_delay_max": _seconds(0, 60),
        "shutdown_timeout": _seconds(0, 3600),
        "in_flow_delay": _seconds(0, 60),
        "event_loop": _choice("auto", "asyncio", "uvloop"),
        "workers": _workers,
    },
    "delivery": {
        "upstream": _upstream,
        "starttls": _choice("required", "opportunistic", "off"),
        "tls_verify": _bool,
        "concurrency": _int_in(1, 1000),
        "timeout": _seconds(1, 3600),
        "data_timeout": _seconds(1, 3600),
        "idle_timeout": _seconds(1, 3600),
        "lanes": _int_in(0, 100),
        "pipelining": _bool,
        "retry_min": _seconds(0.1, 86400),
        "retry_max": _seconds(0.1, 7 * 86400),
        "queue_lifetime": _seconds(1, 30 * 86400),
        "helo_name": _hostname,
    },
    "spool": {"path": _path},
    "store": {"url": _store_url, "pool_size": _int_in(1, 1000),
              "cache_size": _int_in(0, 10_000_000)},
    "web": {
        "listen": _endpoint,
        "admin_listen": _optional_endpoint,
        "public_url": _public_url,
        "unsubscribe_mailto": _mailto,
        "sender_unsubscribe": _choice("replace", "keep"),
        "default_language": _choice("en", "ja"),
        "header_timeout": _seconds(1, 3600),
        "rate_limit_pixel": _int_in(0, 1_000_000),
        "rate_limit_page": _int_in(0, 1_000_000),
        "rate_limit_api": _int_in(0, 1_000_000),
        "rate_limit_burst": _seconds(1, 3600),
        "trusted_proxies": _networks,
    },
    "policy": {
        "unknown": _choice("refused", "granted"),
        "unscannable": _choice("neutralise", "hold", "deliver"),
        "signed": _choice("unwrap", "hold", "deliver"),
        "analysis_timeout": _seconds(0.1, 600),
        "analysis_workers": _int_in(0, 64),
        "analysis_memory_mb": _analysis_memory,
        "forward_opens": _bool,
    },
    "campaign": {
        "enabled": _bool,
        "hold": _seconds(0, 3600),
        "learn": _int_in(2, 1000),
        "expire": _seconds(3600, 365 * 86400),
    },
    "tokens": {"secret": _secret, "previous": _secrets, "secret_file": _path},
    "api": {"tokens": _api_tokens},
    "log": {"level": _choice("debug", "info", "warning", "error"), "path": _path,
            "pseudonymize": _bool},
    "dkim": {
        "keys": _dkim_keys,
        "domain": _dkim_name("domain"),
        "selector": _dkim_name("selector"),
        "private_key_file": _path,
        "algorithm": _choice(*_DKIM_ALGORITHMS),
    },
}

_SECTION_TYPES: dict[str, type[Any]] = {
    "smtp": SmtpConfig,
    "delivery": DeliveryConfig,
    "spool": SpoolConfig,
    "store": StoreConfig,
    "web": WebConfig,
    "policy": PolicyConfig,
    "campaign": CampaignConfig,
    "tokens": TokensConfig,
    "api": ApiConfig,
    "log": LogConfig,
    "dkim": DkimConfig,
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{path}: not UTF-8 text") from None


#: Variables under the prefix that are not configuration keys: the file to read, and
#: those the test suite reads (``BEACON_PROXY_TEST_POSTGRES``).
_ENV_NOT_KEYS = (ENV_PREFIX + "CONFIG",)
_ENV_TESTS = ENV_PREFIX + "TEST_"


def environment_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """The keys the environment sets, with the variable that sets each:
    ``{"smtp.listen": "BEACON_PROXY_SMTP_LISTEN"}``.  Every ``BEACON_PROXY_*``
    variable but ``BEACON_PROXY_CONFIG`` (and the test suite's ``BEACON_PROXY_TEST_*``)
    is a key: unknown sections and unknown keys are included, so they can be refused
    (a mistyped ``BEACON_PROXY_SMPT_LISTEN`` is an error, not silently ignored)."""
    keys: dict[str, str] = {}
    for name in environ:
        if (not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS
                or name.startswith(_ENV_TESTS)):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "secret":
            keys["tokens.secret"] = name
            continue
        section, _, key = rest.partition("_")
        keys[f"{section}.{key}" if key else section] = name
    return keys


def _env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> set[str]:
    """Put the environment's values into ``raw``; the keys it set."""
    keys = environment_keys(environ)
    for dotted, name in keys.items():
        section, _, key = dotted.partition(".")
        if section not in _SCHEMA:
            raise ConfigError(dotted, f"unknown section {section!r} (from environment {name}; "
                              f"variables are {ENV_PREFIX}<SECTION>_<KEY>, sections: "
                              f"{', '.join(_SCHEMA)})")
        if key not in _SCHEMA[section]:
            raise ConfigError(dotted, f"unknown key (from environment {name})")
        value = environ[name]
        try:
            parsed: Any = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        raw.setdefault(section, {})[key] = parsed
    return set(keys)


def _relative_to(base: Path, value: Any) -> Any:
    """``value`` with every relative ``Path`` in it (in dataclasses and tuples too)
    made relative to ``base``; other values unchanged."""
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, tuple):
        return tuple(_relative_to(base, v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = _relative_to(base, old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


def _sqlite_url_relative_to(base: Path, url: str) -> str:
    """A ``sqlite:///relative`` URL made ``sqlite:////base/relative``; others unchanged."""
    if urlsplit(url).scheme != "sqlite":
        return url
    from beacon_proxy.consent.store import sqlite_path

    path = Path(sqlite_path(url))
    if path.is_absolute():
        return url
    return "sqlite:///" + quote(str(base / path), safe="/:@+,=")  # sqlite:////abs


def _build(raw: dict[str, Any], source: Path | None, from_env: frozenset[str] = frozenset(),
           ) -> Config:
    # Paths written in the file are relative to its directory (see the module docstring).
    base = source.parent if source is not None else None
    sections: dict[str, Any] = {}
    for section, table in raw.items():
        if section not in _SCHEMA:
            raise ConfigError(section, f"unknown section (known: {', '.join(_SCHEMA)})")
        if not isinstance(table, dict):
            raise ConfigError(section, "expected a table")
        values: dict[str, Any] = {}
        for key, value in table.items():
            parser = _SCHEMA[section].get(key)
            if parser is None:
                raise ConfigError(f"{section}.{key}", "unknown key")
            parsed = parser(f"{section}.{key}", value)
            if base is not None and f"{section}.{key}" not in from_env:
                parsed = _relative_to(base, parsed)
                if (section, key) == ("store", "url"):
                    parsed = _sqlite_url_relative_to(base, parsed)
            values[key] = parsed
        sections[section] = _SECTION_TYPES[section](**values)
    cfg = Config(**sections, source=source)
    _check_consistency(cfg)
    return cfg


def _check_web(web: WebConfig) -> None:
    admin = web.admin_listen
    if admin is not None and admin.port == web.listen.port and (
            admin.host == web.listen.host or {admin.host, web.listen.host} & _ANY_HOST):
        raise ConfigError("web.admin_listen", f"{admin} overlaps web.listen {web.listen}: "
                          "the admin listener needs an address of its own")


_ANY_HOST = {"0.0.0.0", "::", ""}


def _check_consistency(cfg: Config) -> None:
    smtp, delivery = cfg.smtp, cfg.delivery
    _check_web(cfg.web)
    if (smtp.tls_cert is None) != (smtp.tls_key is None):
        missing = "smtp.tls_key" if smtp.tls_key is None else "smtp.tls_cert"
        raise ConfigError(missing, "tls_cert and tls_key must be given together")
    for key, p in (("smtp.tls_cert", smtp.tls_cert), ("smtp.tls_key", smtp.tls_key)):
        if p is not None and not p.is_file():
            raise ConfigError(key, f"{p}: no such file")
    if smtp.auth_users and smtp.tls_cert is None:
        raise ConfigError("smtp.auth_users", "AUTH is only offered over TLS: set smtp.tls_cert")
    if smtp.auth_delay_max >= min(smtp.idle_timeout_untrusted, smtp.command_timeout):
        raise ConfigError("smtp.auth_delay_max", "must be shorter than command_timeout and "
                          "idle_timeout_untrusted (the wait is part of the AUTH command)")
    needed = analysis_memory_needed(smtp.max_message_size)
    if cfg.policy.analysis_memory_mb and cfg.policy.analysis_memory_mb < needed:
        raise ConfigError("policy.analysis_memory_mb", (
            f"{cfg.policy.analysis_memory_mb} MiB is too little for messages of "
            f"smtp.max_message_size ({smtp.max_message_size} bytes): every large one would "
            f"end its analysis process and take the fallback; set at least {needed}, or 0"))
    if delivery.retry_max < delivery.retry_min:
        raise ConfigError("delivery.retry_max", "must not be smaller than delivery.retry_min")
    if delivery.queue_lifetime < delivery.retry_min:
        raise ConfigError("delivery.queue_lifetime", "must not be shorter than retry_min")
    if (cfg.tokens.secret or cfg.tokens.previous) and cfg.tokens.secret_file:
        raise ConfigError("tokens.secret_file",
                          "give tokens.secret (and previous) or secret_file, not both")
    if cfg.tokens.previous and not cfg.tokens.secret:
        raise ConfigError("tokens.previous", "needs tokens.secret (the current secret)")
    if cfg.tokens.secret_file is not None and not cfg.tokens.secret_file.is_file():
        raise ConfigError("tokens.secret_file", f"{cfg.tokens.secret_file}: no such file")
    _check_dkim(cfg.dkim)


ConfigOrigin = Literal["--config", "BEACON_PROXY_CONFIG", "system", "defaults"]


def find_config(path: str | Path | None, environ: Mapping[str, str] | None = None,
                ) -> tuple[Path | None, ConfigOrigin]:
    """Which configuration file applies, and why: ``path`` (``--config``), else
    ``BEACON_PROXY_CONFIG``, else :data:`SYSTEM_CONFIG` when it exists ("system"),
    else none (the built-in defaults)."""
    env = os.environ if environ is None else environ
    if path is not None:
        return Path(path), "--config"
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"]), "BEACON_PROXY_CONFIG"
    try:
        SYSTEM_CONFIG.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None, "defaults"
    except OSError:
        pass  # there but not readable: reading it says so, rather than silently using defaults
    return SYSTEM_CONFIG, "system"


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Find (:func:`find_config`), read, override from the environment, validate.
    Raises :class:`ConfigError`.  ``Config.source`` is the file's absolute path."""
    env = os.environ if environ is None else environ
    found, _ = find_config(path, env)
    # Absolute, but symbolic links are not followed: a file mounted as a link (a
    # Kubernetes ConfigMap) keeps the directory it was named in.
    source = Path(os.path.abspath(found)) if found is not None else None
    raw = _read_file(source) if source is not None else {}
    from_env = _env_overrides(raw, env)
    return _build(raw, source, frozenset(from_env))
