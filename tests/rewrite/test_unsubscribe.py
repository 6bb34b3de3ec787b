from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.step import Copy, ListMailOnly, Recipient, TraceHeader, run_steps
from beacon_proxy.rewrite.unsubscribe import (
    RECEIPT_FIELDS,
    UnsubscribeAndTrace,
    UnsubscribeHeaders,
    unsubscribe_fields,
)
from beacon_proxy.spool.envelope import Envelope

URL = "https://prefs.example.com/u/AsOKaW_ukpdRlVanSVysBaLvtvaKEF9BTO7tdxu1r2PY8"
BODY = b"Subject: hi\r\nFrom: news@sender.example\r\n\r\nbody\r\n"
ENV = Envelope("Q1", "news@sender.example", ("ann@example.org",), 0.0)
RCPT = Recipient(ENV, "ann@example.org", Policy.REFUSED)


def _step(**kw: object) -> UnsubscribeHeaders:
    return UnsubscribeHeaders(lambda r: URL, **kw)  # type: ignore[arg-type]


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_adds_exactly_one_pair_and_keeps_the_rest() -> None:
    copy = _step()(Copy(BODY, {"x": 1}), RCPT)
    assert copy.data.endswith(BODY)
    assert copy.data[: -len(BODY)] == (
        f"List-Unsubscribe: <{URL}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n").encode()
    assert copy.report == {"x": 1, "unsubscribe": "added"}
    msg = _parse(copy.data)
    assert msg.get_all("List-Unsubscribe") == [f"<{URL}>"]
    assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


def test_mailto_comes_after_the_https_link() -> None:
    copy = _step(mailto="unsubscribe@example.com")(Copy(BODY), RCPT)
    msg = _parse(copy.data)
    value = str(msg["List-Unsubscribe"])
    assert value == (f"<{URL}>, <mailto:unsubscribe@example.com?subject=unsubscribe>")
    assert max(len(line) for line in copy.data.split(b"\r\n")) <= 998


SENDERS = (b"Subject: hi\r\nList-Unsubscribe: <mailto:u@sender.example>,\r\n"
           b" <https://sender.example/u?s=1>\r\nX-Other: keep me\r\n"
           b"list-unsubscribe-post: List-Unsubscribe=One-Click\r\n"
           b"LIST-UNSUBSCRIBE :<https://dup.example/>\r\n\r\nbody\r\n")


def test_replace_removes_every_sender_field() -> None:
    copy = _step()(Copy(SENDERS), RCPT)
    assert copy.report["unsubscribe"] == "replaced"
    msg = _parse(copy.data)
    assert msg.get_all("List-Unsubscribe") == [f"<{URL}>"]
    assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert msg["X-Other"] == "keep me"
    assert copy.data.endswith(b"Subject: hi\r\nX-Other: keep me\r\n\r\nbody\r\n")


def test_keep_leaves_the_senders_header_and_adds_none() -> None:
    copy = _step(sender="keep")(Copy(SENDERS), RCPT)
    assert copy.data == SENDERS
    assert copy.report["unsubscribe"] == "kept"


def test_keep_still_adds_ours_when_the_sender_has_none() -> None:
    stray = b"Subject: hi\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nb\r\n"
    copy = _step(sender="keep")(Copy(stray), RCPT)
    msg = _parse(copy.data)
    assert msg.get_all("List-Unsubscribe") == [f"<{URL}>"]
    assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


def test_lf_only_messages_get_lf_fields() -> None:
    copy = _step()(Copy(b"Subject: hi\nList-Unsubscribe: <x>\n\nbody\n"), RCPT)
    assert b"\r" not in copy.data
    assert copy.data.endswith(b"Subject: hi\n\nbody\n")


def test_no_link_no_header() -> None:
    copy = UnsubscribeHeaders(lambda r: None)(Copy(BODY), RCPT)
    assert copy.data == BODY
    assert copy.report["unsubscribe"] == "none"


def test_a_body_line_looking_like_the_header_is_not_touched() -> None:
    data = b"Subject: hi\r\n\r\nList-Unsubscribe: <https://in.body/>\r\n"
    copy = _step()(Copy(data), RCPT)
    assert copy.data.endswith(data)


