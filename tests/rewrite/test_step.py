from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.step import (
    Copy,
    CopyStep,
    ListMailOnly,
    Recipient,
    TraceHeader,
    TraceStep,
    _address,
    _clean,
    _trace,
    received_header,
    run_steps,
)
from beacon_proxy.spool.envelope import Envelope

DATA = b"Subject: x\r\n\r\nbody\r\n"


def _env(**kw: object) -> Envelope:
    base: dict[str, object] = {"queue_id": "Q1", "sender": "a@x.org", "recipients": ("b@y.org",),
                               "received_at": 0.0, "client_address": "192.0.2.1",
                               "client_helo": "client.example"}
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


async def test_trace_step_prepends_received_and_keeps_the_rest() -> None:
    prepared = await TraceStep("relay.example").prepare(_env(), DATA)
    assert prepared.size == len(DATA)
    copy = prepared.render("b@y.org", Policy.REFUSED)
    assert copy.held is None
    assert copy.data.endswith(DATA)
    head = copy.data[: -len(DATA)].decode()
    assert head == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby relay.example (beacon-proxy) with ESMTP id Q1\r\n"
        "\tfor <b@y.org>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )


def test_hostile_values_cannot_inject_headers() -> None:
    env = _env(client_helo="evil\r\nBcc: x@y.org", client_address="::1")
    header = received_header(env, "b@y.org>\r\nX-Evil: 1", "relay.example")
    assert header.count(b"\r\n") == 3
    assert b"X-Evil: 1\r\n" not in header and b"\r\nBcc" not in header
    assert b"[IPv6:::1]" in header


def test_non_ascii_recipient_needs_smtputf8() -> None:
    assert "ü".encode() in received_header(_env(smtputf8=True), "ü@y.org", "r")
    assert received_header(_env(), "ü@y.org", "r").isascii()


def _mark(tag: bytes) -> CopyStep:
    def step(copy: Copy, recipient: Recipient) -> Copy:
        return Copy(copy.data + tag, {**copy.report, tag.decode(): recipient.address})
    return step


def _hold(copy: Copy, recipient: Recipient) -> Copy:
    return Copy(b"", copy.report, held="no")


def test_steps_run_in_order_and_a_held_copy_stops_them() -> None:
    rcpt = Recipient(_env(), "b@y.org", Policy.REFUSED)
    out = run_steps([_mark(b"1"), _mark(b"2")], Copy(b"x"), rcpt)
    assert out.data == b"x12" and out.report == {"1": "b@y.org", "2": "b@y.org"}
    held = run_steps([_mark(b"1"), _hold, _mark(b"2")], Copy(b"x"), rcpt)
    assert held.held == "no" and "2" not in held.report


def test_trace_header_step() -> None:
    out = TraceHeader("relay.example")(Copy(DATA, {"a": 1}), Recipient(_env(), "b@y.org",
                                                                      Policy.REFUSED))
    assert out.data.startswith(b"Received: from client.example") and out.data.endswith(DATA)
    assert out.report == {"a": 1}


def test_list_mail_only_steps_leave_the_relays_own_bounces_alone() -> None:
    def mark(copy: Copy, recipient: Recipient) -> Copy:
        return Copy(b"X-Mark: 1\r\n" + copy.data, copy.report)

    step = ListMailOnly(mark)
    dsn = Recipient(_env(queue_id="Q2", sender="", bounce_of="Q1"), "a@x.org", Policy.REFUSED)
    assert step(Copy(DATA), dsn).data == DATA
    mail = Recipient(_env(), "b@y.org", Policy.REFUSED)
    assert step(Copy(DATA), mail).data == b"X-Mark: 1\r\n" + DATA


def test_trace_header_step_keeps_each_envelopes_own_trace() -> None:
    """The step keeps the message's part of the line for the last envelope only: copies
    of messages in turn (two envelopes equal but for the queue id, one with SMTPUTF8,
    an IPv6 client) each get the line ``received_header`` makes for them."""
    envelopes = [_env(), _env(queue_id="Q2"), _env(client_address="2001:db8::1",
                                                   client_helo="h(x)", smtputf8=True,
                                                   received_at=86400.5)]
    step = TraceHeader("relay.example")
    for env in [*envelopes, envelopes[0], envelopes[0], envelopes[2], envelopes[1]]:
        for rcpt in ("b@y.org", "c@y.org", "d\u00e9@y.org"):
            copy = step(Copy(DATA), Recipient(env, rcpt, Policy.REFUSED))
            assert copy.data == received_header(env, rcpt, "relay.example") + DATA


def _clean_by_loop(text: str, limit: int = 255) -> str:
    """The filter as it was, one character at a time (the reference)."""
    out = "".join(c for c in text if "!" <= c <= "~" and c not in "()[];<>\\")
    return out[:limit] or "unknown"


def _address_by_loop(addr: str) -> str:
    return "".join(c for c in addr if c >= " " and c not in "<>\x7f")[:320]


_TRACE_CHARS = st.one_of(st.characters(), st.sampled_from(list("()[];<>\\ !~\x7f\x00\x1f\r\n\t")))


@settings(max_examples=500)
@given(st.lists(_TRACE_CHARS, max_size=80).map("".join), st.integers(0, 100))
def test_trace_values_are_filtered_as_one_character_at_a_time(text: str, limit: int) -> None:
    assert _clean(text, limit) == _clean_by_loop(text, limit)
    assert _clean(text) == _clean_by_loop(text)
    assert _address(text) == _address_by_loop(text)


def _trace_by_hand(envelope: Envelope, hostname: str) -> tuple[str, str]:
    """``step._trace`` before it kept the last client's text and date (the reference)."""
    ip = _clean(envelope.client_address, 64)
    prefix = "IPv6:" if ":" in ip else ""
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(envelope.received_at))
    head = (f"Received: from {_clean(envelope.client_helo)} ([{prefix}{ip}])\r\n"
            f"\tby {_clean(hostname)} (beacon-proxy) with {_clean(envelope.protocol, 16)}"
            f" id {_clean(envelope.queue_id, 64)}")
    return head, when


_TRACE_TEXT = st.sampled_from(["", "client.example", "h(x)", "127.0.0.1", "2001:db8::1",
                               "ESMTP", "ESMTPS", "local", "Q1", "Q2", "18C0A1B2C3D4E5F6",
                               "\u00e9 x<y>", "a" * 300])


@settings(max_examples=200)
@given(st.lists(st.tuples(_TRACE_TEXT, _TRACE_TEXT, _TRACE_TEXT, _TRACE_TEXT,
                          st.sampled_from([0.0, 0.999, 1.0, 86399.5, 86400.0, 1.7649e9,
                                           1.7649e9 + 0.25, 1.7649e9 + 1.0]),
                          st.sampled_from(["relay.example", "relay.bench", ""])),
                min_size=1, max_size=8))
def test_trace_is_the_trace_made_afresh(runs: list[tuple[str, str, str, str, float, str]]
                                        ) -> None:
    """Envelopes in any order (the same client or another, the same second or another):
    each gets the trace made afresh, though the last client's text and date are kept."""
    for helo, address, protocol, queue_id, received_at, hostname in runs:
        env = _env(client_helo=helo, client_address=address, protocol=protocol,
                   queue_id=queue_id or "Q0", received_at=received_at)
        assert _trace(env, hostname) == _trace_by_hand(env, hostname)
