"""The SMTP replies this stage sends, and how a refusal is recorded.

Every 4xx/5xx reply is logged as a ``rejected`` event and counted in
``beacon_proxy_smtp_rejections_total{stage, code}`` by :func:`log_rejection`
(``stage`` is the command: ``CONNECT``, ``MAIL``, ``RCPT``, ``DATA``, ``AUTH``, ...);
the protocol calls it for each refusal it sends, whoever wrote the reply.
"""

from __future__ import annotations

import logging
from typing import Any

from beacon_proxy import metrics
from beacon_proxy.log import event

__all__ = [
    "AUTH_BLOCKED",
    "AUTH_CUT_OFF",
    "AUTH_TEMPFAIL",
    "BARE_CR_LF",
    "HEADER_TOO_BIG",
    "MESSAGE_TOO_BIG",
    "NULL_RECIPIENT",
    "OK_RECIPIENT",
    "OK_SENDER",
    "SHUTTING_DOWN",
    "TEMPFAIL",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_FROM_CLIENT",
    "TOO_MANY_RECIPIENTS",
    "bad_recipient",
    "bad_sender",
    "line_too_long",
    "log_rejection",
    "loggable",
    "nul_character",
    "queued",
    "relay_denied",
    "rewrite_library_reply",
]

OK_SENDER = "250 2.1.0 Ok"
OK_RECIPIENT = "250 2.1.5 Ok"
TEMPFAIL = "451 4.3.0 Temporary failure, please try again later"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure"
# [smtp] auth_failure_limit reached for the client's address: no check at all.
AUTH_BLOCKED = "454 4.7.0 Too many failed authentications from your address, try again later"
# [smtp] auth_max_failures reached on this connection.
AUTH_CUT_OFF = "421 4.7.0 Too many failed authentication attempts, closing connection"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections"
TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many connections from your address"
SHUTTING_DOWN = "421 4.3.2 Service shutting down"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
HEADER_TOO_BIG = "552 5.3.4 Message header size exceeds limit"
# Since bare LFs are read as CRLF (smtpd.data), only a bare CR in the header gets this.
BARE_CR_LF = "554 5.6.0 Bare CR or LF in message header not allowed"
NULL_RECIPIENT = "553 5.1.3 Null recipient address <> not allowed"

# aiosmtpd's own texts for the size limit, in the form we want to answer.
_LIBRARY_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
}


def queued(queue_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {queue_id}"


def relay_denied(recipient: str) -> str:
    return f"554 5.7.1 <{recipient}>: Relay access denied"


def bad_sender(reason: str) -> str:
    code = "553 5.6.7" if reason.startswith("non-ASCII") else "501 5.1.7"
    return f"{code} Bad sender address syntax: {reason}"


def bad_recipient(reason: str) -> str:
    code = "553 5.6.7" if reason.startswith("non-ASCII") else "501 5.1.3"
    return f"{code} Bad recipient address syntax: {reason}"


def line_too_long(line: int, limit: int) -> str:
    """RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1: the next hop may refuse such a line."""
    return (f"554 5.6.0 Line {line} of the message is longer than {limit} octets; "
            "send it quoted-printable or base64")


def nul_character(line: int) -> str:
    """NUL is no text character (RFC 5322 2.3; no BINARYMIME here)."""
    return f"554 5.6.0 NUL character on line {line} of the message not allowed"


def rewrite_library_reply(reply: str) -> str:
    """Replace an aiosmtpd reply text with ours where we have a better one."""
    return _LIBRARY_REWRITES.get(reply, reply)


def loggable(text: str, limit: int = 320) -> str:
    """``text`` made safe for a log field: bounded, and any invalid UTF-8 spelled out.

    >>> loggable("a\\udcffb@example.org")
    'a\\\\udcffb@example.org'
    """
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def log_rejection(stage: str, reply: str, **fields: Any) -> None:
    """Record one refusal: a ``rejected`` event (info) and the rejections counter."""
    code, _, text = reply.partition(" ")
    reason = text
    head, _, tail = text.partition(" ")
    if head[:1].isdigit() and head.count(".") == 2:  # drop the enhanced status code
        reason = tail
    metrics.SMTP_REJECTIONS.labels(stage, code).inc()
    event("rejected", logging.INFO, stage=stage, code=int(code) if code.isdigit() else code,
          reason=fields.pop("reason", None) or reason, **fields)