@pytest.mark.parametrize("hostile", [
    b"List-Id: =?UTF-8?Q?x=0D=0ABcc:_evil@attacker.example?= <news.example>\r\n",
    b"Subject: =?UTF-8?Q?hi=0ABcc:_evil@attacker.example?=\r\n",
    b"Subject: hi\rBcc: evil@attacker.example\r\n",
    b"From: \"a\r\n\tBcc: evil\" <x@y>\r\n",
    b"List-Unsubscribe: <https://x.example/>\r\nBcc: evil@attacker.example\r\n",
])
def test_nothing_from_the_message_goes_into_our_fields(hostile: bytes) -> None:
    data = hostile + b"To: ann@example.org\r\n\r\nbody\r\n"
    copy = _step(mailto="u@example.com")(Copy(data), RCPT)
    ours = unsubscribe_fields(URL, "u@example.com")
    assert copy.data.startswith(ours)
    rest = copy.data[len(ours):]
    assert rest in (data, data.replace(b"List-Unsubscribe: <https://x.example/>\r\n", b""))



# -- read-receipt requests: not in a refused copy ---------------------------------

GRANTED = Recipient(ENV, "ann@example.org", Policy.GRANTED)
RECEIPTS = (b"Subject: hi\r\nDisposition-Notification-To: news@sender.example\r\n"
            b"X-Other: keep me\r\nDISPOSITION-NOTIFICATION-OPTIONS: signed-receipt-protocol\r\n"
            b" =optional,pkcs7-signature\r\nreturn-receipt-to:\r\n\t<news@sender.example>\r\n"
            b"X-Confirm-Reading-To : news@sender.example\r\n"
            b"List-Unsubscribe: <https://sender.example/u>\r\n\r\n"
            b"Disposition-Notification-To: a body line, not a field\r\n")


@pytest.mark.parametrize("sender", ["replace", "keep"])
def test_a_refused_copy_asks_for_no_read_receipt(sender: str) -> None:
    copy = _step(sender=sender)(Copy(RECEIPTS, {"x": 1}), RCPT)
    assert copy.report == {"x": 1, "read_receipt": "removed",
                           "unsubscribe": "replaced" if sender == "replace" else "kept"}
    msg = _parse(copy.data)
    for name in ("Disposition-Notification-To", "Disposition-Notification-Options",
                 "Return-Receipt-To", "X-Confirm-Reading-To"):
        assert msg.get_all(name) is None, name
    assert msg["X-Other"] == "keep me"
    assert msg["Subject"] == "hi"
    assert copy.data.endswith(b"X-Other: keep me\r\n" + (
        b"List-Unsubscribe: <https://sender.example/u>\r\n" if sender == "keep" else b"")
        + b"\r\nDisposition-Notification-To: a body line, not a field\r\n")


def test_a_granted_copy_keeps_its_read_receipt_request() -> None:
    copy = _step()(Copy(RECEIPTS), GRANTED)
    assert "read_receipt" not in copy.report
    msg = _parse(copy.data)
    assert msg["Disposition-Notification-To"] == "news@sender.example"
    assert str(msg["Return-Receipt-To"]).strip() == "<news@sender.example>"


def test_a_refused_copy_without_a_link_still_loses_the_request() -> None:
    copy = UnsubscribeHeaders(lambda r: None)(Copy(RECEIPTS), RCPT)
    assert copy.report == {"unsubscribe": "none", "read_receipt": "removed"}
    assert _parse(copy.data).get_all("Disposition-Notification-To") is None
    assert copy.data.startswith(b"Subject: hi\r\nX-Other: keep me\r\n")


def test_a_header_without_a_request_is_not_split() -> None:
    """Look-alikes of the fields' names are other fields: kept."""
    data = (b"Subject: return-receipt-tomorrow\r\nX-Disposition-Notification-Tox: 1\r\n"
            b"\r\nbody\r\n")
    copy = _step()(Copy(data), RCPT)
    assert copy.data.endswith(data)
    assert "read_receipt" not in copy.report


def _fresh_reading(step: UnsubscribeHeaders, copy: Copy, policy: Policy = Policy.REFUSED
                   ) -> Copy:
    """The step as it was before it kept its reading of the last header: every header
    split into fields anew (a model written apart from the step)."""
    from beacon_proxy.headerfacts import header_block
    from beacon_proxy.rewrite.mime import header_fields

    data = copy.data
    block = header_block(data)
    fields = header_fields(block)
    names = {"list-unsubscribe", "list-unsubscribe-post"}
    found = {name for name, _ in fields if name in names}
    report = dict(copy.report)
    if policy is Policy.REFUSED and any(name in RECEIPT_FIELDS for name, _ in fields):
        fields = [(name, raw) for name, raw in fields if name not in RECEIPT_FIELDS]
        report["read_receipt"] = "removed"
    if step.sender == "keep" and "list-unsubscribe" in found:
        return Copy(b"".join(raw for _, raw in fields) + data[len(block):],
                    {**report, "unsubscribe": "kept"})
    eol = b"\n" if block.endswith(b"\n") and not block.endswith(b"\r\n") else b"\r\n"
    ours = unsubscribe_fields(URL, step.mailto, eol)
    rest = b"".join(raw for name, raw in fields if name not in names)
    return Copy(ours + rest + data[len(block):],
                {**report, "unsubscribe": "replaced" if found else "added"})


