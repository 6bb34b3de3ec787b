"""build_dsn: RFC 3464 structure, parsed back with the stdlib, and injection safety."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime

import pytest

from beacon_proxy.deliver import dsn
from beacon_proxy.deliver.courier import Outcome, Result
from beacon_proxy.deliver.dsn import Failure, build_dsn, needs_bounce
from beacon_proxy.spool.envelope import Envelope

MTA = "relay.example.org"
NOW = 1_700_000_300.0
ORIGINAL = (b"From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: Offers\r\n"
            b"Message-ID: <m1@example.org>\r\n\r\nThe body, not to be quoted.\r\n")


def env(sender: str = "ann@example.org", *rcpts: str) -> Envelope:
    return Envelope("0123456789ABCDEF", sender, rcpts or ("bob@example.net",),
                    received_at=1_700_000_000.0)


def fail(recipient: str = "bob@example.net", diagnostic: str = "550 5.1.1 no such user",
         **kw: object) -> Failure:
    args: dict[str, object] = {"action": "failed", "status": "5.1.1",
                               "remote_mta": "127.0.0.1:2600", "last_attempt": NOW - 60} | kw
    return Failure(recipient, diagnostic=diagnostic, **args)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.iter_parts())  # type: ignore[arg-type]


def status_blocks(msg: EmailMessage) -> list[Message]:
    part = parts(msg)[1]
    assert part.get_content_type() == "message/delivery-status"
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def all_header_names(msg: Message) -> Iterator[str]:
    yield from msg.keys()
    payload = msg.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from all_header_names(sub)


def test_structure_and_fields() -> None:
    raw = build_dsn(env(), [fail()], ORIGINAL, reporting_mta=MTA, now=NOW)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    msg = parse(raw)
    assert msg.is_multipart()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert str(msg["From"]) == f"Mail Delivery System <MAILER-DAEMON@{MTA}>"
    assert str(msg["To"]) == "ann@example.org"
    assert str(msg["Subject"]) == "Undelivered Mail Returned to Sender"
    assert str(msg["Auto-Submitted"]) == "auto-replied"
    assert str(msg["MIME-Version"]) == "1.0"
    assert re.fullmatch(rf"<[^<>@\s]+@{re.escape(MTA)}>", str(msg["Message-ID"]))
    assert parsedate_to_datetime(str(msg["Date"])).timestamp() == NOW
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert not msg.defects
    assert not any(p.defects for p in parts(msg))

    text = parts(msg)[0].get_content()
    assert "<bob@example.net>: 550 5.1.1 no such user" in text

    per_message, per_rcpt = status_blocks(msg)
    assert per_message["Reporting-MTA"] == f"dns; {MTA}"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == 1_700_000_000.0
    assert per_message["X-Beacon-Proxy-Queue-ID"] == "0123456789ABCDEF"
    assert dict(per_rcpt.items()) == {
        "Final-Recipient": "rfc822; bob@example.net",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; 127.0.0.1",
        "Diagnostic-Code": "smtp; 550 5.1.1 no such user",
        "Last-Attempt-Date": per_rcpt["Last-Attempt-Date"],
    }
    assert parsedate_to_datetime(per_rcpt["Last-Attempt-Date"]).timestamp() == NOW - 60

    quoted = parts(msg)[2].get_payload(decode=True)
    assert isinstance(quoted, bytes)
    assert quoted == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"


def test_several_recipients_and_delay_warning() -> None:
    failures = [fail("a@example.net", "451 4.4.1 connection refused", action="delayed",
                     status="4.4.1"),
                fail("b@example.net", "delivery time expired", action="delayed",
                     status="4.4.7", remote_mta="", last_attempt=None)]
    msg = parse(build_dsn(env(), failures, ORIGINAL, reporting_mta=MTA, now=NOW))
    assert str(msg["Subject"]) == "Delayed Mail (still being retried)"
    _, a, b = status_blocks(msg)
    assert (a["Action"], a["Status"], a["Diagnostic-Code"]) == (
        "delayed", "4.4.1", "smtp; 451 4.4.1 connection refused")
    assert b["Diagnostic-Code"] == "X-Beacon-Proxy; delivery time expired"
    assert b["Remote-MTA"] is None
    assert b["Last-Attempt-Date"] is None


def test_mixed_failed_and_delayed_is_an_undelivered_report() -> None:
    failures = [fail(), fail("c@example.net", action="delayed", status="4.2.2")]
    msg = parse(build_dsn(env(), failures, ORIGINAL, reporting_mta=MTA, now=NOW))
    assert str(msg["Subject"]) == "Undelivered Mail Returned to Sender"
    assert [b["Action"] for b in status_blocks(msg)[1:]] == ["failed", "delayed"]


def test_invalid_status_is_replaced_by_a_valid_one() -> None:
    failures = [fail(status="bogus\r\nBcc: x"), fail(action="delayed", status="5.1.1")]
    msg = parse(build_dsn(env(), failures, ORIGINAL, reporting_mta=MTA, now=NOW))
    assert [b["Status"] for b in status_blocks(msg)[1:]] == ["5.0.0", "4.0.0"]


@pytest.mark.parametrize("diagnostic", [
    "550 oops\r\nBcc: evil@example.com",
    "550 oops\nBcc: evil@example.com\n\nbody",
    "550 oops\rBcc: evil@example.com",
    "550 oops\x00\x0bBcc: evil@example.com",
    "550 =?UTF-8?Q?=0D=0ABcc:_evil@example.com?=",
])
def test_diagnostic_cannot_inject_headers(diagnostic: str) -> None:
    raw = build_dsn(env(), [fail(diagnostic=diagnostic)], ORIGINAL, reporting_mta=MTA,
                    now=NOW)
    msg = parse(raw)
    assert "Bcc" not in list(all_header_names(msg))
    assert not re.search(rb"\r\nBcc:", raw)
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    per_rcpt = status_blocks(msg)[1]
    assert set(per_rcpt.keys()) == {"Final-Recipient", "Action", "Status", "Remote-MTA",
                                    "Diagnostic-Code", "Last-Attempt-Date"}


def test_envelope_values_cannot_inject_headers() -> None:
    sender = "ann@example.org>\r\nBcc: evil@example.com"
    rcpt = "bob@example.net\r\nBcc: evil@example.com"
    raw = build_dsn(env(sender, rcpt), [fail(rcpt, remote_mta="evil\r\nBcc: x:25")], ORIGINAL,
                    reporting_mta=MTA, now=NOW)
    msg = parse(raw)
    assert "Bcc" not in list(all_header_names(msg))
    assert "\n" not in str(msg["To"])
    assert status_blocks(msg)[1]["Remote-MTA"] is None


def test_reporting_mta_must_be_a_host_name() -> None:
    with pytest.raises(ValueError, match="reporting_mta"):
        build_dsn(env(), [fail()], ORIGINAL, reporting_mta="x\r\nBcc: y", now=NOW)


def test_never_to_the_null_sender() -> None:
    assert not needs_bounce(env(""))
    assert not needs_bounce(env("<>"))
    assert needs_bounce(env())
    with pytest.raises(ValueError, match="null sender"):
        build_dsn(env(""), [fail()], ORIGINAL, reporting_mta=MTA)
    with pytest.raises(ValueError, match="no failures"):
        build_dsn(env(), [], ORIGINAL, reporting_mta=MTA)


def test_non_ascii_recipient_and_headers() -> None:
    original = "Subject: h\u00e9llo\r\nFrom: ann@example.org\r\n\r\nbody".encode()
    raw = build_dsn(env("\u00e4nn@example.org"), [fail("\u00fcser+x@example.net")], original,
                    reporting_mta=MTA, now=NOW)
    msg = parse(raw)
    assert str(msg["To"]) == "\u00e4nn@example.org"
    text, report, headers = parts(msg)
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert "<\u00fcser+x@example.net>" in text.get_content()
    assert report.as_bytes().isascii()
    assert status_blocks(msg)[1]["Final-Recipient"] == (
        "utf-8; \\x{FC}ser\\x{2B}x@example.net")
    assert headers["Content-Transfer-Encoding"] == "8bit"
    assert headers.get_param("charset") == "utf-8"
    assert "Subject: h\u00e9llo".encode() in raw


def test_quoted_headers_are_bounded() -> None:
    original = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"y" * 60) for i in range(3000))
    assert len(original) > 3 * dsn.MAX_HEADERS
    msg = parse(build_dsn(env(), [fail()], original + b"\r\nbody\r\n", reporting_mta=MTA,
                          now=NOW))
    quoted = parts(msg)[2].get_payload(decode=True)
    assert isinstance(quoted, bytes)
    assert 0 < len(quoted) <= dsn.MAX_HEADERS
    assert quoted.endswith(b"\r\n")
    assert original.startswith(quoted)


def test_headers_only_original_and_bare_line_feeds() -> None:
    msg = parse(build_dsn(env(), [fail()], b"Subject: a\nX-Smuggle: b\rTo: c", reporting_mta=MTA,
                          now=NOW))
    quoted = parts(msg)[2].get_payload(decode=True)
    assert quoted == b"Subject: a\r\nX-Smuggle: b\r\n"  # the unterminated line is dropped


def test_boundary_never_occurs_in_content(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["ab" * 12, "cd" * 12])
    monkeypatch.setattr(secrets, "token_hex",
                        lambda n: next(tokens) if n == 12 else "0" * (2 * n))
    original = b"X-Trap: beacon-proxy-dsn-" + b"ab" * 12 + b"\r\n\r\n"
    raw = build_dsn(env(), [fail()], original, reporting_mta=MTA, now=NOW)
    msg = parse(raw)
    assert msg.get_boundary() == "beacon-proxy-dsn-" + "cd" * 12
    assert len(parts(msg)) == 3


def test_long_diagnostic_is_folded_and_unfolds_intact() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    raw = build_dsn(env(), [fail(diagnostic=f"550 5.7.1 {words}")], ORIGINAL, reporting_mta=MTA,
                    now=NOW)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert status_blocks(parse(raw))[1]["Diagnostic-Code"] == f"smtp; 550 5.7.1 {words}"


def test_failure_from_result() -> None:
    result = Result(Outcome.PERMANENT, 550, "550 5.1.1 no such user", "5.1.1", "mx:25")
    assert Failure.from_result("b@example.net", result, last_attempt=NOW) == Failure(
        "b@example.net", "failed", "5.1.1", "550 5.1.1 no such user", "mx:25", NOW)
