"""The relay's whole per-recipient step list (``app.copy_steps``) against the list as
it was before round 9 (the footer, the unsubscribe headers for list mail, the trace
header and the CRLF proof, each its own step, the trace made afresh for every envelope), over
hostile messages, envelopes and settings: byte for byte the same copies and reports.

Round 9 joined the unsubscribe and trace steps into one (``UnsubscribeAndTrace``),
kept the last client's trace text and date (``step._trace``) and packed token
claims in one join (``tokens._pack``); each has its own differential next to it.
This one runs them together, as the relay does, in runs of envelopes (the same
client again, another one, a bounce in between, the same second or not), so that
whatever one step keeps from the last copy is exercised by the next.
"""

from __future__ import annotations

import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import beacon_proxy.tokens as tokens_module
from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config, WebConfig
from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.lineends import CrlfProof
from beacon_proxy.rewrite.links import PreferenceLinks
from beacon_proxy.rewrite.step import (
    Copy,
    CopyStep,
    ListMailOnly,
    Recipient,
    _received,
    run_steps,
)
from beacon_proxy.rewrite.unsubscribe import (
    RECEIPT_FIELDS,
    UnsubscribeHeaders,
    unsubscribe_fields,
)
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens
from tests.rewrite.test_step import _trace_by_hand

NOW = 1_764_900_000  # every token minted at this second: the two lists mint the same


class _OldUnsubscribe(UnsubscribeHeaders):
    """``UnsubscribeHeaders.__call__`` before round 9 (the reference; with the refused
    copy's read-receipt fields dropped, as the step does since)."""

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        from beacon_proxy.headerfacts import header_block
        from beacon_proxy.rewrite.mime import header_fields

        data = copy.data
        block = header_block(data)
        fields = header_fields(block)
        report = dict(copy.report)
        if recipient.policy is Policy.REFUSED and any(n in RECEIPT_FIELDS for n, _ in fields):
            fields = [(n, raw) for n, raw in fields if n not in RECEIPT_FIELDS]
            report["read_receipt"] = "removed"
        kept = b"".join(raw for _, raw in fields)
        found = {n for n, _ in fields if n in ("list-unsubscribe", "list-unsubscribe-post")}
        if self.sender == "keep" and "list-unsubscribe" in found:
            return Copy(kept + data[len(block):], {**report, "unsubscribe": "kept"})
        url = self.link(recipient)
        if url is None:
            return Copy(kept + data[len(block):], {**report, "unsubscribe": "none"})
        eol = b"\n" if block.endswith(b"\n") and not block.endswith(b"\r\n") else b"\r\n"
        ours = unsubscribe_fields(url, self.mailto, eol)
        rest = b"".join(raw for n, raw in fields if n not in found)
        new = b"".join((ours, rest, memoryview(data)[len(block):]))
        return Copy(new, {**report, "unsubscribe": "replaced" if found else "added"})


