"""beacon_proxy/logreport.py: the report's tables, caps, normalising and text."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy import logreport
from beacon_proxy.logreport import MAX_LINE, OTHER, Summary, Tally, normalise, render


def _line(event: str, ts: str = "2026-11-28T10:00:00.000Z", **fields: Any) -> bytes:
    return json.dumps({"ts": ts, "level": "info", "event": event, **fields}).encode() + b"\n"


@pytest.mark.parametrize(("reply", "group"), [
    ("250 2.0.0 Ok: queued as 4Ld2pX1Tz6z9sKb", "250 2.0.0 Ok: queued as <id>"),
    ("250 2.0.0 Ok: queued as QWERTZUIOPASDF", "250 2.0.0 Ok: queued as <id>"),
    ("250 OK id=1uXyZ-000Abc-4Q", "250 OK id=<id>"),
    ("550 5.1.1 <h:0123456789abcdef>: Recipient address rejected",
     "550 5.1.1 <<addr>>: Recipient address rejected"),
    ("421 4.7.0 Try again later, closing connection. (EHLO) mx12.example 2001:db8::1",
     "421 4.7.0 Try again later, closing connection. (EHLO) <id> <id>"),
    ("451 4.7.0 copy held: encrypted or opaque S/MIME content",
     "451 4.7.0 copy held: encrypted or opaque S/MIME content"),
    ("TEMPORARY FAILURE  please   retry", "TEMPORARY FAILURE please retry"),
])
def test_normalise_groups_similar_replies(reply: str, group: str) -> None:
    assert normalise(reply) == group


def test_normalise_bounds_the_key() -> None:
    assert len(normalise("550 5.7.1 " + "word " * 200)) == 200


def test_normalise_scans_a_hostile_reply_once() -> None:
    """Long runs of address characters with no address: each is scanned from its start
    only (from every character, these would take minutes)."""
    assert normalise("550 5.1.1 " + "a" * 200_000 + " @") == "550 5.1.1 " + ("a" * 200)[10:]
    assert normalise("550 " + "a." * 100_000 + "@") == "550 " + ("a." * 100)[4:]
    assert normalise("550 x" + "h:0123456789abcdef." * 20_000 + "@") == \
        ("550 x" + "<addr>." * 40)[:200]


#: The address pattern before its local parts started only where one can begin.
_EVERY_START = re.compile(r"h:[0-9a-f]{16}\b|[^\s<>()\[\]@,;\"']+@[^\s<>()\[\]@,;\"']+")


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["a", "h:", "0123456789abcdef", "h:0123456789abcdef", "@", " ",
                                 "<", ">", ".", "x@y", "[", "]", '"', ",", "9"]),
                max_size=30).map("".join) | st.text(max_size=60))
def test_normalise_finds_the_addresses_it_found_before(text: str) -> None:
    """The same matches, but where a pseudonym runs straight into an address."""
    if re.search(r"h:[0-9a-f]{16}\b[^\s<>()\[\]@,;\"']", text):
        return
    assert [m.group() for m in logreport._ADDRESS.finditer(text)] == \
        [m.group() for m in _EVERY_START.finditer(text)]


def test_tally_counts_overflow_as_other() -> None:
    tally = Tally(("messages", "bytes"), cap=2)
    for key, size in (("a", 10), ("b", 20), ("c", 30), ("a", 1), ("d", 4)):
        tally.add(key, 0)
        tally.add(key, 1, size)
    assert tally.top(None) == [[OTHER, 2, 34], ["b", 1, 20], ["a", 2, 11]]
    assert tally.to_json(1) == {"columns": ["messages", "bytes"], "distinct": 3,
                                "rows": [[OTHER, 2, 34]]}
    long = Tally(cap=5)
    long.add("x" * 500)
    long.add("x" * 500)
    assert long.top(None) == [["x" * 200, 2]]


def test_senders_by_address_and_domain_pseudonyms_as_they_are() -> None:
    s = Summary()
    for sender, size in (("News@Shop.example", 100), ("news@shop.example", 50),
                         ("h:0123456789abcdef", 7), ("h:0123456789abcdef", 3), ("", 1)):
        s.feed(_line("received", sender=sender, size=size, recipients=1), "t")
    top = s.to_json()["top"]
    assert top["senders"]["rows"] == [["news@shop.example", 2, 150],
                                      ["h:0123456789abcdef", 2, 10], ["<>", 1, 1]]
    assert top["sender_domains"]["rows"] == [["shop.example", 2, 150],
                                             ["(pseudonymised)", 2, 10], ["<>", 1, 1]]


def test_since_includes_its_own_moment() -> None:
    s = Summary(since="2026-11-28T10:00:00.000Z")
    for ts in ("2026-11-28T09:59:59.999Z", "2026-11-28T10:00:00.000Z",
               "2026-11-28T10:00:00.001Z"):
        s.feed(_line("received", ts=ts), "t")
    assert (s.events, s.before_since, s.first) == (2, 1, "2026-11-28T10:00:00.000Z")


def test_trackers_removed_and_rewritten_apart() -> None:
    s = Summary()
    s.feed(_line("delivered", policy="refused", beacons=3, vendors=["Mailchimp"],
                 kinds={"img": 2, "css-url": 1}, actions={"strip": 3, "inline": 1},
                 outcome="stripped", size=10, reply="250 ok"), "t")
    s.feed(_line("delivered", policy="granted", beacons=1, vendors=["Braze"], kinds={"img": 1},
                 actions={"rewrite": 1}, outcome="rewritten", size=5, reply="250 ok"), "t")
    s.feed(_line("delivered", policy="refused", beacons=0, outcome="fallback", size=1), "t")
    s.feed(_line("held", outcome="held", reason="past the fallback's limits"), "t")
    t = s.to_json()["trackers"]
    assert (t["copies"], t["beacons"], t["removed"]["beacons"], t["rewritten"]["beacons"]) == (
        2, 4, 3, 1)
    assert t["actions"] == {"strip": 3, "inline": 1, "rewrite": 1}
    assert t["removed"]["vendors"]["rows"] == [["Mailchimp", 1]]
    assert t["removed"]["kinds"]["rows"] == [["img", 2], ["css-url", 1]]
    assert t["rewritten"]["vendors"]["rows"] == [["Braze", 1]]
    assert s.to_json()["outcomes"] == {"fallback": 1, "held": 1, "rewritten": 1, "stripped": 1}


def test_rejections_auth_failures_and_lists() -> None:
    s = Summary()
    s.feed(_line("rejected", stage="DATA", code=554,
                 reason="Line 12 of the message is longer than 998 octets; wrap it"), "t")
    s.feed(_line("rejected", stage="DATA", code=554,
                 reason="Line 7 of the message is longer than 998 octets; wrap it"), "t")
    s.feed(_line("auth_failed", client_address="203.0.113.9", user="admin"), "t")
    s.feed(_line("suppressed", recipient="a@example.net", list_id="news.shop.example"), "t")
    s.feed(_line("recipient_action", action="suspend-list", list_id="news.shop.example"), "t")
    s.feed(_line("recipient_action", action="stop-tracking", list_id=None), "t")
    r = s.to_json()
    assert r["rejected"]["reasons"]["rows"] == [
        ["DATA 554 Line <n> of the message is longer than <n> octets; wrap it", 2]]
    assert r["rejected"]["stages"] == {"DATA": 2}
    assert r["auth_failed"]["clients"]["rows"] == [["203.0.113.9", 1]]
    assert r["top"]["lists"]["rows"] == [["news.shop.example", 1, 1]]
    assert r["recipient_actions"] == {"stop-tracking": 1, "suspend-list": 1}


def test_read_skips_an_overlong_line_and_goes_on() -> None:
    data = (_line("received") + b"[" * (MAX_LINE * 2 + 5) + b"\n" + _line("received")
            + b"x" * MAX_LINE)  # the last, unterminated and too long
    s = Summary()
    s.read(io.BytesIO(data), "f")
    assert (s.events, s.lines) == (2, 4)
    assert s.to_json()["skipped"]["reasons"] == {"too_long": {"count": 2, "first": "f:2"}}


def test_leading_white_space_and_crlf_are_json() -> None:
    s = Summary()
    s.feed(b"  " + _line("received").rstrip(b"\n") + b"\r\n", "t")
    s.feed(_line("received").decode(), "t")
    assert s.events == 2


def test_more_than_two_days_are_shown_per_day() -> None:
    s = Summary()
    for day in (27, 28, 29):
        for hour in range(0, 24, 1):
            s.feed(_line("received", ts=f"2026-11-{day}T{hour:02d}:00:00.000Z"), "t")
    text = render(s.to_json())
    assert "Per-day volume (UTC)" in text
    assert "  2026-11-28           24" in text
    assert len(s.to_json()["hours"]["rows"]) == 72
