"""End-to-end: consent and suppression decide each copy, at dispatch time, in the real relay."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.harness import (
    PIXEL,
    Proxy,
    Upstream,
    newsletter,
    strip_trace,
    wait_for,
    with_footer,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("store_backend")]

PUBLIC = "https://prefs.sender.example"
PIXEL_URL = b"https://t.example.com/open?id=abc123"


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, f"""
[web]
public_url = "{PUBLIC}"
[tokens]
secret = "e2e-secret-0123456789abcdef"
[delivery]
retry_min = 3600
retry_max = 3600
""", upstream=upstream.port)
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _cli_ok(proxy: Proxy, *args: str) -> None:
    result = proxy.cli(*args)
    assert result.returncode == 0, result.stderr


def _html(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_refused_granted_and_suppressed_recipients_get_their_own_copy(
    proxy: Proxy, upstream: Upstream
) -> None:
    _cli_ok(proxy, "consent", "set", "granted@example.net", "--beacons", "granted")
    _cli_ok(proxy, "consent", "set", "refused@example.net", "--beacons", "refused")
    _cli_ok(proxy, "suppress", "add", "gone@example.net", "--reason", "unsubscribed")
    msg = newsletter()
    rcpts = ["granted@example.net", "refused@example.net", "unknown@example.net",
             "gone@example.net"]
    qid = proxy.send("news@sender.example", rcpts, msg)
    wait_for(lambda: len(upstream.messages) == 3, what="three copies")
    wait_for(lambda: proxy.events("suppressed"), what="the suppressed log line")

    (granted,) = upstream.to("granted@example.net")
    html = _html(granted.data)
    assert PIXEL_URL.decode() not in html
    assert f'<img src="{PUBLIC}/o/' in html
    for who in ("refused@example.net", "unknown@example.net"):  # unknown: refused by default
        (copy,) = upstream.to(who)
        assert PIXEL_URL not in copy.data
        assert "t.example.com" not in _html(copy.data)
        assert "caf\u00e9" in _html(copy.data)  # everything else kept
    assert upstream.to("gone@example.net") == []

    (suppressed,) = proxy.events("suppressed")
    assert suppressed["recipient"] == "gone@example.net" and suppressed["queue_id"] == qid
    assert suppressed["scope"] == "global"  # for every list, whatever the message's list_id
    delivered = {e["recipient"]: e for e in proxy.wait_events("delivered", 3)}
    assert delivered["granted@example.net"]["policy"] == "granted"
    assert delivered["refused@example.net"]["policy"] == "refused"
    assert delivered["refused@example.net"]["beacons"] == 1
    assert delivered["refused@example.net"]["actions"] == {"strip": 1}
    assert delivered["granted@example.net"]["actions"] == {"rewrite": 1}
    assert "https://t.example.com" not in str(delivered)  # no full URLs in the log


def test_refused_copy_differs_from_the_input_only_at_the_pixel(
    proxy: Proxy, upstream: Upstream
) -> None:
    msg = newsletter()
    proxy.send("news@sender.example", ["ann@example.net"], msg)
    (copy,) = wait_for(lambda: upstream.to("ann@example.net"), what="the copy")
    relayed = with_footer(msg, copy.data)  # the footer: the relay's only other change
    assert _html(strip_trace(copy.data)) == _html(relayed).replace(PIXEL, "")
    head = relayed[: relayed.index(b"Content-Type: text/html")]
    assert strip_trace(copy.data).startswith(head)  # headers and text part byte-identical


def test_list_scoped_suppression_blocks_only_that_list(proxy: Proxy, upstream: Upstream) -> None:
    _cli_ok(proxy, "suppress", "add", "ann@example.net", "--list", "deals.sender.example")
    proxy.send("news@sender.example", ["ann@example.net"],
               newsletter("Deals", list_id="deals.sender.example"))
    proxy.send("news@sender.example", ["ann@example.net"],
               newsletter("News", list_id="news.sender.example"))
    (copy,) = wait_for(lambda: upstream.to("ann@example.net"), what="the news copy")
    assert b"Subject: News" in copy.data
    (suppressed,) = wait_for(lambda: [e for e in proxy.events("suppressed")
                                      if e["recipient"] == "ann@example.net"],
                             what="the deals suppression")
    assert (suppressed["scope"], suppressed["list_id"]) == ("list", "deals.sender.example")
    assert len(upstream.to("ann@example.net")) == 1


def test_consent_change_applies_to_mail_still_queued(proxy: Proxy, upstream: Upstream) -> None:
    proxy.send("news@sender.example", ["flaky1@example.net"], newsletter())
    wait_for(lambda: proxy.events("deferred"), what="the first attempt to be deferred")
    _cli_ok(proxy, "consent", "set", "flaky1@example.net", "--beacons", "granted")
    _cli_ok(proxy, "queue", "retry", "--all")  # the retry happens after the change, not by a clock
    (copy,) = wait_for(lambda: upstream.to("flaky1@example.net"), what="the retried copy")
    assert f'{PUBLIC}/o/'.encode() in copy.data
    assert PIXEL_URL not in copy.data


def test_suppression_added_while_queued_stops_delivery(proxy: Proxy, upstream: Upstream) -> None:
    proxy.send("news@sender.example", ["flaky1@example.net"], newsletter())
    wait_for(lambda: proxy.events("deferred"), what="the first attempt to be deferred")
    _cli_ok(proxy, "suppress", "add", "flaky1@example.net")
    _cli_ok(proxy, "queue", "retry", "--all")  # the retry happens after the change, not by a clock
    wait_for(lambda: proxy.events("suppressed"), what="the suppression at the retry")
    assert upstream.to("flaky1@example.net") == []
    wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")


def test_a_change_by_another_process_applies_to_the_very_next_message(
        proxy: Proxy, upstream: Upstream, store_backend: str) -> None:
    """The relay's decision cache holds ann's answer after the first message; the command
    line (another process) changes it; the next message gets the new answer, with no
    wait in between (SQLite: data version; PostgreSQL: the version read in the lookup)."""
    proxy.send("news@sender.example", ["ann@example.net"], newsletter("One", 1))
    (first,) = wait_for(lambda: upstream.to("ann@example.net"), what="the first copy")
    assert f'{PUBLIC}/o/'.encode() not in first.data  # unknown: refused
    proxy.send("news@sender.example", ["ann@example.net"], newsletter("Two", 2))
    wait_for(lambda: len(upstream.to("ann@example.net")) == 2, what="the second copy")
    assert 'beacon_proxy_decision_cache_total{result="hit"} 1.0' in proxy.metrics()
    _cli_ok(proxy, "consent", "set", "ann@example.net", "--beacons", "granted")
    proxy.send("news@sender.example", ["ann@example.net"], newsletter("Three", 3))
    copies = wait_for(lambda: upstream.to("ann@example.net")[2:], what="the third copy")
    assert f'{PUBLIC}/o/'.encode() in copies[0].data and PIXEL_URL not in copies[0].data
    _cli_ok(proxy, "suppress", "add", "ann@example.net")
    proxy.send("news@sender.example", ["ann@example.net"], newsletter("Four", 4))
    wait_for(lambda: [e for e in proxy.events("suppressed")
                      if e["recipient"] == "ann@example.net"], what="the suppression")
    assert len(upstream.to("ann@example.net")) == 3
    # SQLite read those decisions on the event loop (no thread hop); PostgreSQL never does
    loop = re.search(r'^beacon_proxy_decision_reads_total\{on="loop"\} (\S+)$',
                     proxy.metrics(), re.MULTILINE)
    assert loop is not None and (float(loop[1]) > 0) == (store_backend == "sqlite")
