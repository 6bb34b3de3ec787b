"""Which clients count together for a limit: the SMTP side's and the web side's.

An IPv4 address counts on its own; an IPv6 address by its ``/64`` (what one
site or subscriber is usually given, so the next address in the same network
is no way around a limit); an IPv4-mapped IPv6 address (a dual-stack socket's
view of an IPv4 client) as the IPv4 address it stands for.

    >>> client_key("192.0.2.7"), client_key("::ffff:192.0.2.7")
    ('192.0.2.7', '192.0.2.7')
    >>> client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    True
    >>> client_key("2001:db8:1:2::1"), client_key("not an address"), client_key(None)
    ('2001:db8:1:2::/64', 'not an address', '')
"""

from __future__ import annotations

import ipaddress

__all__ = ["client_key"]


def client_key(ip: str | None) -> str:
    """The group ``ip`` counts in (see the module); text that is no address is its own."""
    if not ip:
        return ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
