"""Tell an open made by a machine (image proxy, security scanner) from a person's.

Apple Mail Privacy Protection, Gmail's and Yahoo's image proxies fetch every
image of a message whether or not anyone reads it, and security gateways
fetch every URL on delivery.  Such opens are still recorded for a consenting
recipient, marked ``machine`` with a class, so statistics can leave them out.

Who those machines are is data, not code: ``beacon_proxy/data/machines.toml``
(sources noted per entry; operators keep it current).  The client address is
the one :mod:`beacon_proxy.web.guard` found: the TCP peer, or what a trusted
reverse proxy (``[web] trusted_proxies``) forwarded for in ``X-Forwarded-For``.

    >>> classify("Mozilla/5.0 (via ggpht.com GoogleImageProxy)", "203.0.113.9")
    ('gmail-proxy', True)
    >>> classify("Mozilla/5.0", "17.58.1.2")
    ('apple-mpp', True)
    >>> classify("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", "198.51.100.7")
    ('browser', False)
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["BROWSER", "NO_USER_AGENT", "Machines", "classify", "ip_address", "load_machines"]

BROWSER = "browser"  # a person's mail client (nothing matched)
NO_USER_AGENT = "no-user-agent"  # every mail client sends one; scripts often do not
_MAX_UA = 1000  # characters of a User-Agent looked at

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Machines:
    """The rules of one data file, ready to match."""

    exact: dict[str, str]  # lower-cased whole User-Agent -> class
    contains: tuple[tuple[str, str], ...]  # (lower-cased substring, class), file order
    networks: tuple[tuple[Network, str], ...]

    def classify(self, user_agent: str | None, ip: str | None) -> tuple[str, bool]:
        """``(ua_class, machine)`` for a request's User-Agent and client address."""
        ua = (user_agent or "").strip()[:_MAX_UA].lower()
        if ua:
            found = self.exact.get(ua)
            if found is not None:
                return found, True
            for needle, cls in self.contains:
                if needle in ua:
                    return cls, True
        addr = ip_address(ip)
        if addr is not None:
            for net, cls in self.networks:
                if addr.version == net.version and addr in net:
                    return cls, True
        if not ua:
            return NO_USER_AGENT, True
        return BROWSER, False


def ip_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as text (a zone id dropped, IPv4-mapped IPv6 as IPv4), or None."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _strings(entry: dict[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: {key} must be a list of non-empty strings")
    return [v.strip() for v in value]


def load_machines(text: str, name: str = "machines.toml") -> Machines:
    """Parse a machines data file; ``ValueError`` naming the entry and key when bad."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{name}: {exc}") from None
    entries = doc.get("machine", [])
    if not isinstance(entries, list) or set(doc) - {"machine"}:
        raise ValueError(f"{name}: expected only [[machine]] entries")
    exact: dict[str, str] = {}
    contains: list[tuple[str, str]] = []
    networks: list[tuple[Network, str]] = []
    for i, entry in enumerate(entries, 1):
        where = f"{name}: machine #{i}"
        unknown = set(entry) - {"class", "user_agent_is", "user_agent_contains", "networks"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]}")
        cls = entry.get("class")
        if not isinstance(cls, str) or not 0 < len(cls) <= 40 or cls == BROWSER:
            raise ValueError(f"{where}: class must be a short name other than {BROWSER!r}")
        for ua in _strings(entry, "user_agent_is", where):
            exact.setdefault(ua.lower(), cls)
        contains.extend((ua.lower(), cls) for ua in _strings(entry, "user_agent_contains", where))
        for text_net in _strings(entry, "networks", where):
            try:
                networks.append((ipaddress.ip_network(text_net), cls))
            except ValueError as exc:
                raise ValueError(f"{where}: networks: {exc}") from None
    return Machines(exact, tuple(contains), tuple(networks))


@cache
def _shipped() -> Machines:
    text = resources.files("beacon_proxy").joinpath("data/machines.toml").read_text("utf-8")
    return load_machines(text)


def classify(user_agent: str | None, ip: str | None) -> tuple[str, bool]:
    """``(ua_class, machine)`` by the shipped data file (see the module docstring)."""
    return _shipped().classify(user_agent, ip)
