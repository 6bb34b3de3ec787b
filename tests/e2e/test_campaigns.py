"""End-to-end: campaign diffing in the real relay (issue 9).

Twelve personalised copies of one newsletter, each to one recipient, whose
hero image URL carries an opaque per-recipient id (no rule, normal size, no
hash of the address): the relay compares the copies and removes the hero
from refused copies, while the campaign banner, the same in every copy, stays.
"""

from __future__ import annotations

import functools
import secrets
import string
from pathlib import Path

import pytest

from tests.consent.pg import temporary_database
from tests.e2e.harness import Captured, Proxy, Upstream, wait_for

pytestmark = pytest.mark.e2e

PUBLIC = "https://prefs.sender.example"
BANNER = "https://cdn.shop.example/campaigns/winter-banner.png"
HERO = "https://img.shop.example/p/"
SECRET = "e2e-secret-0123456789abcdef"


def _opaque_id() -> str:
    """A per-recipient id as shops mint them: 14 characters, mixed case and digits."""
    alphabet = string.ascii_letters + string.digits
    while True:
        token = "".join(secrets.choice(alphabet) for _ in range(14))
        if any(c.isdigit() for c in token):
            return token


def personalised(n: int, subscriber: str) -> bytes:
    """Copy ``n`` of the campaign, for one subscriber (CRLF, quoted-printable-free)."""
    html = (
        "<!DOCTYPE html><html><body><table width=\"600\"><tr><td>"
        f"<img src=\"{BANNER}\" width=\"600\" height=\"120\" alt=\"Winter sale\">"
        f"<p>Dear Customer{n}, these picks are for you.</p>"
        f"<img src=\"{HERO}{subscriber}/hero.jpg\" width=\"600\" height=\"300\" alt=\"\">"
        "<p><a href=\"https://shop.example/winter\">Shop now</a></p>"
        "</td></tr></table></body></html>"
    )
    lines = [
        "From: Shop <news@shop.example>",
        f"To: Customer{n} <r{n}@example.org>",
        f"Subject: Customer{n}, your winter picks",
        f"Message-ID: <c{n}.{secrets.token_hex(8)}@shop.example>",
        "List-Id: Shop news <news.shop.example>",
        "List-Unsubscribe: <https://shop.example/unsub>",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        "",
        html,
        "",
    ]
    return "\r\n".join(lines).encode()


def _proxy(tmp_path: Path, upstream: Upstream, extra: str = "", *, name: str = "node") -> Proxy:
    workdir = tmp_path / name
    workdir.mkdir()
    return Proxy(workdir, f"""
[web]
public_url = "{PUBLIC}"
[tokens]
secret = "{SECRET}"
[delivery]
retry_min = 3600
retry_max = 3600
{extra}
""", upstream=upstream.port)


def _judged_copies(node: Proxy) -> set[int]:
    """How many copies the memory held when ``node`` judged each copy after the first."""
    return {e["campaign_copies"] for e in node.events("delivered")} & set(range(2, 17))


def _send_campaign(proxies: list[Proxy], n: int = 12) -> dict[str, str]:
    """Send ``n`` personalised copies (round robin over the nodes); recipient -> its id."""
    ids: dict[str, str] = {}
    for i in range(n):
        rcpt, subscriber = f"r{i}@example.org", _opaque_id()
        ids[rcpt] = subscriber
        proxies[i % len(proxies)].send("news@shop.example", [rcpt], personalised(i, subscriber))
    return ids


def _copies(upstream: Upstream, ids: dict[str, str]) -> dict[str, Captured]:
    wait_for(lambda: all(upstream.to(r) for r in ids), 60, "every copy delivered")
    return {r: upstream.to(r)[0] for r in ids}


def _hero_kept(copies: dict[str, Captured], ids: dict[str, str]) -> list[str]:
    return [r for r, m in copies.items() if f"{HERO}{ids[r]}/".encode() in m.data]


def test_twelve_personalised_copies_lose_the_hero_and_keep_the_banner(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    # The first copy waits (up to an hour here) for the second; the second wakes it.
    proxy = _proxy(tmp_path, upstream, "[campaign]\nhold = 3600")
    proxies.append(proxy.start())
    ids = _send_campaign([proxy])
    copies = _copies(upstream, ids)
    assert _hero_kept(copies, ids) == []  # all 12, the first one included
    assert all(BANNER.encode() in m.data for m in copies.values())
    # The copy learned first (normally r0's) waited, and went once the second came.
    (waiting,) = proxy.events("waiting")
    assert waiting["campaign_copies"] == 1
    delivered = {e["recipient"]: e for e in proxy.wait_events("delivered", len(ids))}
    assert all(e["campaign_copies"] >= 2 and e.get("campaign_diffed") == 1
               for e in delivered.values())
    # One campaign for all twelve, whatever the merge fields in subject and body.
    assert len({e["campaign"] for e in delivered.values()}) == 1


def test_without_a_hold_only_the_first_copy_keeps_the_hero(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    proxy = _proxy(tmp_path, upstream, "[campaign]\nhold = 0")
    proxies.append(proxy.start())
    ids = _send_campaign([proxy])
    copies = _copies(upstream, ids)
    assert len(_hero_kept(copies, ids)) == 1  # the copy learned first: 11 of 12 lose it
    assert all(BANNER.encode() in m.data for m in copies.values())
    assert proxy.events("waiting") == []


def test_granted_copies_never_wait_and_keep_the_hero(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    proxy = _proxy(tmp_path, upstream, "[campaign]\nhold = 3600\n[policy]\nunknown = 'granted'")
    proxies.append(proxy.start())
    ids = _send_campaign([proxy], 3)
    copies = _copies(upstream, ids)
    assert proxy.events("waiting") == []
    assert sorted(_hero_kept(copies, ids)) == sorted(ids)  # a visible image stays visible


def test_disabled_campaign_diffing_changes_nothing(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    proxy = _proxy(tmp_path, upstream, "[campaign]\nenabled = false\nhold = 3600")
    proxies.append(proxy.start())
    ids = _send_campaign([proxy], 3)
    copies = _copies(upstream, ids)
    assert sorted(_hero_kept(copies, ids)) == sorted(ids)
    assert proxy.events("waiting") == []


def test_two_nodes_on_one_postgresql_database_share_what_they_learn(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    with temporary_database() as url:
        nodes = [_proxy(tmp_path, upstream, f"[store]\nurl = \"{url}\"\n[campaign]\nhold = 0",
                        name=f"node{i}") for i in range(2)]
        for node in nodes:
            proxies.append(node.start())
        # The nodes take turns.  Only the copy learned first passes undiffed: had
        # each node kept its own memory, each would have passed one.
        ids = _send_campaign(nodes)
        copies = _copies(upstream, ids)
        assert len(_hero_kept(copies, ids)) == 1
        for node in nodes:
            judged = functools.partial(_judged_copies, node)
            wait_for(judged, what="a copy judged against the shared memory")
        for node in nodes:
            node.stop()
