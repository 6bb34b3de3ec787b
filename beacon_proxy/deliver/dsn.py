"""Delivery status notifications (RFC 3464 bounces and delay warnings).

:func:`build_dsn` writes a complete ``multipart/report`` message: a text
explanation, a ``message/delivery-status`` part and the original message's
header section as ``text/rfc822-headers``.  Every header is written here from
validated values (never through :mod:`email.generator`, whose folding let
CR/LF through before CPython 3.11.10, CVE-2024-6923): control characters in
anything copied from a remote reply, the envelope or the original message are
replaced by spaces, so no reply can add a header.

The result is 7bit unless the sender's address or the original headers hold
UTF-8: then ``To:`` carries raw UTF-8 (RFC 6532; delivering it needs SMTPUTF8
anyway) and the headers part is declared ``8bit`` (send with BODY=8BITMIME).
Non-ASCII recipients appear as ``utf-8;`` addresses escaped per RFC 6533.

    >>> from beacon_proxy.spool.envelope import Envelope
    >>> env = Envelope("0123456789ABCDEF", "ann@example.org", ("bob@example.net",), 0.0)
    >>> fail = Failure("bob@example.net", "failed", "5.1.1", "550 5.1.1 no such user")
    >>> b"Status: 5.1.1" in build_dsn(env, [fail], b"Subject: hi\\r\\n\\r\\nbody\\r\\n",
    ...                              reporting_mta="relay.example.org", now=0.0)
    True
"""

from __future__ import annotations

import binascii
import re
import secrets
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

from beacon_proxy.deliver.courier import Result
from beacon_proxy.spool.envelope import Envelope

__all__ = ["Failure", "build_dsn", "needs_bounce"]

MAX_HEADERS = 64 * 1024  # bytes of the original header section quoted back
_MAX_DIAGNOSTIC = 900  # characters of a diagnostic kept
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?")
_REMOTE_HOST = re.compile(r"[A-Za-z0-9._:-]{1,255}")
_QUEUE_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_REPLY = re.compile(r"[2-5]\d\d(?:[ -]|$)")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Failure:
    """One recipient to report on.

    ``diagnostic`` is the remote reply (``"550 5.1.1 no such user"``) or our own
    reason (``"delivery time expired"``); ``remote_mta`` is ``Result.remote``.
    """

    recipient: str
    action: Literal["failed", "delayed"]
    status: str  # RFC 3463, e.g. "5.1.1", "4.4.7"
    diagnostic: str
    remote_mta: str = ""
    last_attempt: float | None = None

    @classmethod
    def from_result(cls, recipient: str, result: Result, *,
                    action: Literal["failed", "delayed"] = "failed",
                    last_attempt: float | None = None) -> Failure:
        """The failure a courier's :class:`Result` describes."""
        return cls(recipient, action, result.status, result.reply, result.remote, last_attempt)


def needs_bounce(envelope: Envelope) -> bool:
    """False for the null sender (and senders with nothing left after cleaning)."""
    return _clean_address(envelope.sender) != ""


def build_dsn(envelope: Envelope, failures: Sequence[Failure], original: bytes, *,
              reporting_mta: str, now: float | None = None) -> bytes:
    """A complete DSN message (CRLF line endings) to ``envelope.sender``.

    Raises ``ValueError`` for the null sender, no failures, an unknown action
    or a ``reporting_mta`` that is not a host name.
    """
    sender = _clean_address(envelope.sender)
    if not sender:
        raise ValueError("never bounce to the null sender")
    if not failures:
        raise ValueError("no failures to report")
    if not _HOSTNAME.fullmatch(reporting_mta):
        raise ValueError(f"reporting_mta is not a host name: {reporting_mta!r}")
    for f in failures:
        if f.action not in ("failed", "delayed"):
            raise ValueError(f"unknown DSN action {f.action!r}")
    when = time.time() if now is None else now
    queue_id = envelope.queue_id if _QUEUE_ID.fullmatch(envelope.queue_id) else ""
    delayed_only = all(f.action == "delayed" for f in failures)

    parts = [_text_part(reporting_mta, failures), _status_part(reporting_mta, queue_id,
                                                               envelope, failures)]
    headers = _header_section(original)
    if headers:
        parts.append(_headers_part(headers))
    boundary = _boundary(parts)

    subject = ("Delayed Mail (still being retried)" if delayed_only
               else "Undelivered Mail Returned to Sender")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(when)}",
        f"Message-ID: <{queue_id or 'dsn'}.{secrets.token_hex(8)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    out = [line.encode("utf-8") for line in head]
    for part_headers, body in parts:
        out.append(b"--" + boundary.encode())
        out.extend(part_headers)
        out.append(b"")
        out.append(body.removesuffix(b"\r\n"))
        out.append(b"")
    out.append(b"--" + boundary.encode() + b"--")
    return b"\r\n".join(out) + b"\r\n"


# -- the three parts ----------------------------------------------------------

_Part = tuple[list[bytes], bytes]


