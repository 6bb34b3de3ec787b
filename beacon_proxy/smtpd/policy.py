"""Relay policy: who may send mail through this hop.

A pure function, so the SMTP handler only asks and never decides:

    >>> from ipaddress import ip_network
    >>> nets = [ip_network("192.0.2.0/24"), ip_network("2001:db8::/32")]
    >>> relay_allowed("192.0.2.7", False, nets), relay_allowed("::ffff:192.0.2.7", False, nets)
    (True, True)
    >>> relay_allowed("198.51.100.1", False, nets), relay_allowed("198.51.100.1", True, nets)
    (False, True)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["relay_allowed"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def relay_allowed(client_ip: str, authenticated: bool, networks: Sequence[IpNetwork]) -> bool:
    """True when the client may relay: it authenticated, or its address is allowed.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, as a dual-stack socket
    reports IPv4 peers) is also checked as the IPv4 address it stands for.  A
    peer that is not an IP address at all is never allowed by address.
    """
    if authenticated:
        return True
    try:
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    return any(a.version == net.version and a in net for a in candidates for net in networks)