@pytest.mark.parametrize("sender", ["replace", "keep"])
def test_a_kept_reading_gives_the_copies_of_a_fresh_one(sender: str) -> None:
    """The step keeps its reading of the last header section: copies of one message
    (the same header, bodies that differ), then other headers (ours in them or not, LF
    line ends, a header equal to the last but one, a header only, one of the same
    length with other bytes), each copy as a fresh reading of its own header makes it."""
    lf = SENDERS.replace(b"\r\n", b"\n")
    plain = b"Subject: hi\r\nList-Id: <news.sender.example>\r\n\r\nbody\r\n"
    folded = SENDERS.replace(b"X-Other: keep me", b"X-Other: keep\r\n me")
    inputs = [SENDERS, SENDERS.replace(b"body", b"other body"), SENDERS + b"more\r\n",
              plain, plain.replace(b"body", b"b2"), SENDERS, lf, lf + b"tail\n", folded,
              BODY, b"List-Unsubscribe: <https://x.example/>\r\n", SENDERS, plain,
              SENDERS.replace(b"keep me", b"KEEP ME"),  # the same length, other bytes
              SENDERS.replace(b"X-Other", b"List-Unsu"), RECEIPTS, RECEIPTS,
              SENDERS.replace(b"X-Other: keep me", b"Return-Receipt-To: <s@x>"),
              RECEIPTS.replace(b"Disposition-Notification-To", b"Disposition-Notification-Tx")]
    step = _step(sender=sender)
    for data in inputs:
        for rcpt in (RCPT, GRANTED, RCPT):
            copy = Copy(bytes(bytearray(data)), {"n": len(data)})  # a fresh object, as copies are
            got = step(copy, rcpt)
            want = _fresh_reading(step, copy, rcpt.policy)
            assert (got.data, got.report) == (want.data, want.report)


# -- the unsubscribe headers and the trace header as one step ----------------------


_FIELDS = st.sampled_from([
    b"Subject: hi", b"Disposition-Notification-To: n@sender.example",
    b"return-receipt-to:\r\n <n@sender.example>", b"From: news@sender.example", b"List-Unsubscribe: <https://s.example/u>",
    b"list-unsubscribe-post: List-Unsubscribe=One-Click", b"LIST-UNSUBSCRIBE:\r\n <mailto:x@y>",
    b"X-Long: a\r\n\tb", b"To: ann@example.org", b"List-Unsubscribe: x\n folded"])


@settings(max_examples=300)
@given(fields=st.lists(_FIELDS, max_size=5), eol=st.sampled_from([b"\r\n", b"\n"]),
       body=st.binary(max_size=40), bounce=st.booleans(),
       sender=st.sampled_from(["replace", "keep"]), mailto=st.sampled_from(["", "u@example.com"]),
       link=st.sampled_from([URL, None]), flags=st.booleans(),
       policy=st.sampled_from(list(Policy)))
def test_unsubscribe_and_trace_is_the_two_steps(fields: list[bytes], eol: bytes, body: bytes,
                                                bounce: bool, sender: str, mailto: str,
                                                link: str | None, flags: bool,
                                                policy: Policy) -> None:
    """One step gives what ListMailOnly(UnsubscribeHeaders), then TraceHeader give: the
    same bytes, report and (dropped) proofs, for list mail and for the relay's bounces."""
    data = eol.join([*fields, b"", body]) if fields else body
    env = Envelope("Q1", "news@sender.example", ("ann@example.org",), 1.5e9,
                   client_address="192.0.2.7", client_helo="mx.sender.example",
                   bounce_of="Q0" if bounce else None)
    rcpt = Recipient(env, "ann@example.org", policy, data)
    copy = Copy(data, {"footer": {"html": 1}}, crlf=flags, dots=(0,) if flags else None)

    def unsubscribe() -> UnsubscribeHeaders:
        return UnsubscribeHeaders(lambda r: link, mailto=mailto,
                                  sender=sender)  # type: ignore[arg-type]

    old = run_steps((ListMailOnly(unsubscribe()), TraceHeader("relay.example")), copy, rcpt)
    step = UnsubscribeAndTrace(unsubscribe(), TraceHeader("relay.example"))
    new = step(copy, rcpt)
    assert new == old
    assert step(copy, rcpt) == old  # again, with what the steps remembered
