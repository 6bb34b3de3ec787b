"""End-to-end: a refused recipient never gets a beacon, on any path; no message stalls the relay.

The messages of tests/rewrite/hostile.py (each renders in some mail client,
each carries the same tracker) go through the real ``beacon-proxy serve`` to
an unknown recipient (refused by default) and to a consenting one; the
upstream is a real SMTP server.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for
from tests.rewrite.hostile import (
    HELD_FOR_REFUSED,
    MESSAGES,
    POISON,
    amp_json_poison,
    font_face_poison,
    tracker_traces,
)

pytestmark = pytest.mark.e2e

REFUSED = "unknown@example.org"
GRANTED = "granted@example.org"


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, """
[web]
public_url = "https://prefs.sender.example"
[tokens]
secret = "e2e-secret-0123456789abcdef"
[smtp]
max_message_size = 26214400
[delivery]
# A 17 MB copy to a busy loopback peer: a reply later than the timeout would
# count as a failure and the copy would be sent again (a duplicate).
timeout = 300
""", upstream=upstream.port)
    p.start()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _labelled(name: str, data: bytes) -> bytes:
    eol = b"\n" if b"\r\n" not in data else b"\r\n"
    return b"X-Case: " + name.encode() + eol + data


def _case(data: bytes) -> str:
    first = data.split(b"X-Case: ", 1)[1]
    return first.split(b"\n", 1)[0].strip().decode()


def test_every_renderable_message_reaches_refused_recipients_without_the_tracker(
        proxy: Proxy, upstream: Upstream) -> None:
    assert proxy.cli("consent", "set", GRANTED, "--beacons", "granted").returncode == 0
    cases = {**MESSAGES, **POISON}
    for name, build in cases.items():
        proxy.send("news@shop.example", [REFUSED, GRANTED], _labelled(name, build()))
    def delivered(rcpt: str) -> set[str]:
        return {_case(m.data) for m in upstream.to(rcpt)}

    sent_refused = set(cases) - HELD_FOR_REFUSED  # (those are held: deferred, not sent)
    wait_for(lambda: delivered(REFUSED) == sent_refused and delivered(GRANTED) == set(cases),
             240, "every copy delivered")
    held = proxy.wait_events("held", len(HELD_FOR_REFUSED))
    assert {e["recipient"] for e in held} == {REFUSED}
    assert proxy.events("bounced") == []
    refused = {_case(m.data): m.data for m in upstream.to(REFUSED)}
    granted = {_case(m.data): m.data for m in upstream.to(GRANTED)}
    assert set(refused) == sent_refused and set(granted) == set(cases)
    leaks = {name: tracker_traces(data) for name, data in refused.items() if tracker_traces(data)}
    assert leaks == {}
    assert all(b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
               for data in refused.values())  # LF-only mail leaves with CRLF
    delivered_copies = len(sent_refused) + len(cases)
    outcomes = {e["recipient"]: e for e in proxy.wait_events("delivered", delivered_copies)}
    assert outcomes  # each copy's outcome is logged
    metrics = proxy.metrics()
    for outcome in ("stripped", "unsigned", "fallback", "rewritten", "unmodified_granted"):
        assert f'beacon_proxy_copies_total{{outcome="{outcome}"}}' in metrics, outcome
    fallbacks = [e for e in proxy.wait_events("delivered", delivered_copies)
                 if e.get("outcome") == "fallback"]
    assert {e["recipient"] for e in fallbacks} == {REFUSED}


def _healthz_answers_within(proxy: Proxy, seconds: float) -> bool:
    started = time.monotonic()
    url = f"http://127.0.0.1:{proxy.web_port}/healthz"
    with urllib.request.urlopen(url, timeout=seconds) as response:
        ok: bool = response.status == 200
    return ok and time.monotonic() - started < seconds


def _poison_then_normal(proxy: Proxy, upstream: Upstream, n: int) -> None:
    """With the poison messages queued, the relay answers and moves normal mail."""
    assert all(_healthz_answers_within(proxy, 1.0) for _ in range(5))
    proxy.send("news@sender.example", [f"after{n}@example.org"], newsletter(n=n))
    started = time.monotonic()
    wait_for(lambda: upstream.to(f"after{n}@example.org"), 10, "the next normal message")
    assert time.monotonic() - started < 10
    assert _healthz_answers_within(proxy, 1.0)


def test_poison_messages_do_not_stall_the_relay_even_after_kill9(
        proxy: Proxy, upstream: Upstream) -> None:
    # Large versions of the two repros; "tempfail" keeps them queued (always 451).
    poison = {"amp": _labelled("amp", amp_json_poison(170_000)),
              "font": _labelled("font", font_face_poison(90_000))}
    for data in poison.values():
        proxy.send("news@shop.example", [REFUSED, "tempfail@example.org"], data)
    _poison_then_normal(proxy, upstream, 1)
    wait_for(lambda: len(upstream.to(REFUSED)) == 2, 30, "the poison messages' refused copies")
    assert all(tracker_traces(m.data) == [] for m in upstream.to(REFUSED))
    proxy.kill9()
    proxy.start()
    _poison_then_normal(proxy, upstream, 2)