def _text_part(mta: str, failures: Sequence[Failure]) -> _Part:
    failed = [f for f in failures if f.action == "failed"]
    delayed = [f for f in failures if f.action == "delayed"]
    lines = [f"This is the mail system at host {mta}.", ""]
    if failed:
        lines += ["I'm sorry to have to inform you that your message could not be",
                  "delivered to one or more recipients. The headers of your message",
                  "are attached below.", "",
                  "For further assistance, please send mail to postmaster and include",
                  "this problem report.", ""]
        lines += _listing(failed)
    if delayed:
        lines += ["Your message could not be delivered yet to the recipients below.",
                  "The mail system will keep trying; you do not need to resend it.", ""]
        lines += _listing(delayed)
    text = "\r\n".join(lines) + "\r\n"
    if text.isascii():
        return ([b"Content-Description: Notification",
                 b"Content-Type: text/plain; charset=us-ascii",
                 b"Content-Transfer-Encoding: 7bit"], text.encode("ascii"))
    qp = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return ([b"Content-Description: Notification",
             b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: quoted-printable"], qp)


def _listing(failures: Sequence[Failure]) -> list[str]:
    lines: list[str] = []
    for f in failures:
        entry = f"<{_clean_address(f.recipient)}>: {_clean_text(f.diagnostic)}"
        lines += [*textwrap.wrap(entry, 76, subsequent_indent="    "), ""]
    return lines


def _status_part(mta: str, queue_id: str, envelope: Envelope,
                 failures: Sequence[Failure]) -> _Part:
    blocks = [[_field("Reporting-MTA", f"dns; {mta}")]]
    if queue_id:
        blocks[0].append(_field("X-Beacon-Proxy-Queue-ID", queue_id))
    blocks[0].append(_field("Arrival-Date", _date(envelope.received_at)))
    for f in failures:
        block = [_field("Final-Recipient", _recipient_field(f.recipient)),
                 _field("Action", f.action),
                 _field("Status", _valid_status(f.action, f.status))]
        host = _remote_host(f.remote_mta)
        if host:
            block.append(_field("Remote-MTA", f"dns; {host}"))
        diagnostic = _escape_non_ascii(_clean_text(f.diagnostic))
        if diagnostic:
            kind = "smtp" if _SMTP_REPLY.match(diagnostic) else "X-Beacon-Proxy"
            block.append(_field("Diagnostic-Code", f"{kind}; {diagnostic}"))
        if f.last_attempt is not None:
            block.append(_field("Last-Attempt-Date", _date(f.last_attempt)))
        blocks.append(block)
    body = "\r\n\r\n".join("\r\n".join(b) for b in blocks) + "\r\n"
    return ([b"Content-Description: Delivery report",
             b"Content-Type: message/delivery-status"], body.encode("ascii"))


def _headers_part(headers: bytes) -> _Part:
    ctype, cte = b"text/rfc822-headers", b"7bit"
    if not headers.isascii():
        cte = b"8bit"
        try:
            headers.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            ctype += b"; charset=utf-8"
    return ([b"Content-Description: Undelivered Message Headers",
             b"Content-Type: " + ctype, b"Content-Transfer-Encoding: " + cte], headers)


def _header_section(original: bytes) -> bytes:
    """The original header section, CRLF-terminated, at most :data:`MAX_HEADERS` bytes."""
    head = _LINE_ENDS.sub(b"\r\n", original[:MAX_HEADERS + 4]).replace(b"\0", b"")
    if head.startswith(b"\r\n"):
        return b""
    end = head.find(b"\r\n\r\n")
    if 0 <= end <= MAX_HEADERS - 2:
        return head[:end + 2]
    head = head[:MAX_HEADERS]
    return head[:head.rfind(b"\r\n") + 2] if b"\r\n" in head else b""


# -- values -------------------------------------------------------------------

def _boundary(parts: Sequence[_Part]) -> str:
    while True:
        boundary = f"beacon-proxy-dsn-{secrets.token_hex(12)}"
        needle = boundary.encode()
        if not any(needle in body or any(needle in h for h in hs) for hs, body in parts):
            return boundary


def _clean_text(text: str) -> str:
    """One line: controls and runs of white space become one space; bounded."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _SPACES.sub(" ", _CONTROLS.sub(" ", text)).strip()
    return text[:_MAX_DIAGNOSTIC]


def _clean_address(address: str) -> str:
    """An envelope address fit for a header: no controls, no angle brackets."""
    text = address.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROLS.sub("", text).replace("<", "").replace(">", "").strip()


def _escape_non_ascii(text: str) -> str:
    r"""Non-ASCII as RFC 6533 ``\x{HEX}`` (a 7bit delivery-status part)."""
    return "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in text)


def _recipient_field(address: str) -> str:
    r"""``rfc822; addr``, or ``utf-8; \x{FC}ser@...`` (RFC 6533 xtext) when not ASCII."""
    addr = _clean_address(address)
    if addr.isascii():
        return f"rfc822; {addr}"
    xtext = "".join(c if "!" <= c <= "~" and c not in "+=\\" else f"\\x{{{ord(c):X}}}"
                    for c in addr)
    return f"utf-8; {xtext}"


def _remote_host(remote: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port`` when it looks like a host name or IP."""
    if remote.startswith("["):
        host = remote[1:].partition("]")[0]
    else:
        name, sep, port = remote.rpartition(":")
        host = name if sep and port.isdigit() and ":" not in name else remote
    if host == "maildir" or not _REMOTE_HOST.fullmatch(host):
        return ""
    return host


def _valid_status(action: str, status: str) -> str:
    """``status`` when it is an RFC 3463 code of the class ``action`` allows."""
    if action == "delayed":
        return status if _STATUS.fullmatch(status) and status[0] == "4" else "4.0.0"
    return status if _STATUS.fullmatch(status) and status[0] in "45" else "5.0.0"


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _field(name: str, value: str, width: int = 78) -> str:
    """``Name: value`` folded at spaces (the value holds no controls or runs of spaces)."""
    words = f"{name}: {value}".split(" ")
    lines = [words[0]]
    for word in words[1:]:
        if word and len(lines[-1]) + 1 + len(word) > width:
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    return "\r\n".join(lines)
