from __future__ import annotations

import ipaddress

import pytest

from beacon_proxy.smtpd.policy import relay_allowed

NETS = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("2001:db8:1::/48"),
)


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("127.0.0.1", True),
        ("192.0.2.255", True),
        ("192.0.3.1", False),
        ("198.51.100.7", False),
        ("2001:db8:1::25", True),
        ("2001:db8:1:ffff:ffff:ffff:ffff:ffff", True),
        ("2001:db8:2::25", False),
        ("::1", False),  # not listed: IPv6 loopback is not IPv4 loopback
        ("::ffff:192.0.2.9", True),  # IPv4-mapped, as a dual-stack socket reports it
        ("::ffff:127.0.0.1", True),
        ("::ffff:198.51.100.7", False),
        ("::192.0.2.9", False),  # IPv4-compatible (deprecated) is not IPv4-mapped
        ("fe80::1%eth0", False),
        ("", False),
        ("not-an-ip", False),
        ("192.0.2.1:25", False),
    ],
)
def test_networks(ip: str, allowed: bool) -> None:
    assert relay_allowed(ip, False, NETS) is allowed


@pytest.mark.parametrize("ip", ["198.51.100.7", "2001:db8:2::25", "", "garbage"])
def test_authenticated_clients_may_relay_from_anywhere(ip: str) -> None:
    assert relay_allowed(ip, True, NETS)
    assert relay_allowed(ip, True, ())


def test_no_networks_means_no_relay_without_auth() -> None:
    assert not relay_allowed("127.0.0.1", False, ())


def test_ipv6_network_contains_ipv6_only() -> None:
    nets = (ipaddress.ip_network("::/0"),)
    assert relay_allowed("2001:db8::1", False, nets)
    assert not relay_allowed("192.0.2.1", False, nets)
    assert relay_allowed("::ffff:192.0.2.1", False, nets)  # still an IPv6 address


def test_mapped_address_matches_ipv4_everything() -> None:
    nets = (ipaddress.ip_network("0.0.0.0/0"),)
    assert relay_allowed("::ffff:10.1.2.3", False, nets)
    assert not relay_allowed("2001:db8::1", False, nets)