class _OldTrace:
    """``TraceHeader`` before round 9: the trace made afresh for every copy."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        trace = _trace_by_hand(recipient.envelope, self.hostname)
        return Copy(_received(trace, recipient.envelope, recipient.address) + copy.data,
                    copy.report)


def _old_steps(cfg: Config, tokens: Tokens, hostname: str | None) -> list[CopyStep]:
    links = PreferenceLinks(tokens, cfg.web.public_url,
                            forward=cfg.web.sender_unsubscribe == "replace")
    steps: list[CopyStep] = [
        ListMailOnly(Footer(links, default_language=cfg.web.default_language)),
        ListMailOnly(_OldUnsubscribe(links, mailto=cfg.web.unsubscribe_mailto,
                                     sender=cfg.web.sender_unsubscribe)),
    ]
    if hostname is not None:
        steps += [_OldTrace(hostname), CrlfProof()]
    return steps


_HEADERS = st.sampled_from([
    b"From: News <news@sender.example>", b"To: ann@example.org", b"Subject: Hello",
    b"List-Id: News <news.sender.example>", b"List-Unsubscribe: <https://s.example/u?x=1>",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    b"list-unsubscribe: <mailto:u@s.example>,\r\n <https://s.example/u>",
    b"LIST-UNSUBSCRIBE:\n\t<https://s.example/lf>", b"MIME-Version: 1.0",
    b"Content-Type: text/html; charset=utf-8", b"Content-Type: text/plain",
    b"Content-Transfer-Encoding: quoted-printable", b"X-Folded: a\r\n\tb\r\n c",
    b"Subject: =?utf-8?q?caf=C3=A9?=", b"Subject: caf\xc3\xa9 8-bit", b"X-Nul: a\x00b",
    b"Received: from x by y", b" leading-space-continuation", b"NoColonLine",
    b"Disposition-Notification-To: news@sender.example", b"RETURN-RECEIPT-TO:\r\n <r@s.example>",
])
_BODIES = st.sampled_from([
    b"", b"plain text\r\n", b"<html><body><p>Hi</p><img src=\"https://t.example/o.gif\">"
    b"</body></html>\r\n", b".\r\n..dots\r\n", b"bare\nLF\nbody\n", b"\x00\xff\xfe",
    b"<p>" + b"x" * 2000 + b"</p>\r\n", b"=E9t=C3=A9\r\n",
])
_ENVELOPES = st.tuples(
    st.sampled_from(["client.example", "", "h(x)\r\nInjected: 1", "\u00e9.example"]),
    st.sampled_from(["192.0.2.7", "2001:db8::1", "", "::ffff:192.0.2.7"]),
    st.sampled_from(["ESMTP", "ESMTPS", "ESMTPSA", "x" * 40]),
    st.sampled_from([0.0, 1.5e9, 1.5e9 + 0.5, 1.5e9 + 1.0, float(NOW)]),
    st.sampled_from([None, "Q0"]),  # bounce_of
    st.sampled_from(["ann@example.org", "Bob+x@Example.ORG", "\"a b\"@example.org",
                     "j\u00f6rg@b\u00fccher.example", "x@[192.0.2.1]"]),
    st.booleans(),  # smtputf8
    st.sampled_from(list(Policy)),
)


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "time", types.SimpleNamespace(time=lambda: NOW))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(runs=st.lists(st.tuples(st.lists(_HEADERS, max_size=6), st.sampled_from([b"\r\n", b"\n"]),
                               st.booleans(), _BODIES, _ENVELOPES),
                     min_size=1, max_size=5),
       sender=st.sampled_from(["replace", "keep"]),
       mailto=st.sampled_from(["", "unsubscribe@relay.example"]),
       language=st.sampled_from(["en", "ja"]),
       hostname=st.sampled_from(["relay.example", None, "r\u00e9lay"]))
def test_the_copies_are_the_old_steps_copies(
        runs: list[tuple[list[bytes], bytes, bool, bytes, tuple[Any, ...]]], sender: str,
        mailto: str, language: str, hostname: str | None) -> None:
    cfg = Config(web=WebConfig(public_url="https://prefs.example", unsubscribe_mailto=mailto,
                               sender_unsubscribe=sender,  # type: ignore[arg-type]
                               default_language=language))  # type: ignore[arg-type]
    tokens = Tokens(["round-9-attack-secret"])
    new_steps = copy_steps(cfg, tokens, hostname=hostname)
    old_steps = _old_steps(cfg, tokens, hostname)
    for n, (fields, eol, separated, body, env_values) in enumerate(runs):
        helo, address, protocol, received_at, bounce_of, rcpt, utf8, policy = env_values
        head = eol.join(fields)
        data = head + eol + eol + body if separated else head + body
        env = Envelope(f"Q{n}", "news@sender.example", (rcpt,), received_at,
                       client_address=address, client_helo=helo, protocol=protocol,
                       list_id="news.sender.example", bounce_of=bounce_of, smtputf8=utf8)
        recipient = Recipient(env, rcpt, policy, data)
        for _ in range(2):  # the same envelope again: what the steps kept
            new = run_steps(new_steps, Copy(data), recipient)
            old = run_steps(old_steps, Copy(data), recipient)
            assert bytes(new.data) == bytes(old.data)
            assert new.report == old.report
            assert (new.held, new.wait, new.crlf, new.dots) == (
                old.held, old.wait, old.crlf, old.dots)
