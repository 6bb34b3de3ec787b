"""One grouping of client addresses for every limit (SMTP connections and AUTH, web)."""

from __future__ import annotations

from beacon_proxy.clientkey import client_key


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")


def test_ipv4_counts_alone_also_when_mapped() -> None:
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_what_is_no_address_is_its_own_key() -> None:
    assert client_key(None) == client_key("") == ""
    assert client_key("unix-socket") == "unix-socket"
